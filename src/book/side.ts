/**
 * One side of an order book: price levels kept sorted, each with the price
 * and quantity texts exactly as Binance sent them. Prices are parsed only to
 * order the levels (two texts of one value, "1.50" and "1.5", are one level);
 * nothing printed is ever a re-formatted number.
 *
 * A B+ tree (sorted-btree) keyed so that the best level is the largest key
 * (bids: the price, asks: minus the price). Sorted arrays were tried first:
 * a busy book has thousands of levels a side and diffs insert and remove
 * them anywhere, and splicing cost ~9 µs a level (a day of one stream took
 * minutes); the tree's updates are logarithmic.
 */

import sortedBtree from "sorted-btree";

// The package is CommonJS with `exports.default = BTree`, and Deno's default
// import is the whole `module.exports`: the class is its `default`.
const BTree = sortedBtree.default;

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
  readonly #levels = new BTree<number, Level>(undefined, (a, b) => a - b);

  constructor(kind: "bid" | "ask") {
    this.kind = kind;
  }

  get size(): number {
    return this.#levels.size;
  }

  #keyOf(price: string): number {
    return this.kind === "bid" ? Number(price) : -Number(price);
  }

  #valueOf(key: number): number {
    return this.kind === "bid" ? key : -key;
  }

  /** Sets a level; a zero quantity removes it. */
  set(price: string, qty: string): void {
    if (isZeroQty(qty)) this.#levels.delete(this.#keyOf(price));
    else this.#levels.set(this.#keyOf(price), [price, qty]);
  }

  /** The quantity at a price, or undefined when there is no such level. */
  get(price: string): string | undefined {
    return this.#levels.get(this.#keyOf(price))?.[1];
  }

  /** The best `n` levels, best first. */
  top(n: number): Level[] {
    const out: Level[] = [];
    if (n <= 0) return out;
    for (const [, level] of this.#levels.entriesReversed()) {
      out.push(level);
      if (out.length >= n) break;
    }
    return out;
  }

  /** Every level, best first. */
  levels(): Level[] {
    return this.top(this.#levels.size);
  }

  /** The worst listed price's value (lowest bid, highest ask); undefined when empty. */
  get worstValue(): number | undefined {
    const key = this.#levels.minKey();
    return key === undefined ? undefined : this.#valueOf(key);
  }

  /** Whether `value` is at or better than `limit` on this side. */
  atOrBetter(value: number, limit: number): boolean {
    return this.kind === "bid" ? value >= limit : value <= limit;
  }

  /** The levels at or better than `limit`, best first. */
  within(limit: number): Level[] {
    const out: Level[] = [];
    const lowest = this.kind === "bid" ? limit : -limit;
    for (const [key, level] of this.#levels.entriesReversed()) {
      if (key < lowest) break;
      out.push(level);
    }
    return out;
  }

  /** Removes every level at or better than `limit` (before loading a snapshot's). */
  clearWithin(limit: number): void {
    const lowest = this.kind === "bid" ? limit : -limit;
    const maxKey = this.#levels.maxKey();
    if (maxKey !== undefined && maxKey >= lowest) {
      this.#levels.deleteRange(lowest, maxKey, true);
    }
  }

  clear(): void {
    this.#levels.clear();
  }
}
