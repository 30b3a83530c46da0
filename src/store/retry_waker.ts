/**
 * When retries waiting out their backoff should go at once: the uploader's
 * rule (store/uploader.ts). A success after a run of failures, of any
 * batches, means the sink works again (a disk with room, S3 back): a backlog
 * should not wait up to the backoff's cap.
 *
 * - A key that keeps failing while others succeed (one prefix throttled, say)
 *   makes no run of failures, so it keeps its backoff instead of retrying at
 *   every success of another batch.
 * - At most one wake per interval: several keys failing together among
 *   successes (a throttled prefix, large objects on a nearly full disk) would
 *   otherwise make such a run themselves after every wake. The interval
 *   doubles with each wake (up to `maxEveryMs`) while some retry keeps
 *   sleeping, like a backoff of its own, and starts again once none is.
 * - A wake due sooner comes when its time is up, so a recovery right after a
 *   false one still ends the backoffs. `close` cancels it.
 */

import { delay } from "../delay.ts";

/** Failed attempts in a row (any batches) after which a success means the sink is back. */
const DOWN_AFTER_FAILURES = 3;

export class RetryWaker {
  readonly #everyMs: number;
  readonly #maxEveryMs: number;
  /** Aborted (and replaced) by a wake: ends every sleeping retry's wait. */
  #wake = new AbortController();
  /** Failed attempts since the last success. */
  #failedInARow = 0;
  /** When the retries were last woken (performance.now). */
  #wokenAt = -Infinity;
  /** The least time between wakes now. */
  #interval: number;
  /** A wake is waiting for its interval. */
  #due = false;
  /** Retries waiting out their backoff. */
  #sleeping = 0;
  /** Aborted by `close`: no wake is deferred after it. */
  readonly #closed = new AbortController();

  constructor(options: { everyMs: number; maxEveryMs: number }) {
    this.#everyMs = options.everyMs;
    this.#maxEveryMs = options.maxEveryMs;
    this.#interval = options.everyMs;
  }

  /** An attempt failed. */
  failed(): void {
    this.#failedInARow++;
  }

  /** An attempt succeeded: after a run of failures, the sleeping retries are woken. */
  succeeded(): void {
    const wasDown = this.#failedInARow >= DOWN_AFTER_FAILURES;
    this.#failedInARow = 0;
    if (this.#sleeping === 0) this.#interval = this.#everyMs;
    if (!wasDown || this.#due || this.#closed.signal.aborted) return;
    const wait = this.#wokenAt + this.#interval - performance.now();
    if (wait <= 0) return this.#wakeNow();
    this.#due = true;
    delay(wait, this.#closed.signal).then(() => {
      this.#due = false;
      this.#wakeNow();
    });
  }

  /** A retry's backoff: `ms`, or less when `stop` aborts or the retries are woken. */
  async sleep(ms: number, stop: AbortSignal): Promise<void> {
    this.#sleeping++;
    try {
      await delay(ms, AbortSignal.any([stop, this.#wake.signal]));
    } finally {
      this.#sleeping--;
    }
  }

  /** Cancels a deferred wake (it must not hold the process open); later successes wake nothing. */
  close(): void {
    this.#closed.abort();
  }

  /** Ends every sleeping retry's wait now; the next wake waits twice as long. */
  #wakeNow(): void {
    this.#wokenAt = performance.now();
    this.#interval = Math.min(2 * this.#interval, this.#maxEveryMs);
    this.#wake.abort();
    this.#wake = new AbortController();
  }
}
