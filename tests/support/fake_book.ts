/**
 * The order book the fake exchange keeps for a symbol whose diff stream
 * replays a real capture, so that its REST snapshots are the true book: it
 * starts from the capture's own REST snapshot and applies the replayed diffs
 * as BINANCE.md "Keeping a book" describes (spot: the first applied event has
 * `U <= lastUpdateId + 1 <= u`, then `U == previous u + 1`; USD-M: the first
 * has `U <= lastUpdateId <= u`, then `pu == previous u`; a quantity that is
 * zero removes the level). A snapshot at update id N is then the book at N.
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

export class FakeBook {
  readonly market: "spot" | "usdm";
  #lastUpdateId: number;
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
    for (const [price, qty] of diff.b) setLevel(this.#bids, price, qty);
    for (const [price, qty] of diff.a) setLevel(this.#asks, price, qty);
    this.#lastUpdateId = diff.u;
    this.#joined = true;
  }

  /** The REST `/depth` body for the book as it is now, `limit` levels a side. */
  snapshotText(limit: number, now = Date.now()): string {
    if (this.#broken) throw new Error(`fake book cannot be told: ${this.#broken}`);
    const side = (levels: Map<string, string>, descending: boolean) =>
      [...levels].sort((x, y) =>
        descending ? Number(y[0]) - Number(x[0]) : Number(x[0]) - Number(y[0])
      )
        .slice(0, limit).map(([price, qty]) => `["${price}","${qty}"]`).join(",");
    const times = this.market === "usdm" ? `"E":${now},"T":${now - 3},` : "";
    return `{"lastUpdateId":${this.#lastUpdateId},${times}"bids":[${
      side(this.#bids, true)
    }],"asks":[${side(this.#asks, false)}]}`;
  }
}

function setLevel(levels: Map<string, string>, price: string, qty: string): void {
  if (Number(qty) === 0) levels.delete(price);
  else levels.set(price, qty);
}
