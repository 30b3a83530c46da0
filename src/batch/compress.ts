/**
 * Compression off the main thread. node:zlib's async functions still deflate
 * on the main thread in Deno (about half of its time at 20,000 msg/s; a 10 MB
 * batch at level 5 blocks it 30-70 ms), which delays WebSocket handling and
 * so the receive timestamps stamped on every message. `GzipPool` hands the
 * work to module Workers (gzip_worker.ts) instead; batch bodies (body.ts)
 * send it their pieces through `workerDeflater`.
 *
 * Contract:
 * - `deflateRaw(chunks, final)` copies the chunks synchronously, before it
 *   returns, so the caller may reuse them at once (they are pooled). The copy is
 *   one fresh buffer, transferred to the worker; the caller's buffers are
 *   never transferred. Cheaper than a structured clone of the chunks, whose
 *   serializer buffer grows by reallocation: 10 MB in 16 KB chunks costs the
 *   main thread ~1 ms this way, ~5-7 ms cloned (and a clone would copy each
 *   view's whole backing buffer, or share a SharedArrayBuffer, not copy it).
 * - The result is the raw deflate of the chunks' concatenation, the same
 *   bytes as `deflateRawHere(chunks, level, final)` (body.ts).
 * - Calls go to the worker with the fewest calls in flight (ties round-robin);
 *   with several threads, results may resolve out of call order.
 * - A worker that dies (error event) rejects its pending calls with a
 *   `GzipPoolError`; the next call given to its slot starts a new worker.
 *   Replacing lazily means a worker that cannot even load (e.g. missing from
 *   a compiled binary) fails each call once instead of respawning in a loop.
 * - Live workers keep the process alive: `close()` (or `using`) terminates
 *   them, rejects pending calls and makes later calls reject.
 * - Workers inherit the program's permissions (`-P=collector`); `deno compile`
 *   must `--include` the worker module (deno.json tasks), since a Worker's
 *   module is not in the static import graph.
 */

import { getLogger } from "@logtape/logtape";
import { concatBytes } from "../archive/bytes.ts";
import { type Deflater, deflateRawHere } from "./body.ts";
import { deflateRawReusing } from "./deflate_engine.ts";
import {
  type AppendResult,
  errorFrom,
  type FileAppend,
  type FileAppender,
  localAppender,
  SyncAppender,
} from "./file_appends.ts";
import type { AppendOutcome, GzipReply, GzipRequest } from "./gzip_worker.ts";

const log = getLogger(["l2", "gzip"]);

const WORKER_URL = new URL("./gzip_worker.ts", import.meta.url);

/**
 * Work this small stays on the calling thread (`workerDeflater`,
 * `workerAppender`): a round trip to a worker wakes two threads and costs
 * each 0.2-0.4 ms, while deflating 32 KiB at level 5 takes about 0.5 ms and
 * a small append some tens of µs. A quiet recorder (10 streams × 10/s: 2-3
 * KB a stream every 250 ms) then never wakes the worker at all.
 */
export const HERE_BYTES = 64 * 1024;
/** Appends to at most this many files stay on the calling thread (with `HERE_BYTES`). */
export const HERE_FILES = 16;

export interface GzipPoolOptions {
  /** Worker threads (default 1). */
  readonly threads?: number;
  /** zlib level, -1 (zlib's default) to 9. */
  readonly level: number;
  /** The worker module; tests substitute failing ones. */
  readonly workerUrl?: URL | string;
  /**
   * Files each worker may keep open between the crash journal's appends
   * (default 0: each is opened, written and closed every time); see
   * `keptFilesBudget` (file_appends.ts).
   */
  readonly keepFiles?: number;
}

/** A call rejected because the pool was closed or its worker failed. */
export class GzipPoolError extends Error {
  override name = "GzipPoolError";
}

/** A worker's successful reply (an error reply rejects the call). */
type Answer = Exclude<GzipReply, { error: string }>;

interface Call {
  resolve(answer: Answer): void;
  reject(error: Error): void;
}

interface Slot {
  /** Undefined after the worker died, until the next call starts one. */
  worker?: Worker;
  readonly calls: Map<number, Call>;
}

/** Input buffers kept for reuse: enough for one call in flight per thread and one more. */
const SPARES_PER_THREAD = 2;
const MIN_INPUT_BYTES = 64 * 1024;

