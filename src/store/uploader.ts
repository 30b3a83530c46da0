/**
 * Stores sealed batches through a sink, off the receive path. `submit` only
 * queues; compression and puts run with bounded concurrency. A failed put is
 * retried a few times with exponential backoff and full jitter; when the
 * attempts run out, when the error is permanent, or when the in-memory queue
 * is full, the batch goes to the on-disk spool instead (if there is one).
 * Whether an error is worth retrying is the caller's pure `isRetryable`.
 *
 * Memory: batches waiting here are bounded by `maxQueueBytes`. With a spool,
 * each counts at its text, and batches beyond the bound skip the queue and
 * are spooled: while the sink is down, batches move on to the bounded spool
 * at the pace they come, instead of piling up in the queue (and their files
 * in the crash journal) because they hold little memory. Without one, each
 * counts at what it held when it sealed (`SealedBatch.heldBytes`: text not
 * yet compressed plus compressed pieces not yet in the crash journal's
 * file), as the open batches' bound counted it (see `borrowable`). Without a spool,
 * the queue may also use what `borrowable` lends; a batch beyond that is
 * dropped, counted and logged.
 */

import { getLogger } from "@logtape/logtape";
import { ExponentialBackoff, fullJitterGenerator, type IBackoff } from "cockatiel";
import type { ObjectFile, SealedBatch } from "../batch/batcher.ts";
import { SpillLostError } from "../batch/body.ts";
import { RetryWaker } from "./retry_waker.ts";
import { putIfAbsent, type Sink } from "./sink.ts";
import type { Spool } from "./spool.ts";

const log = getLogger(["l2", "store"]);

/** `existed`: a recovered batch whose key was already stored; the copy was not written. */
export type SettledHow = "stored" | "spooled" | "dropped" | "existed";

export interface UploaderOptions {
  readonly sink: Sink;
  readonly concurrency: number;
  /** Where batches go when the sink cannot take them; without one, retries go on. */
  readonly spool?: Spool;
  readonly maxQueueBytes?: number;
  /**
   * Without a spool: bytes the queue may hold beyond `maxQueueBytes`, asked
   * for each batch. The caller lends the unused part of the open-batch
   * budget, so batches that seal together (every stream at its batch age,
   * or all at shutdown) move from one budget to the other instead of being
   * dropped: their text was in memory already.
   */
  readonly borrowable?: () => number;
  /** Attempts per batch before it is spooled (only with a spool). */
  readonly maxAttempts?: number;
  /** Errors for which another attempt may succeed; default: all. */
  readonly isRetryable?: (error: unknown) => boolean;
  readonly retryInitialMs?: number;
  readonly retryMaxMs?: number;
  /**
   * Called once per batch when it is stored, spooled or dropped; `reason`
   * says why a dropped one was ("spool full", "disk full", "spool write
   * failed", "upload queue full").
   */
  readonly onSettled?: (
    batch: SealedBatch,
    how: SettledHow,
    bytes: number,
    reason?: string,
  ) => void;
  /** At most one early end of the retries' backoff per this many ms at first (see `RetryWaker`); default 5000. */
  readonly wakeEveryMs?: number;
  /** How long `flush` waits for cancelled puts to return, ms; default 5000. */
  readonly cancelGraceMs?: number;
  /** Called after every failed attempt. */
  readonly onFailedAttempt?: (batch: SealedBatch, error: unknown) => void;
  /** Called when the queue's byte count changes. */
  readonly onQueueBytes?: (bytes: number) => void;
  /** Called when writing a batch to the spool failed (a disk error, not a full spool). */
  readonly onSpoolWriteFailed?: (error: unknown) => void;
}

export class Uploader {
  readonly #options: UploaderOptions;
  readonly #queue: SealedBatch[] = [];
  readonly #abort = new AbortController();
  readonly #idleWaiters = new Set<() => void>();
  readonly #unstored: SealedBatch[] = [];
  /** Batches being stored or spooled (their count bounds the puts in flight). */
  readonly #busy = new Set<SealedBatch>();
  #queueBytes = 0;
  /** The last failed put's error, undefined once a put succeeds. */
  #lastPutError: unknown;
  #overflowChain: Promise<void> = Promise.resolve();
  #overflowed = 0;
  #overflowLoggedAt = -Infinity;
  /** What each queued batch was counted at in `#queueBytes`. */
  readonly #costs = new WeakMap<SealedBatch, number>();
  readonly #backoff: ExponentialBackoff<unknown>;
  /** Ends the retries' backoff when the sink works again (retry_waker.ts). */
  readonly #waker: RetryWaker;

