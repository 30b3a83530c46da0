/**
 * A sliding-window limit on connection attempts, shared by every connection
 * of the process: Binance allows 300 new WebSocket connections per 5 minutes
 * per IP, and a reconnect storm must not get the IP banned. Time injected.
 */

import { delay } from "../delay.ts";

export class AttemptLimiter {
  readonly #max: number;
  readonly #windowMs: number;
  readonly #now: () => number;
  readonly #attempts: number[] = [];

  constructor(options: { max: number; windowMs: number; now?: () => number }) {
    this.#max = options.max;
    this.#windowMs = options.windowMs;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Ms to wait before the next attempt is allowed (0 = now). */
  waitMs(): number {
    const now = this.#now();
    while (this.#attempts.length > 0 && this.#attempts[0] <= now - this.#windowMs) {
      this.#attempts.shift();
    }
    if (this.#attempts.length < this.#max) return 0;
    return this.#attempts[0] + this.#windowMs - now;
  }

  /** Waits for a free slot (or until `signal` aborts) and takes it. */
  async take(signal?: AbortSignal): Promise<void> {
    for (let wait = this.waitMs(); wait > 0 && !signal?.aborted; wait = this.waitMs()) {
      await delay(wait, signal);
    }
    this.#attempts.push(this.#now());
  }
}