export class GzipPool implements Disposable {
  readonly level: number;
  readonly threads: number;
  readonly #url: URL | string;
  /** Files each worker may keep open (`keepFiles` shared out). */
  readonly #keepPerWorker: number;
  readonly #slots: Slot[] = [];
  #nextId = 1;
  /** Where the round-robin tie-break starts next. */
  #turn = 0;
  #closed = false;
  /** Input buffers the workers handed back, smallest first. */
  #spares: ArrayBuffer[] = [];

  constructor(options: GzipPoolOptions) {
    const { level, threads = 1, workerUrl = WORKER_URL, keepFiles = 0 } = options;
    if (!Number.isInteger(level) || level < -1 || level > 9) {
      throw new RangeError(`gzip level must be an integer from -1 to 9, got ${level}`);
    }
    if (!Number.isInteger(threads) || threads < 1) {
      throw new RangeError(`gzip threads must be a positive integer, got ${threads}`);
    }
    this.level = level;
    this.threads = threads;
    this.#keepPerWorker = Math.max(0, Math.floor(keepFiles / threads));
    this.#url = workerUrl;
    // Started now so that the first batch does not wait for a worker to load.
    for (let i = 0; i < threads; i++) {
      const slot: Slot = { calls: new Map() };
      this.#slots.push(slot);
      this.#spawn(slot);
    }
  }

  /** Calls in flight, all workers. */
  get pending(): number {
    let n = 0;
    for (const slot of this.#slots) n += slot.calls.size;
    return n;
  }

  /**
   * Raw deflate of the concatenation of `chunks` (see `Deflater`). The
   * chunks are copied before this returns; the caller may overwrite them
   * immediately.
   */
  deflateRaw(chunks: readonly Uint8Array[], final: boolean): Promise<Uint8Array<ArrayBuffer>> {
    if (this.#closed) return Promise.reject(new GzipPoolError("gzip pool is closed"));
    // The caller's chunks are copied here and are theirs again on return; only the copy moves.
    const input = concatBytes(chunks, (bytes) => this.#takeSpare(bytes));
    return this.#call(
      input,
      (id) => ({ id, level: this.level, final, chunks: [input] }),
      (answer) => {
        if (!("body" in answer)) throw unexpected();
        return answer.body;
      },
    );
  }

  /**
   * Several `deflateRaw` calls as one message to one worker (a flush of the
   * crash journal cuts a piece of every open batch at once: 1,500 calls
   * would cost 1,500 round trips). Each input is deflated on its own; the
   * results are in call order. Copies the chunks before it returns, as
   * `deflateRaw` does.
   */
  deflateRawMany(
    calls: ReadonlyArray<{ chunks: readonly Uint8Array[]; final: boolean }>,
  ): Promise<Uint8Array<ArrayBuffer>[]> {
    if (this.#closed) return Promise.reject(new GzipPoolError("gzip pool is closed"));
    const lengths = calls.map((c) => c.chunks.reduce((n, chunk) => n + chunk.byteLength, 0));
    const input = concatBytes(calls.flatMap((c) => c.chunks), (bytes) => this.#takeSpare(bytes));
    const finals = calls.map((c) => c.final);
    const request = (id: number): GzipRequest => ({
      id,
      level: this.level,
      final: false,
      chunks: [input],
      lengths,
      finals,
    });
    return this.#call(input, request, (answer) => {
      const outputs = "body" in answer ? answer.lengths : undefined;
      if (!("body" in answer) || !outputs || outputs.length !== calls.length) {
        throw new GzipPoolError("gzip worker answered a batch without its lengths");
      }
      let at = 0;
      // Copies: a piece may outlive the others by minutes, and a view would keep them all.
      return outputs.map((length) => answer.body.slice(at, at += length));
    });
  }

  /**
   * Appends to files on a worker (file_appends.ts), all in one message;
   * resolves once every one is written or failed, one result each. Copies
   * the parts before it returns. Rejects (`GzipPoolError`) only when the
   * pool is closed or the worker died: some bytes may have been written then.
   */
  appendFiles(appends: readonly FileAppend[]): Promise<AppendResult[]> {
    if (this.#closed) return Promise.reject(new GzipPoolError("gzip pool is closed"));
    if (appends.length === 0) return Promise.resolve([]);
    const parts = appends.flatMap((a) => a.parts);
    const input = concatBytes(parts, (bytes) => this.#takeSpare(bytes));
    const request = (id: number): GzipRequest => ({
      id,
      chunks: [input],
      appends: {
        paths: appends.map((a) => a.path).join("\0"),
        at: Float64Array.from(appends, (a) => a.at),
        truncate: Uint8Array.from(appends, (a) => a.truncate ? 1 : 0),
        last: Uint8Array.from(appends, (a) => a.last ? 1 : 0),
        keep: this.#keepPerWorker,
        parts: Uint32Array.from(appends, (a) => a.parts.length),
        lengths: Uint32Array.from(parts, (part) => part.length),
      },
    });
    return this.#call(input, request, (answer) => {
      const outcome = "appended" in answer ? answer.appended : undefined;
      if (!outcome || outcome.crcs.length !== parts.length) throw unexpected();
      return resultsOf(appends, outcome);
    });
  }

  /**
   * Posts a request (its input, already copied, is transferred) to the
   * worker with the fewest calls in flight, starting it if needed; the call
   * settles with what `read` makes of the answer, or rejects with what it
   * throws.
   */
  #call<T>(
    input: Uint8Array<ArrayBuffer>,
    request: (id: number) => GzipRequest,
    read: (answer: Answer) => T,
  ): Promise<T> {
    const slot = this.#pick();
    const worker = slot.worker ?? this.#spawn(slot);
    const id = this.#nextId++;
    worker.postMessage(request(id), [input.buffer]);
    const { promise, resolve, reject } = Promise.withResolvers<T>();
    slot.calls.set(id, {
      resolve: (answer) => {
        try {
          resolve(read(answer));
        } catch (error) {
          reject(error instanceof Error ? error : new GzipPoolError(String(error)));
        }
      },
      reject,
    });
    return promise;
  }

  /** A buffer of at least `bytes` for a call's input: a returned one, or a new one. */
  #takeSpare(bytes: number): ArrayBuffer {
    const i = this.#spares.findIndex((b) => b.byteLength >= bytes);
    if (i >= 0) return this.#spares.splice(i, 1)[0];
    // Powers of two, so a buffer fits the next batches of about the same size.
    return new ArrayBuffer(Math.max(MIN_INPUT_BYTES, 2 ** Math.ceil(Math.log2(bytes))));
  }

