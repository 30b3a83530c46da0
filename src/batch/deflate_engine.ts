/**
 * Raw deflate that keeps one zlib context per level and resets it between
 * inputs, for the gzip worker (gzip_worker.ts), which deflates a piece of
 * every open batch every 250 ms: 6,000 small pieces a second at 1,500
 * streams. `deflateRawSync` sets up a new context for each (zlib allocates
 * and clears ~300 KB of window and hash tables at level 5): measured on a
 * 3 KB piece, 78 µs fresh against 42 µs reset.
 *
 * Promise: the output is raw deflate of `input` alone, ending on the same
 * flush as `deflateRawSync(input, { level, finishFlush })`, and inflates to
 * it on its own. It is not always that call's bytes: `deflateReset` clears
 * the hash chains but not the window, and at levels 2 and above the match
 * search may read the previous input's bytes past the end of this one and
 * choose differently in the last few bytes (never a match into them). The
 * zlib calls are the ones node:zlib makes: into 16 KiB of output at a time
 * (its default chunk size), again with the same flush while the output
 * fills.
 *
 * node:zlib has no public call for this (`_processChunk` closes its context
 * after one input), so it drives the context's handle as node:zlib itself
 * does (`writeSync`, `reset`: Deno 2.9.6's polyfill, like Node's). Where
 * the handle lacks them, each input gets `deflateRawSync` as before.
 */

import zlib from "node:zlib";
import { concatBytes } from "../archive/bytes.ts";

/** Node's default zlib chunk size: what `deflateRawSync` deflates into per call. */
const OUTPUT_CHUNK = 16 * 1024;

/** The handle of a node:zlib stream (internal; the same shape in Node and Deno). */
interface ZlibHandle {
  writeSync(
    flush: number,
    input: Uint8Array,
    inOffset: number,
    inLength: number,
    output: Uint8Array,
    outOffset: number,
    outLength: number,
  ): void;
  reset(): void;
  close(): void;
  onerror: ((message: string, errno: number) => void) | undefined;
}

interface Context {
  /** The node:zlib stream that owns the handle, kept so nothing of it is collected. */
  readonly stream: unknown;
  readonly handle: ZlibHandle;
  /** After each `writeSync`: output space left, input left. */
  readonly state: Uint32Array;
  /** An error zlib reported during the last call. */
  error?: Error;
}

const output = new Uint8Array(OUTPUT_CHUNK);
const contexts = new Map<number, Context | null>();

/** A context for `level`, or null where node:zlib's internals are not as expected. */
function contextFor(level: number): Context | null {
  let context = contexts.get(level);
  if (context !== undefined) return context;
  const stream = zlib.createDeflateRaw({ level }) as unknown as {
    _handle?: Partial<ZlibHandle>;
    _writeState?: unknown;
  };
  const { _handle: handle, _writeState: state } = stream;
  const usable = typeof handle?.writeSync === "function" && typeof handle.reset === "function" &&
    state instanceof Uint32Array;
  context = usable ? { stream, handle: handle as ZlibHandle, state } : null;
  if (context) {
    const own = context;
    own.handle.onerror = (message, errno) => {
      own.error = new Error(`zlib: ${message} (${errno})`);
    };
  }
  contexts.set(level, context);
  return context;
}

/**
 * `deflateRawSync(input, { level, finishFlush: final ? Z_FINISH : Z_FULL_FLUSH })`,
 * byte for byte, on a reused context.
 */
export function deflateRawReusing(input: Uint8Array, level: number, final: boolean): Uint8Array {
  const flush = final ? zlib.constants.Z_FINISH : zlib.constants.Z_FULL_FLUSH;
  const context = contextFor(level);
  if (!context) return new Uint8Array(zlib.deflateRawSync(input, { level, finishFlush: flush }));
  const parts: Uint8Array[] = [];
  let at = 0;
  try {
    for (;;) {
      context.handle.writeSync(flush, input, at, input.length - at, output, 0, OUTPUT_CHUNK);
      if (context.error) throw context.error;
      const [outLeft, inLeft] = context.state;
      parts.push(output.slice(0, OUTPUT_CHUNK - outLeft));
      at = input.length - inLeft;
      // Output space left over: zlib is done with this flush.
      if (outLeft !== 0) break;
    }
    context.handle.reset();
  } catch (error) {
    // The context's state is unknown now: the next input gets a new one.
    contexts.delete(level);
    try {
      context.handle.close();
    } catch {
      // Closing a broken context may fail too; it is dropped either way.
    }
    throw error;
  }
  return concatBytes(parts);
}
