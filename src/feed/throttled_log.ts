/**
 * A warning that may come thousands of times a second (malformed frames from
 * a misbehaving peer) logged at most once per interval, with how many
 * occurrences it stands for and the latest reason.
 */

import { getLogger } from "@logtape/logtape";

const log = getLogger(["l2", "recorder"]);

export class ThrottledWarning {
  readonly #now: () => number;
  readonly #intervalMs: number;
  #since = 0;
  #loggedAt = -Infinity;

  /** `now`: monotonic ms. */
  constructor(now: () => number, intervalMs: number) {
    this.#now = now;
    this.#intervalMs = intervalMs;
  }

  /** One malformed frame kept as an event line, for `reason`. */
  malformed(reason: string): void {
    this.#since++;
    const now = this.#now();
    if (now - this.#loggedAt < this.#intervalMs) return;
    log.warn("Kept {count} malformed frame(s) as event lines; latest: {reason}", {
      count: this.#since,
      reason,
    });
    this.#since = 0;
    this.#loggedAt = now;
  }
}