  /** Keeps a returned input buffer, the largest ones when there are too many. */
  #keepSpare(buffer: ArrayBuffer): void {
    this.#spares.push(buffer);
    this.#spares.sort((a, b) => b.byteLength - a.byteLength);
    this.#spares.length = Math.min(this.#spares.length, SPARES_PER_THREAD * this.threads);
    this.#spares.reverse(); // smallest first: `#takeSpare` picks the smallest that fits
  }

  /** Terminates the workers; pending and later calls reject. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const error = new GzipPoolError("gzip pool closed before the call completed");
    for (const slot of this.#slots) {
      slot.worker?.terminate();
      slot.worker = undefined;
      for (const call of slot.calls.values()) call.reject(error);
      slot.calls.clear();
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** The slot with the fewest calls in flight; ties go round-robin. */
  #pick(): Slot {
    const n = this.#slots.length;
    let best = this.#slots[this.#turn];
    for (let i = 1; i < n; i++) {
      const slot = this.#slots[(this.#turn + i) % n];
      if (slot.calls.size < best.calls.size) best = slot;
    }
    this.#turn = (this.#turn + 1) % n;
    return best;
  }

  #spawn(slot: Slot): Worker {
    const worker = new Worker(this.#url, { type: "module" });
    worker.onmessage = (event: MessageEvent<GzipReply>) => {
      if (slot.worker !== worker) return;
      const reply = event.data;
      if (reply.input && !this.#closed) this.#keepSpare(reply.input);
      const call = slot.calls.get(reply.id);
      if (!call) return;
      slot.calls.delete(reply.id);
      if ("error" in reply) {
        call.reject(new GzipPoolError(`gzip failed in the worker: ${reply.error}`));
      } else call.resolve(reply);
    };
    worker.onerror = (event: ErrorEvent) => {
      // Handled here: unhandled, a worker's error would take the whole process down.
      event.preventDefault();
      this.#fail(slot, worker, `gzip worker died: ${event.message}`);
    };
    worker.onmessageerror = () => {
      this.#fail(slot, worker, "gzip worker sent a message that could not be deserialized");
    };
    slot.worker = worker;
    return worker;
  }

  #fail(slot: Slot, worker: Worker, message: string): void {
    if (slot.worker !== worker) return;
    worker.terminate();
    slot.worker = undefined;
    log.error("{message}; {pending} pending calls rejected, the next call starts a new worker", {
      message,
      pending: slot.calls.size,
    });
    const error = new GzipPoolError(message);
    for (const call of slot.calls.values()) call.reject(error);
    slot.calls.clear();
  }
}

