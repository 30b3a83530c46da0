/**
 * One side of an order book: price levels kept sorted, each with the price
 * and quantity texts exactly as Binance sent them. Prices are parsed only to
 * order the levels (two texts of one value, "1.50" and "1.5", are one level);
 * nothing printed is ever a re-formatted number.
 *
 * Sorted parallel arrays, searched by bisection: a book holds a few thousand
 * levels a side, and a diff touches a handful, so an insert or removal moves
 * a few KB, cheaper than a tree's allocations; the top N is a slice.
 */

/** `[price, quantity]` as Binance writes them. */
export type Level = readonly [price: string, qty: string];

/** Whether a quantity removes its level: any text that parses to zero ("0", "0.00000000"). */
export function isZeroQty(qty: string): boolean {
  return Number(qty) === 0;
}

/** Decimal text without trailing fractional zeros, for comparing quantities as written. */
export function canonicalDecimal(text: string): string {
  if (!text.includes(".")) return text;
  return text.replace(/0+$/, "").replace(/\.$/, "");
}

export class Side {
  /** `bid`: best is the highest price; `ask`: the lowest. */
  readonly kind: "bid" | "ask";
  /** Ascending numeric prices; the texts are at the same index. */
  #values: number[] = [];
  #prices: string[] = [];
  #qtys: string[] = [];

  constructor(kind: "bid" | "ask") {
    this.kind = kind;
  }

  get size(): number {
    return this.#values.length;
  }

  /** Index of the first value >= `value`. */
  #search(value: number): number {
    let lo = 0;
    let hi = this.#values.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#values[mid] < value) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Sets a level; a zero quantity removes it. */
  set(price: string, qty: string): void {
    const value = Number(price);
    const at = this.#search(value);
    const found = at < this.#values.length && this.#values[at] === value;
    if (isZeroQty(qty)) {
      if (found) {
        this.#values.splice(at, 1);
        this.#prices.splice(at, 1);
        this.#qtys.splice(at, 1);
      }
      return;
    }
    if (found) {
      this.#prices[at] = price;
      this.#qtys[at] = qty;
      return;
    }
    this.#values.splice(at, 0, value);
    this.#prices.splice(at, 0, price);
    this.#qtys.splice(at, 0, qty);
  }

  /** The quantity at a price, or undefined when there is no such level. */
  get(price: string): string | undefined {
    const value = Number(price);
    const at = this.#search(value);
    return at < this.#values.length && this.#values[at] === value ? this.#qtys[at] : undefined;
  }

  /** The best `n` levels, best first. */
  top(n: number): Level[] {
    const out: Level[] = [];
    const size = this.#values.length;
    for (let i = 0; i < n && i < size; i++) {
      const at = this.kind === "bid" ? size - 1 - i : i;
      out.push([this.#prices[at], this.#qtys[at]]);
    }
    return out;
  }

  /** Every level, best first. */
  levels(): Level[] {
    return this.top(this.#values.length);
  }

  /** The worst listed price's value (lowest bid, highest ask); undefined when empty. */
  get worstValue(): number | undefined {
    if (this.#values.length === 0) return undefined;
    return this.kind === "bid" ? this.#values[0] : this.#values[this.#values.length - 1];
  }

  /** Whether `value` is at or better than `limit` on this side. */
  atOrBetter(value: number, limit: number): boolean {
    return this.kind === "bid" ? value >= limit : value <= limit;
  }

  /** The levels at or better than `limit`, best first. */
  within(limit: number): Level[] {
    return this.levels().filter(([price]) => this.atOrBetter(Number(price), limit));
  }

  /** Removes every level at or better than `limit` (before loading a snapshot's). */
  clearWithin(limit: number): void {
    const keep = this.#values.map((value) => !this.atOrBetter(value, limit));
    this.#values = this.#values.filter((_, i) => keep[i]);
    this.#prices = this.#prices.filter((_, i) => keep[i]);
    this.#qtys = this.#qtys.filter((_, i) => keep[i]);
  }

  clear(): void {
    this.#values = [];
    this.#prices = [];
    this.#qtys = [];
  }
}
