/**
 * Holes are written into the record. When a batch is lost (spool full, disk
 * full, upload queue full), a `dropped` line saying how many messages of
 * which receive times were lost, and why, goes into that stream's open
 * batch: the next batch stored carries it, and `verify` explains the hole
 * with it.
 *
 * The line is only in the record once a batch holding it is stored or
 * spooled. If that batch is lost as well, its own `dropped` line is written
 * again with the next one, so no loss goes unmarked while the collector
 * runs. A mark knows the key of the batch it went into, so a batch settled
 * later carries exactly its own marks (not a range of receive times: after
 * the wall clock steps back, many lines share one).
 */

import { type DroppedFacts, droppedLine } from "../archive/encode.ts";

/** What a batch tells about itself here: its stream and receive times, µs. */
export interface BatchSpan {
  readonly key: string;
  readonly stream: string;
  readonly meta: {
    readonly messages: number;
    readonly firstRecvTs: number;
    readonly lastRecvTs: number;
  };
}

export interface HoleMarkerOptions {
  /** Adds an event line to `stream`'s open batch (opening one if needed). */
  readonly mark: (stream: string, text: string, recvTs: number) => void;
  /** The key of the batch a line of `stream` received at `recvTs` goes into now. */
  readonly keyFor: (stream: string, recvTs: number) => string;
  /** Receive-time clock, µs since the epoch (the recorder's). */
  readonly nowMicros: () => number;
}

interface Marked {
  readonly facts: DroppedFacts;
  /** The batch the mark went into. */
  readonly key: string;
}

export class HoleMarker {
  readonly #options: HoleMarkerOptions;
  /** Per stream, `dropped` lines written into batches not yet stored or spooled. */
  readonly #unconfirmed = new Map<string, Marked[]>();
  /** Per stream, losses waiting for a line (see `lost`). */
  readonly #held = new Map<string, DroppedFacts>();
  #marking = false;

  constructor(options: HoleMarkerOptions) {
    this.#options = options;
  }

  /**
   * `batch` was lost for `reason`: one `dropped` line for it and for the
   * marks it carried goes into the stream's next batch. A mark can itself
   * fill a batch that is then lost at once; such a batch of marks only is
   * held and written with the stream's next loss or store, so marking never
   * loops.
   */
  lost(batch: BatchSpan, reason: string): void {
    const carried = this.#takeFrom(batch).map((m) => m.facts);
    const own = {
      reason,
      messages: batch.meta.messages,
      firstRecvTs: batch.meta.firstRecvTs,
      lastRecvTs: batch.meta.lastRecvTs,
    };
    const facts = batch.meta.messages > 0 || carried.length === 0 ? [...carried, own] : carried;
    if (this.#marking && batch.meta.messages === 0) {
      this.#hold(batch.stream, merge(facts));
      return;
    }
    this.#mark(batch.stream, merge([...facts, ...this.#takeHeld(batch.stream)]));
  }

  /** `batch` was stored or spooled: the marks it held are in the record. */
  kept(batch: BatchSpan): void {
    this.#takeFrom(batch);
    const held = this.#takeHeld(batch.stream);
    if (held.length > 0) this.#mark(batch.stream, merge(held));
  }

  /**
   * Writes the losses held (see `lost`) into their streams' open batches
   * now, at shutdown, when no store may come to carry them.
   */
  markHeld(): void {
    for (const stream of [...this.#held.keys()]) {
      const held = this.#takeHeld(stream);
      if (held.length > 0) this.#mark(stream, merge(held));
    }
  }

  /** Marks written but not yet in a stored or spooled batch, and losses held. */
  get pending(): number {
    let n = this.#held.size;
    for (const marks of this.#unconfirmed.values()) n += marks.length;
    return n;
  }

  #mark(stream: string, facts: DroppedFacts): void {
    // Never before the lost lines: the mark follows them in receive order.
    const recvTs = Math.max(this.#options.nowMicros(), facts.lastRecvTs);
    // Known before it is added: adding it may seal and lose its batch at once.
    let marks = this.#unconfirmed.get(stream);
    if (!marks) this.#unconfirmed.set(stream, marks = []);
    marks.push({ facts, key: this.#options.keyFor(stream, recvTs) });
    const outer = this.#marking;
    this.#marking = true;
    try {
      this.#options.mark(stream, droppedLine(recvTs, stream, facts), recvTs);
    } finally {
      this.#marking = outer;
    }
  }

  #hold(stream: string, facts: DroppedFacts): void {
    const held = this.#held.get(stream);
    this.#held.set(stream, held ? merge([held, facts]) : facts);
  }

  #takeHeld(stream: string): DroppedFacts[] {
    const held = this.#held.get(stream);
    this.#held.delete(stream);
    return held ? [held] : [];
  }

  /** Removes and returns the marks written into `batch`. */
  #takeFrom(batch: BatchSpan): Marked[] {
    const marks = this.#unconfirmed.get(batch.stream);
    if (!marks) return [];
    const within = marks.filter((m) => m.key === batch.key);
    if (within.length === 0) return [];
    const rest = marks.filter((m) => m.key !== batch.key);
    if (rest.length === 0) this.#unconfirmed.delete(batch.stream);
    else this.#unconfirmed.set(batch.stream, rest);
    return within;
  }
}

/** Several losses as one: every reason, the total, the whole span of receive times. */
function merge(all: readonly DroppedFacts[]): DroppedFacts {
  if (all.length === 1) return all[0];
  return {
    reason: [...new Set(all.map((f) => f.reason))].join("; "),
    messages: all.reduce((n, f) => n + f.messages, 0),
    firstRecvTs: Math.min(...all.map((f) => f.firstRecvTs)),
    lastRecvTs: Math.max(...all.map((f) => f.lastRecvTs)),
  };
}
