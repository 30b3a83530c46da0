/**
 * The deflate worker behind `GzipPool` (compress.ts): compresses off the main
 * thread, so compression never stalls WebSocket handling (and with it the
 * receive timestamps), and appends the crash journal's pieces to their batch
 * files (file_appends.ts), so those writes do not either.
 *
 * Protocol, one reply per request, in order:
 *   in:  { id, level, final, chunks: Uint8Array[] }
 *   out: { id, body: Uint8Array, input? }  (buffers transferred, not copied)
 *    or: { id, error: string, input? }
 *   in:  { id, appends: { paths, at, truncate, last, keep, parts, lengths }, chunks }
 *   out: { id, appended: { crcs, failed: [{ index, name, message }] }, input? }
 * `input` is the request's buffer when it sent one chunk, returned for reuse.
 * The body is the raw deflate (RFC 1951) of the chunks' concatenation, byte
 * for byte what `deflateRawHere` (body.ts) gives: ending on a full flush, or
 * with a final block when `final`. The pool sends one chunk (its own joined
 * copy), so the concatenation is then a no-op. Deflating reuses one zlib
 * context per level (deflate_engine.ts). An append's bytes are the next
 * `lengths` bytes of the chunks' concatenation, one part each; it is
 * answered only once written, with each part's CRC-32.
 *
 * Import only its types elsewhere: loading it sets the global `onmessage`.
 * Must stay loadable as a module Worker under the `collector` permission set
 * and be listed in `deno compile --include` (deno.json), since a Worker's
 * module is not part of the static import graph.
 */

import { concatBytes } from "../archive/bytes.ts";
import { deflateRawReusing } from "./deflate_engine.ts";
import { crcsOf, SyncAppender } from "./file_appends.ts";

export interface DeflateRequest {
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

/**
 * Appends to files (file_appends.ts `FileAppend`), packed flat: one string
 * and a few typed arrays clone in a fraction of the time 1,500 small objects
 * take (a flush of 1,500 batches: ~2.5 ms, then garbage on both threads).
 */
export interface AppendRequest {
  readonly id: number;
  readonly appends: {
    /** The files' paths, joined by NUL (which no path holds). */
    readonly paths: string;
    /** Per file: where its bytes go, and whether to cut the file there first (1). */
    readonly at: Float64Array;
    readonly truncate: Uint8Array;
    /** Per file: 1 when nothing more will be appended to it (a kept file is closed). */
    readonly last: Uint8Array;
    /** Files the worker may keep open between appends (the same in every request). */
    readonly keep: number;
    /** Per file: how many parts; then every part's length, files in turn. */
    readonly parts: Uint32Array;
    readonly lengths: Uint32Array;
  };
  /** The parts back to back. */
  readonly chunks: readonly Uint8Array[];
}

export type GzipRequest = DeflateRequest | AppendRequest;

/** What became of the appends: each part's CRC-32 (files in turn), and the files that failed. */
export interface AppendOutcome {
  /** Every part's CRC-32; a failed file's parts are 0. */
  readonly crcs: Uint32Array;
  /** The failed files: their index and the error, as its name and message. */
  readonly failed: ReadonlyArray<
    { readonly index: number; readonly name: string; readonly message: string }
  >;
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
  | { readonly id: number; readonly appended: AppendOutcome; readonly input?: ArrayBuffer }
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

function compress(request: DeflateRequest): { body: Uint8Array<ArrayBuffer>; lengths?: number[] } {
  const { chunks, level, final, lengths: inputs, finals } = request;
  const joined = concatBytes(chunks);
  if (!inputs) return { body: ownBuffer(deflateRawReusing(joined, level, final)) };
  const outputs: Uint8Array[] = [];
  let at = 0;
  inputs.forEach((length, i) => {
    outputs.push(deflateRawReusing(joined.subarray(at, at + length), level, finals?.[i] ?? false));
    at += length;
  });
  return { body: ownBuffer(concatBytes(outputs)), lengths: outputs.map((o) => o.length) };
}

/**
 * Files kept open between appends, up to the pool's `keepFiles`: a flush
 * writes the same files as the last one, and opening one cost about a third
 * of this thread's time at 1,500 streams. Files of batches whose last bytes
 * the main thread wrote are closed after 10 s without a write, looked for
 * once a second while any is kept (a quiet recorder appends on the main
 * thread and may not write here again).
 */
let files: SyncAppender | undefined;
const IDLE_FILE_MS = 10_000;
let sweeper: ReturnType<typeof setInterval> | undefined;

function closeIdleLater(): void {
  if (sweeper !== undefined || !files || files.openFiles === 0) return;
  sweeper = setInterval(() => {
    files?.closeIdle();
    if (files && files.openFiles > 0) return;
    clearInterval(sweeper);
    sweeper = undefined;
  }, 1_000);
}

/** Each append in turn; one failing does not stop the others (they are other files). */
function append(request: AppendRequest): AppendOutcome {
  const { paths, at, truncate, last, parts, lengths, keep } = request.appends;
  files ??= new SyncAppender({ keep, whenFull: "pass", idleMs: IDLE_FILE_MS });
  const joined = concatBytes(request.chunks);
  const crcs = new Uint32Array(lengths.length);
  const failed: Array<{ index: number; name: string; message: string }> = [];
  let part = 0;
  let from = 0;
  paths.split("\0").forEach((path, i) => {
    const [first, start] = [part, from];
    const own: Uint8Array[] = [];
    for (const end = part + parts[i]; part < end; part++) {
      own.push(joined.subarray(from, from += lengths[part]));
    }
    try {
      // One write for the file's parts; the CRCs are still per part.
      files!.write({
        path,
        at: at[i],
        truncate: truncate[i] === 1,
        last: last[i] === 1,
        parts: [joined.subarray(start, from)],
      });
      crcs.set(crcsOf(own), first);
    } catch (error) {
      const { name, message } = error instanceof Error ? error : new Error(String(error));
      failed.push({ index: i, name, message });
    }
  });
  closeIdleLater();
  return { crcs, failed };
}

const scope = globalThis as unknown as WorkerScope;

scope.onmessage = (event) => {
  const { id, chunks } = event.data;
  // A buffer left here would wait for this isolate's next full GC (its JS heap
  // is tiny, so that is rare): send the input back to be filled again instead.
  const only = chunks.length === 1 ? chunks[0].buffer : undefined;
  const input = only instanceof ArrayBuffer ? only : undefined;
  const back: Transferable[] = input ? [input] : [];
  if ("appends" in event.data) {
    scope.postMessage({ id, appended: append(event.data), input }, back);
    return;
  }
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