  constructor(options: UploaderOptions) {
    this.#options = options;
    this.#waker = new RetryWaker({
      everyMs: options.wakeEveryMs ?? 5000,
      maxEveryMs: options.retryMaxMs ?? 30_000,
    });
    this.#backoff = new ExponentialBackoff({
      generator: fullJitterGenerator,
      initialDelay: options.retryInitialMs ?? 500,
      maxDelay: options.retryMaxMs ?? 30_000,
    });
  }

  /**
   * Queues a batch; never waits. `keep`: never drop it for want of room
   * without a spool, and do not count it against the queue's bound — for
   * batches recovered from the crash journal, which exist nowhere else and
   * whose size the previous run's bounds limited. (Counted, a large journal
   * would shrink the open batches' budget to a line each while it uploads.)
   */
  submit(batch: SealedBatch, options: { keep?: boolean } = {}): void {
    const max = this.#options.maxQueueBytes ?? Infinity;
    // Without a spool, counted as the budget of open batches counted it (see store/budget.ts).
    const cost = options.keep ? 0 : this.#options.spool ? batch.textBytes : batch.heldBytes;
    if (this.#options.spool && this.#queueBytes + cost > max && this.#queueBytes > 0) {
      this.#overflowed++;
      const now = Date.now();
      if (now - this.#overflowLoggedAt >= 10_000) {
        log.warn("Upload queue full ({queueBytes} bytes): {count} batch(es) sent to the spool", {
          queueBytes: this.#queueBytes,
          count: this.#overflowed,
        });
        this.#overflowed = 0;
        this.#overflowLoggedAt = now;
      }
      // One at a time: a burst of overflow must not start a gzip per batch at once.
      const write = this.#overflowChain.then(() =>
        this.#spoolBatch(batch, undefined, "upload queue full")
      );
      this.#overflowChain = write;
      this.#track(batch, write);
      return;
    }
    const room = max + (this.#options.borrowable?.() ?? 0);
    if (
      !this.#options.spool && !options.keep && this.#queueBytes + cost > room &&
      this.#queueBytes > 0
    ) {
      // No spool (local sink) and the sink has not kept up for a whole queue:
      // memory must stay bounded, so the batch is dropped, counted and reported.
      log.error(
        "Upload queue full ({queueBytes} bytes) and no spool: dropped {key} ({messages} messages)",
        {
          queueBytes: this.#queueBytes,
          key: batch.key,
          messages: batch.meta.messages,
        },
      );
      batch.body.release();
      // A full disk is the usual reason the local sink falls this far behind.
      const reason = isDiskFull(this.#lastPutError) ? "disk full" : "upload queue full";
      this.#options.onSettled?.(batch, "dropped", 0, reason);
      return;
    }
    this.#queue.push(batch);
    this.#costs.set(batch, cost);
    this.#setQueueBytes(this.#queueBytes + cost);
    this.#pump();
  }

  /** Queued bytes beyond `maxQueueBytes`: what the queue borrowed (see `borrowable`). */
  get borrowedBytes(): number {
    return Math.max(0, this.#queueBytes - (this.#options.maxQueueBytes ?? Infinity));
  }

  /** Batches queued, being stored or being spooled. */
  get pending(): number {
    return this.#queue.length + this.#busy.size;
  }

  /**
   * Waits until everything submitted is settled, or until `signal` aborts;
   * then retries are cancelled, what was not stored is spooled (when there
   * is a spool) and the batches that are still nowhere are returned, with
   * those whose put has not returned within `graceMs` more (default
   * `cancelGraceMs`).
   */
  async flush(signal: AbortSignal, graceMs?: number): Promise<SealedBatch[]> {
    await this.idle(signal);
    this.#waker.close(); // a deferred wake must not hold the process (or a test) open
    if (this.pending > 0) {
      this.#abort.abort();
      const left = this.#queue.splice(0);
      this.#setQueueBytes(0);
      for (const batch of left) this.#costs.delete(batch);
      for (const batch of left) this.#track(batch, this.#spoolBatch(batch, undefined, "shutdown"));
      // Cancelled puts settle quickly; their batches are spooled the same way.
      await this.idle(AbortSignal.timeout(graceMs ?? this.#options.cancelGraceMs ?? 5000));
    }
    // A put or spool write that has not returned even now is not stored either.
    return [...this.#unstored.splice(0), ...this.#busy];
  }

  /** Resolves when everything submitted is settled, or when `signal` aborts. */
  idle(signal: AbortSignal): Promise<void> {
    if (this.pending === 0 || signal.aborted) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => {
        this.#idleWaiters.delete(done);
        signal.removeEventListener("abort", done);
        resolve();
      };
      this.#idleWaiters.add(done);
      signal.addEventListener("abort", done, { once: true });
    });
  }

  #pump(): void {
    while (this.#busy.size < this.#options.concurrency && this.#queue.length > 0) {
      const batch = this.#queue.shift()!;
      this.#setQueueBytes(this.#queueBytes - (this.#costs.get(batch) ?? 0));
      this.#costs.delete(batch);
      this.#track(batch, this.#store(batch));
    }
  }

  /** Counts a batch's task as active until it settles, then wakes waiters. */
  #track(batch: SealedBatch, task: Promise<void>): void {
    this.#busy.add(batch);
    task.finally(() => {
      this.#busy.delete(batch);
      this.#pump();
      if (this.pending === 0) { for (const resolve of [...this.#idleWaiters]) resolve(); }
    });
  }

  async #store(batch: SealedBatch): Promise<void> {
    const { sink } = this.#options;
    let body: Uint8Array | undefined;
    try {
      // Never upload before the journal holds the seal: recovery relies on it.
      const file = await batch.durable;
      if (file && await this.#storeFile(batch, file)) return;
      body = await this.#finish(batch);
      if (!body) return;
      const stored = await this.#put(batch, body);
      this.#sinkWorks();
      if (!this.#settleStored(batch, stored, body.length)) return;
      log.debug("Stored {key}", {
        key: batch.key,
        sink: sink.kind,
        messages: batch.meta.messages,
        bytes: body.length,
      });
    } catch (error) {
      await this.#spoolBatch(batch, body, this.#abort.signal.aborted ? "shutdown" : String(error));
    }
  }

  /**
   * Puts the batch's bytes, retrying with backoff (exponential, full
   * jitter): true when stored, false when a recovered batch's key exists.
   * Throws once the attempts run out (with a spool), the error is not worth
   * retrying, or the uploader is stopped. A retry waiting out its backoff
   * goes at once when another put succeeds after a run of failures: the sink
   * works again (a disk with room, S3 back), and a backlog should not wait up
   * to `retryMaxMs` (see `RetryWaker`).
   */
  async #put(batch: SealedBatch, bytes: Uint8Array): Promise<boolean> {
    const { sink, spool } = this.#options;
    const maxAttempts = spool ? Math.max(1, this.#options.maxAttempts ?? 3) : Infinity;
    const isRetryable = this.#options.isRetryable ?? (() => true);
    const stop = this.#abort.signal;
    let backoff: IBackoff<unknown> | undefined;
    for (let attempt = 1;; attempt++) {
      try {
        stop.throwIfAborted();
        // A recovered batch never replaces an object: the one stored may be whole.
        if (batch.recovered) {
          return await putIfAbsent(sink, { key: batch.key, body: bytes, meta: batch.meta }, stop);
        }
        await sink.put(batch.key, bytes, batch.meta, stop);
        return true;
      } catch (error) {
        if (stop.aborted) throw error;
        this.#lastPutError = error;
        this.#waker.failed();
        this.#options.onFailedAttempt?.(batch, error);
        log.warn("Store attempt failed for {key}: {error}", { key: batch.key, error });
        if (attempt >= maxAttempts || !isRetryable(error)) throw error;
      }
      backoff = backoff ? backoff.next(undefined) : this.#backoff.next();
      await this.#waker.sleep(backoff.duration, stop);
    }
  }

  /** A put succeeded: retries waiting out their backoff may go now (see `RetryWaker`). */
  #sinkWorks(): void {
    this.#lastPutError = undefined;
    this.#waker.succeeded();
  }

  /**
   * Stores the batch from the journal's file of its finished object, where
   * the sink can (`Sink.putFile`: the local sink links it, so its bytes are
   * written once). True when settled so; false to store it from its bytes.
   */
  async #storeFile(batch: SealedBatch, file: ObjectFile): Promise<boolean> {
    const { sink } = this.#options;
    if (!sink.putFile) return false;
    let stored: boolean;
    try {
      stored = await sink.putFile(batch.key, file.path, batch.meta, batch.recovered === true);
    } catch (error) {
      log.debug("Cannot store {key} from its journal file ({error}); storing its bytes", {
        key: batch.key,
        error,
      });
      return false;
    }
    batch.body.release();
    this.#sinkWorks();
    this.#settleStored(batch, stored, file.bytes);
    return true;
  }

  /**
   * Settles a batch a sink took (`stored`) or refused because its key
   * exists (a recovered copy, never put over the stored one). True when stored.
   */
  #settleStored(batch: SealedBatch, stored: boolean, bytes: number): boolean {
    if (stored) {
      this.#options.onSettled?.(batch, "stored", bytes);
      return true;
    }
    log.info("{key} is already stored; its copy recovered from the crash journal is dropped", {
      key: batch.key,
      messages: batch.meta.messages,
    });
    this.#options.onSettled?.(batch, "existed", 0);
    return false;
  }

  /** Writes a batch to the spool; without a spool (or room in it) it is reported. */
  async #spoolBatch(batch: SealedBatch, body: Uint8Array | undefined, why: string): Promise<void> {
    const { spool } = this.#options;
    if (!spool) {
      this.#unstored.push(batch);
      return;
    }
    try {
      body ??= await this.#finish(batch);
      if (!body) return;
      if (
        await spool.write({
          key: batch.key,
          body,
          meta: batch.meta,
          ifAbsent: batch.recovered,
          stream: batch.stream,
        })
      ) {
        log.info("Spooled {key} ({why})", { key: batch.key, why });
        this.#options.onSettled?.(batch, "spooled", body.length);
        return;
      }
      log.error("Spool full ({bytes} of {max} bytes): dropped {key} with {messages} messages", {
        bytes: spool.bytes,
        max: spool.maxBytes,
        key: batch.key,
        messages: batch.meta.messages,
      });
      this.#options.onSettled?.(batch, "dropped", 0, "spool full");
      return;
    } catch (error) {
      this.#options.onSpoolWriteFailed?.(error);
      log.error("Cannot spool {key}: {error}; dropped {messages} messages", {
        key: batch.key,
        error,
        messages: batch.meta.messages,
      });
      const reason = isDiskFull(error) ? "disk full" : "spool write failed";
      this.#options.onSettled?.(batch, "dropped", 0, reason);
    }
  }

  /**
   * The batch's gzip bytes. A batch that cannot be compressed (even the
   * main-thread fallback failed) is not dropped: it stays unsettled, so the
   * crash journal still holds it and the next start recovers it. But when
   * the journal's file of its pieces is gone (someone removed it, or the
   * whole journal directory), nothing will: the batch is dropped now, so its
   * stream gets a `dropped` line saying how many messages and when.
   */
  async #finish(batch: SealedBatch): Promise<Uint8Array | undefined> {
    try {
      return await batch.body.finish();
    } catch (error) {
      if (error instanceof SpillLostError) {
        log.error(
          "Cannot finish {key}: its crash journal file is gone ({error}); dropped {messages} messages",
          { key: batch.key, error, messages: batch.meta.messages },
        );
        this.#options.onSettled?.(batch, "dropped", 0, "journal file lost");
        return undefined;
      }
      log.error(
        "Cannot compress {key}: {error}; it stays in the crash journal for the next start",
        {
          key: batch.key,
          error,
        },
      );
      this.#unstored.push(batch);
      return undefined;
    }
  }

  #setQueueBytes(bytes: number): void {
    this.#queueBytes = bytes;
    this.#options.onQueueBytes?.(bytes);
  }
}

/** ENOSPC, however the runtime words it. */
export function isDiskFull(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  return code === "ENOSPC" || /ENOSPC|No space left on device/i.test(error.message);
}
