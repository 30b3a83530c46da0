/**
 * The order book the fake exchange keeps for a symbol whose diff stream
 * replays a real capture, so that its REST snapshots are the true book: it
 * starts from the capture's own REST snapshot and applies the replayed diffs
 * as BINANCE.md "Keeping a book" describes (spot: the first applied event has
 * `U <= lastUpdateId + 1 <= u`, then `U == previous u + 1`; USD-M: the first
 * has `U <= lastUpdateId <= u`, then `pu == previous u`; a quantity that is
 * zero removes the level). A snapshot at update id N is then the book at N.
 *
 * A diff event aggregates many update ids (`U..u`), and Binance's snapshot
 * may stand at any of them: the documented first-event rule (spot
 * `U <= lastUpdateId + 1 <= u`, USD-M `U <= lastUpdateId <= u`) exists for a
 * `lastUpdateId` strictly inside an event. The events carry only each
 * level's final quantity, so the book inside one is modelled: the event's
 * changes are spread over its new update ids in order, a snapshot at L holds
 * the changes given an id up to L, and every other change given a later id
 * shows an intermediate quantity instead of the one before (as if an update
 * up to L had set the level, and a later one in the same event set it again).
 * Either way applying the whole event afterwards gives the book at `u`, which
 * is what the procedure promises and all a client can rely on.
 *
 * Written from the documentation, not from the project's code (src/book/).
 */

interface DiffPayload {
  U: number;
  u: number;
  pu?: number;
  b: Array<[string, string]>;
  a: Array<[string, string]>;
}

/** One level change of an event, in the order the event's update ids are given out. */
interface Change {
  readonly side: "bids" | "asks";
  readonly price: string;
  readonly qty: string;
}

/** The last event applied, and how to undo it: a snapshot inside it needs the book before it. */
interface AppliedEvent {
  /** the first update id new to the book: max(U, previous id + 1) */
  readonly from: number;
  readonly u: number;
  readonly changes: readonly Change[];
  /** side + price -> the quantity before the event (undefined: no level) */
  readonly before: ReadonlyMap<string, { side: "bids" | "asks"; price: string; qty?: string }>;
}

/**
 * Where a snapshot's id falls strictly inside an event: the last one applied
 * (its frame was sent before the REST answer), or the next one, given as the
 * diff payload the stream will send next (its frame comes after).
 */
export type InsideEvent = "last" | { readonly next: string };

export class FakeBook {
  readonly market: "spot" | "usdm";
  #lastUpdateId: number;
  #lastEvent: AppliedEvent | undefined;
  readonly #bids = new Map<string, string>();
  readonly #asks = new Map<string, string>();
  /** Whether a diff has been applied since the base snapshot (the chain is joined). */
  #joined = false;
  /** Set when the replayed diffs skip ids: the book can no longer be told truly. */
  #broken?: string;

  constructor(snapshotText: string, market: "spot" | "usdm" = "spot") {
    this.market = market;
    const snapshot = JSON.parse(snapshotText) as {
      lastUpdateId: number;
      bids: Array<[string, string]>;
      asks: Array<[string, string]>;
    };
    this.#lastUpdateId = snapshot.lastUpdateId;
    for (const [price, qty] of snapshot.bids) this.#bids.set(price, qty);
    for (const [price, qty] of snapshot.asks) this.#asks.set(price, qty);
  }

  get lastUpdateId(): number {
    return this.#lastUpdateId;
  }

  /** Applies one diff payload (JSON text) if it is newer than the book. */
  apply(payloadText: string): void {
    if (this.#broken) return;
    const diff = JSON.parse(payloadText) as DiffPayload;
    const last = this.#lastUpdateId;
    if (this.market === "spot") {
      if (diff.u <= last) return;
      if (diff.U > last + 1) {
        this.#broken = `diff U=${diff.U} after update id ${last}`;
        return;
      }
    } else {
      if (diff.u < last) return;
      const follows = this.#joined ? diff.pu === last : diff.U <= last && last <= diff.u;
      if (!follows) {
        this.#broken = `diff U=${diff.U} pu=${diff.pu} after update id ${last}`;
        return;
      }
    }
    const changes = changesOf(diff);
    const before = new Map<string, { side: "bids" | "asks"; price: string; qty?: string }>();
    for (const { side, price, qty } of changes) {
      const levels = side === "bids" ? this.#bids : this.#asks;
      const key = `${side} ${price}`;
      if (!before.has(key)) before.set(key, { side, price, qty: levels.get(price) });
      setLevel(levels, price, qty);
    }
    this.#lastEvent = { from: Math.max(diff.U, last + 1), u: diff.u, changes, before };
    this.#lastUpdateId = diff.u;
    this.#joined = true;
  }

  /** Whether `diff` (the next event) would be applied to the book as it stands. */
  #follows(diff: DiffPayload): boolean {
    const last = this.#lastUpdateId;
    if (diff.u <= last) return false;
    if (this.market === "spot") return diff.U <= last + 1;
    return this.#joined ? diff.pu === last : diff.U <= last;
  }

