/**
 * The deflate worker behind `GzipPool` (compress.ts): compresses off the main
 * thread, so compression never stalls WebSocket handling (and with it the
 * receive timestamps).
 *
 * Protocol, one reply per request, in order:
 *   in:  { id, level, final, chunks: Uint8Array[] }
 *   out: { id, body: Uint8Array, input? }  (buffers transferred, not copied)
 *    or: { id, error: string, input? }
 * `input` is the request's buffer when it sent one chunk, returned for reuse.
 * The body is the raw deflate (RFC 1951) of the chunks' concatenation, byte
 * for byte what `deflateRawHere` (body.ts) gives: ending on a full flush, or
 * with a final block when `final`. The pool sends one chunk (its own joined
 * copy), so the concatenation is then a no-op.
 *
 * Import only its types elsewhere: loading it sets the global `onmessage`.
 * Must stay loadable as a module Worker under the `collector` permission set
 * and be listed in `deno compile --include` (deno.json), since a Worker's
 * module is not part of the static import graph.
 */

import { deflateRawHere } from "./body.ts";
import { concatBytes } from "../archive/bytes.ts";

export interface GzipRequest {
  readonly id: number;
  readonly level: number;
  /** The last piece of a stream: its last block is marked final. */
  readonly final: boolean;
  readonly chunks: readonly Uint8Array[];
  /**
   * Several inputs in one request: the chunks' concatenation is these many
   * bytes of each input in turn, each deflated on its own (`finals[i]`); the
   * reply's body is their outputs back to back, `lengths` long each.
   */
  readonly lengths?: readonly number[];
  readonly finals?: readonly boolean[];
}

export type GzipReply =
  | {
    readonly id: number;
    readonly body: Uint8Array<ArrayBuffer>;
    /** A request of several inputs: the length of each one's output in `body`. */
    readonly lengths?: readonly number[];
    /** The request's only chunk's buffer, handed back for reuse. */
    readonly input?: ArrayBuffer;
  }
  | { readonly id: number; readonly error: string; readonly input?: ArrayBuffer };

/** The part of the worker global scope used here (the default lib types `self` as a window). */
interface WorkerScope {
  onmessage: ((event: MessageEvent<GzipRequest>) => void) | null;
  postMessage(message: GzipReply, transfer: Transferable[]): void;
}

/**
 * The result as a view over a buffer of its own, safe to transfer. Small
 * Buffers may be slices of Node's shared allocation pool; transferring that
 * pool would detach it under later allocations, so those are copied.
 */
function ownBuffer(result: Uint8Array): Uint8Array<ArrayBuffer> {
  const buffer = result.buffer;
  if (
    buffer instanceof ArrayBuffer && result.byteOffset === 0 &&
    result.byteLength === buffer.byteLength
  ) {
    return new Uint8Array(buffer);
  }
  return new Uint8Array(result);
}

function compress(request: GzipRequest): { body: Uint8Array<ArrayBuffer>; lengths?: number[] } {
  const { chunks, level, final, lengths: inputs, finals } = request;
  if (!inputs) return { body: ownBuffer(deflateRawHere(chunks, level, final)) };
  const joined = concatBytes(chunks);
  const outputs: Uint8Array[] = [];
  let at = 0;
  inputs.forEach((length, i) => {
    outputs.push(deflateRawHere([joined.subarray(at, at + length)], level, finals?.[i] ?? false));
    at += length;
  });
  return { body: ownBuffer(concatBytes(outputs)), lengths: outputs.map((o) => o.length) };
}

const scope = globalThis as unknown as WorkerScope;

scope.onmessage = (event) => {
  const { id, chunks } = event.data;
  // A buffer left here would wait for this isolate's next full GC (its JS heap
  // is tiny, so that is rare): send the input back to be filled again instead.
  const only = chunks.length === 1 ? chunks[0].buffer : undefined;
  const input = only instanceof ArrayBuffer ? only : undefined;
  const back: Transferable[] = input ? [input] : [];
  let result: ReturnType<typeof compress>;
  try {
    result = compress(event.data);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    scope.postMessage({ id, error: message, input }, back);
    return;
  }
  const { body, lengths } = result;
  scope.postMessage({ id, body, lengths, input }, [body.buffer, ...back]);
};
