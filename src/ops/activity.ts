/**
 * What the status page shows beyond the current metrics, kept in memory by
 * the process: messages/s over the last hour (one point per `sampleMs`),
 * each stream's recent rate, and the latest gaps and disconnects. Pure
 * state: time is passed in, nothing here reads a clock.
 */

export type ActivityKind = "gap" | "disconnect" | "connect-failed";

export interface ActivityEvent {
  /** Wall-clock ms. */
  readonly at: number;
  readonly kind: ActivityKind;
  /** A stream name for a gap, `conn N` for a connection. */
  readonly subject: string;
  readonly detail: string;
}

export interface RatePoint {
  /** Wall-clock ms at the end of the interval. */
  readonly at: number;
  /** Messages per second over the interval ending at `at`. */
  readonly perSecond: number;
}

export interface ActivityOptions {
  /** Minimum ms between two chart points (default 10 s). */
  readonly sampleMs?: number;
  /** How far back the chart reaches, ms (default one hour). */
  readonly spanMs?: number;
  /** Events kept (default 30). */
  readonly maxEvents?: number;
  /** Per-stream rates are averaged over at least this long, ms (default one minute). */
  readonly streamWindowMs?: number;
}

interface Sample {
  readonly at: number;
  readonly total: number;
  readonly perStream: ReadonlyMap<string, number>;
}

export class Activity {
  readonly #sampleMs: number;
  readonly #spanMs: number;
  readonly #maxEvents: number;
  readonly #streamWindowMs: number;
  readonly #points: RatePoint[] = [];
  readonly #events: ActivityEvent[] = [];
  /** Samples covering the stream window, oldest first; the last is the latest. */
  readonly #recent: Sample[] = [];

  constructor(options: ActivityOptions = {}) {
    this.#sampleMs = options.sampleMs ?? 10_000;
    this.#spanMs = options.spanMs ?? 3_600_000;
    this.#maxEvents = options.maxEvents ?? 30;
    this.#streamWindowMs = options.streamWindowMs ?? 60_000;
  }

  /** Records a gap or a disconnect; the oldest falls off beyond `maxEvents`. */
  event(event: ActivityEvent): void {
    this.#events.push(event);
    if (this.#events.length > this.#maxEvents) this.#events.shift();
  }

  /** The kept events, newest first. */
  events(): readonly ActivityEvent[] {
    return [...this.#events].reverse();
  }

  /**
   * Offers the message counters (totals since start, per stream) at `now`.
   * Taken as a chart point only when `sampleMs` passed since the last one,
   * so callers may offer as often as they like.
   */
  sample(now: number, perStream: ReadonlyMap<string, number>): void {
    const last = this.#recent[this.#recent.length - 1];
    if (last && now - last.at < this.#sampleMs) return;
    let total = 0;
    for (const n of perStream.values()) total += n;
    if (last && now > last.at) {
      const perSecond = Math.max(0, total - last.total) / ((now - last.at) / 1000);
      this.#points.push({ at: now, perSecond });
      while (this.#points.length > 0 && this.#points[0].at <= now - this.#spanMs) {
        this.#points.shift();
      }
    }
    this.#recent.push({ at: now, total, perStream: new Map(perStream) });
    // Keep the newest sample at least a stream window old, and none older.
    while (this.#recent.length > 2 && this.#recent[1].at <= now - this.#streamWindowMs) {
      this.#recent.shift();
    }
  }

  /** Messages/s over the last hour, oldest first. */
  series(): readonly RatePoint[] {
    return this.#points;
  }

  /** Each stream's messages/s between the oldest kept sample and the latest (empty before two). */
  streamRates(): Map<string, number> {
    const rates = new Map<string, number>();
    const first = this.#recent[0];
    const last = this.#recent[this.#recent.length - 1];
    if (!first || first === last) return rates;
    const seconds = (last.at - first.at) / 1000;
    for (const [stream, n] of last.perStream) {
      rates.set(stream, Math.max(0, n - (first.perStream.get(stream) ?? 0)) / seconds);
    }
    return rates;
  }
}
