/**
 * Stores sealed batches through a sink, off the receive path: `submit` only
 * queues; compression and puts run with bounded concurrency, and a failed
 * put is retried with exponential backoff and full jitter. Whether an error
 * is worth retrying is decided by the sink's `isRetryable`, not here.
 */

import { getLogger } from "@logtape/logtape";
import { ExponentialBackoff, fullJitterGenerator, handleWhen, retry } from "cockatiel";
import type { SealedBatch } from "../batch/batcher.ts";
import { gzipLines } from "../batch/encode.ts";
import type { Sink } from "./sink.ts";

const log = getLogger(["l2", "store"]);

export interface UploaderOptions {
  readonly sink: Sink;
  readonly concurrency: number;
  readonly gzipLevel: number;
  /** Errors for which another attempt may succeed; default: all. */
  readonly isRetryable?: (error: unknown) => boolean;
  readonly retryInitialMs?: number;
  readonly retryMaxMs?: number;
  /** Called after a batch was confirmed stored. */
  readonly onStored?: (batch: SealedBatch, bytes: number) => void;
  /** Called after every failed attempt. */
  readonly onFailedAttempt?: (batch: SealedBatch, error: unknown) => void;
}

export class Uploader {
  readonly #options: UploaderOptions;
  readonly #queue: SealedBatch[] = [];
  readonly #abort = new AbortController();
  readonly #idleWaiters = new Set<() => void>();
  readonly #unstored: SealedBatch[] = [];
  #active = 0;

  constructor(options: UploaderOptions) {
    this.#options = options;
  }

  /** Queues a batch; never waits. */
  submit(batch: SealedBatch): void {
    this.#queue.push(batch);
    this.#pump();
  }

  /** Batches queued or being stored. */
  get pending(): number {
    return this.#queue.length + this.#active;
  }

  /**
   * Waits until everything submitted is stored, or until `signal` aborts;
   * then in-flight retries are cancelled and the batches that were not
   * stored are returned, so the caller can keep them elsewhere.
   */
  async flush(signal: AbortSignal): Promise<SealedBatch[]> {
    if (this.pending > 0) {
      await new Promise<void>((resolve) => {
        const done = () => {
          this.#idleWaiters.delete(done);
          signal.removeEventListener("abort", done);
          resolve();
        };
        this.#idleWaiters.add(done);
        signal.addEventListener("abort", done, { once: true });
      });
    }
    if (this.pending === 0) return this.#unstored.splice(0);
    this.#abort.abort();
    const left = this.#queue.splice(0);
    // Let cancelled puts settle so their batches land in #unstored.
    while (this.#active > 0) await new Promise((r) => setTimeout(r, 10));
    return [...left, ...this.#unstored.splice(0)];
  }

  #pump(): void {
    while (this.#active < this.#options.concurrency && this.#queue.length > 0) {
      const batch = this.#queue.shift()!;
      this.#active++;
      this.#store(batch).finally(() => {
        this.#active--;
        this.#pump();
        if (this.pending === 0) { for (const resolve of [...this.#idleWaiters]) resolve(); }
      });
    }
  }

  async #store(batch: SealedBatch): Promise<void> {
    const { sink, gzipLevel } = this.#options;
    const policy = retry(handleWhen(this.#options.isRetryable ?? (() => true)), {
      maxAttempts: Infinity,
      backoff: new ExponentialBackoff({
        generator: fullJitterGenerator,
        initialDelay: this.#options.retryInitialMs ?? 500,
        maxDelay: this.#options.retryMaxMs ?? 30_000,
      }),
    });
    try {
      const body = await gzipLines(batch.lines, gzipLevel);
      await policy.execute(async ({ signal }) => {
        try {
          await sink.put(batch.key, body, batch.meta, signal);
        } catch (error) {
          this.#options.onFailedAttempt?.(batch, error);
          log.warn("Store attempt failed for {key}: {error}", { key: batch.key, error });
          throw error;
        }
      }, this.#abort.signal);
      this.#options.onStored?.(batch, body.length);
      log.debug("Stored {key}", {
        key: batch.key,
        sink: sink.kind,
        messages: batch.meta.messages,
        bytes: body.length,
      });
    } catch (error) {
      this.#unstored.push(batch);
      if (!this.#abort.signal.aborted) {
        log.error("Gave up storing {key}: {error}", { key: batch.key, error });
      }
    }
  }
}