  /**
   * The REST `/depth` body, `limit` levels a side: the book as it is now, or
   * with `inside`, the book at an id strictly inside that event (see the top
   * of the file) when the event spans at least two new ids; otherwise, or
   * when the next event would not follow the book, the book as it is now.
   */
  snapshotText(
    limit: number,
    options: { now?: number; inside?: InsideEvent } = {},
  ): string {
    if (this.#broken) throw new Error(`fake book cannot be told: ${this.#broken}`);
    const now = options.now ?? Date.now();
    const book = (options.inside && this.#inside(options.inside)) ??
      { id: this.#lastUpdateId, bids: this.#bids, asks: this.#asks };
    const side = (levels: Map<string, string>, descending: boolean) =>
      [...levels].sort((x, y) =>
        descending ? Number(y[0]) - Number(x[0]) : Number(x[0]) - Number(y[0])
      )
        .slice(0, limit).map(([price, qty]) => `["${price}","${qty}"]`).join(",");
    const times = this.market === "usdm" ? `"E":${now},"T":${now - 3},` : "";
    return `{"lastUpdateId":${book.id},${times}"bids":[${side(book.bids, true)}],"asks":[${
      side(book.asks, false)
    }]}`;
  }

  /** The book at the middle one of an event's new ids, or undefined when it has fewer than two. */
  #inside(
    where: InsideEvent,
  ): { id: number; bids: Map<string, string>; asks: Map<string, string> } | undefined {
    const bids = new Map(this.#bids);
    const asks = new Map(this.#asks);
    let event: { from: number; u: number; changes: readonly Change[] };
    if (where === "last") {
      if (!this.#lastEvent) return undefined;
      event = this.#lastEvent;
      for (const { side, price, qty } of this.#lastEvent.before.values()) {
        setLevel(side === "bids" ? bids : asks, price, qty ?? "0");
      }
    } else {
      const diff = JSON.parse(where.next) as DiffPayload;
      if (!this.#follows(diff)) return undefined;
      event = {
        from: Math.max(diff.U, this.#lastUpdateId + 1),
        u: diff.u,
        changes: changesOf(diff),
      };
    }
    const span = event.u - event.from + 1;
    if (span < 2 || event.changes.length === 0) return undefined;
    const id = event.from + Math.floor((span - 1) / 2); // from <= id < u
    event.changes.forEach(({ side, price, qty }, j) => {
      const levels = side === "bids" ? bids : asks;
      const at = event.from + Math.floor((j * span) / event.changes.length);
      if (at <= id) setLevel(levels, price, qty);
      else if (j % 2 === 1) setLevel(levels, price, intermediate(qty));
    });
    return { id, bids, asks };
  }
}

/** An event's changes, bids and asks interleaved, in the order its update ids are given out. */
function changesOf(diff: DiffPayload): Change[] {
  const changes: Change[] = [];
  for (let i = 0; i < Math.max(diff.b.length, diff.a.length); i++) {
    if (i < diff.b.length) changes.push({ side: "bids", price: diff.b[i][0], qty: diff.b[i][1] });
    if (i < diff.a.length) changes.push({ side: "asks", price: diff.a[i][0], qty: diff.a[i][1] });
  }
  return changes;
}

/**
 * A quantity other than `qty`, never zero, in the same format: its last
 * digit moved by one ("0.00000000" -> "0.00000001", "1.25" -> "1.26").
 */
function intermediate(qty: string): string {
  const last = qty.length - 1;
  const digit = Number(qty[last]);
  const changed = `${qty.slice(0, last)}${(digit + 1) % 10}`;
  return Number(changed) === 0 ? `${qty.slice(0, last)}1` : changed;
}

function setLevel(levels: Map<string, string>, price: string, qty: string): void {
  if (Number(qty) === 0) levels.delete(price);
  else levels.set(price, qty);
}