/** The worker's packed outcome as one result per append. */
function resultsOf(appends: readonly FileAppend[], outcome: AppendOutcome): AppendResult[] {
  const errors = new Map(outcome.failed.map((f) => [f.index, errorFrom(f)]));
  let part = 0;
  return appends.map((append, i) => {
    const crcs = outcome.crcs.subarray(part, part += append.parts.length);
    const error = errors.get(i);
    return error ? { error } : { crcs };
  });
}

/** A reply that does not answer the call it names: the worker and the pool disagree. */
function unexpected(): GzipPoolError {
  return new GzipPoolError("gzip worker answered a call with a reply of another kind");
}

/**
 * A `FileAppender` that writes on `pool`'s worker, and on the calling thread
 * when the pool fails (closed, or the worker died or cannot load: then the
 * files are cut back first, as the worker may have written part of the
 * bytes). After a failure the pool is left alone for `retryAfterMs`, as
 * `workerDeflater` does.
 */
export function workerAppender(
  pool: GzipPool,
  options: { retryAfterMs?: number; now?: () => number; hereBytes?: number } = {},
): FileAppender {
  const { retryAfterMs = 10_000, now = () => performance.now(), hereBytes = HERE_BYTES } = options;
  const here = localAppender();
  const small = new SyncAppender({ keep: HERE_FILES });
  let failedAt = -Infinity;
  const cutBack = (appends: readonly FileAppend[]) => {
    small.close();
    return here.append(appends.map((a) => ({ ...a, truncate: true })));
  };
  return {
    close: () => small.close(),
    append: (appends) => {
      if (now() - failedAt < retryAfterMs) return cutBack(appends);
      if (appends.length <= HERE_FILES && bytesOfAppends(appends) <= hereBytes) {
        return small.append(appends);
      }
      for (const append of appends) if (append.last) small.release(append.path);
      let onWorker: Promise<AppendResult[]>;
      try {
        onWorker = pool.appendFiles(appends);
      } catch (error) {
        // Thrown before any call was made (a copy that could not be allocated,
        // a worker that could not start): the same fallback as a rejection.
        onWorker = Promise.reject(error);
      }
      return onWorker.catch((error: unknown) => {
        log.warn(
          "Appending the crash journal's pieces on the main thread for {seconds} s: {error}",
          {
            seconds: retryAfterMs / 1000,
            error,
          },
        );
        failedAt = now();
        return cutBack(appends);
      });
    },
  };
}

/**
 * A `Deflater` that uses `pool`, and deflates on the calling thread when a
 * call fails (a worker died, could not load, or the pool was closed): losing
 * a compressor never costs a batch. The caller's chunks are intact then,
 * since `Deflater` callers keep them until the promise settles. After a
 * failure the pool is left alone for `retryAfterMs`, so a worker that cannot
 * load (a binary built without it) is not started again for every piece.
 *
 * Calls made in one turn of the event loop go to the pool together, as one
 * message of up to `groupBytes` of input (a crash-journal flush cuts a piece
 * of every open batch at once: 1,500 quiet streams would otherwise cost
 * 1,500 round trips to the worker every 250 ms).
 *
 * Calls of one turn that hold at most `hereBytes` (default `HERE_BYTES`) in
 * all are deflated at once on the calling thread, on a reused context
 * (deflate_engine.ts): the same bytes, without a round trip.
 *
 * At most `maxInFlight` messages are given to the pool at once; the rest wait
 * in order, holding only references to their chunks. Streams that started
 * together at the same rate reach a piece's size together (1,500 of them at
 * start-up): sent at once, each would cost a copy of its text in flight.
 */
export function workerDeflater(
  pool: GzipPool,
  options: {
    maxInFlight?: number;
    retryAfterMs?: number;
    groupBytes?: number;
    hereBytes?: number;
    now?: () => number;
  } = {},
): Deflater {
  const {
    maxInFlight = 2 * pool.threads,
    groupBytes = 4 * 1024 * 1024,
    hereBytes = HERE_BYTES,
  } = options;
  const compress = fallbackCompressor(pool, options);
  let inFlight = 0;
  const waiting: Array<() => void> = [];
  let gathered: DeflateCall[] = [];
  const run = async (group: DeflateCall[]) => {
    // A finished message hands its slot straight to the next waiting one.
    if (inFlight < maxInFlight) inFlight++;
    else await new Promise<void>((resolve) => waiting.push(resolve));
    try {
      const bodies = await compress(group);
      group.forEach((c, i) => c.resolve(bodies[i]));
    } catch (error) {
      for (const c of group) c.reject(error);
    } finally {
      const next = waiting.shift();
      if (next) next();
      else inFlight--;
    }
  };
  const send = () => {
    const calls = gathered;
    gathered = [];
    if (calls.reduce((n, call) => n + bytesOf(call.chunks), 0) <= hereBytes) {
      for (const call of calls) deflateHere(call, pool.level);
      return;
    }
    for (const group of groupsOf(calls, groupBytes)) run(group);
  };
  return {
    level: pool.level,
    deflateRaw(chunks, final) {
      const { promise, resolve, reject } = Promise.withResolvers<Uint8Array>();
      if (gathered.length === 0) queueMicrotask(send);
      gathered.push({ chunks, final, resolve, reject });
      return promise;
    },
  };
}

interface DeflateCall {
  readonly chunks: readonly Uint8Array[];
  readonly final: boolean;
  resolve(body: Uint8Array): void;
  reject(error: unknown): void;
}

/** One call deflated on this thread, settled before this returns. */
function deflateHere(call: DeflateCall, level: number): void {
  try {
    call.resolve(deflateRawReusing(concatBytes(call.chunks), level, call.final));
  } catch (error) {
    call.reject(error);
  }
}

function bytesOf(chunks: readonly Uint8Array[]): number {
  return chunks.reduce((n, chunk) => n + chunk.byteLength, 0);
}

function bytesOfAppends(appends: readonly FileAppend[]): number {
  return appends.reduce((n, append) => n + bytesOf(append.parts), 0);
}

/** `calls` in order, in groups of at most `bytes` of input (a larger call alone). */
function groupsOf(calls: DeflateCall[], bytes: number): DeflateCall[][] {
  const groups: DeflateCall[][] = [];
  let size = Infinity;
  for (const call of calls) {
    const length = bytesOf(call.chunks);
    if (size + length > bytes) {
      groups.push([]);
      size = 0;
    }
    groups[groups.length - 1].push(call);
    size += length;
  }
  return groups;
}

/**
 * Compresses a group of calls on the pool (one message), or on this thread
 * while the pool failed within `retryAfterMs`.
 */
function fallbackCompressor(
  pool: GzipPool,
  options: { retryAfterMs?: number; now?: () => number },
): (group: readonly DeflateCall[]) => Promise<Uint8Array[]> {
  const { retryAfterMs = 10_000, now = () => performance.now() } = options;
  let failedAt = -Infinity;
  const here = (group: readonly DeflateCall[]) =>
    group.map((c) => deflateRawHere(c.chunks, pool.level, c.final));
  return async (group) => {
    if (now() - failedAt < retryAfterMs) return here(group);
    try {
      if (group.length === 1) return [await pool.deflateRaw(group[0].chunks, group[0].final)];
      return await pool.deflateRawMany(group);
    } catch (error) {
      // Also a synchronous throw (e.g. no memory for the copy) ends up here.
      if (now() - failedAt >= retryAfterMs) {
        log.warn("Compressing on the main thread for {seconds} s: {error}", {
          seconds: retryAfterMs / 1000,
          error,
        });
      }
      failedAt = now();
      return here(group);
    }
  };
}
