/**
 * Which symbols a collector records: `SYMBOL` and `SYMBOL_EXCLUDE` terms
 * resolved against what `exchangeInfo` lists, then cut to this instance's
 * shard. Pure: the listing comes in as an argument.
 *
 * A term is a symbol name (`BTCUSDT`), a pattern where `*` stands for any run
 * of characters, none included (`*USDT`, `BTC*`, `*BTC*`), or `ALL` (same as
 * `*`). Matching is case-insensitive (both sides upper-cased, which leaves
 * non-ASCII letters without case, such as Chinese, as they are) and covers the
 * whole symbol.
 *
 * Who is in the set:
 * - a symbol named outright is recorded whenever it is listed, whatever its
 *   status (a halted symbol still exists and may trade again);
 * - a symbol matched only by a pattern joins when it is listed as `TRADING`
 *   (Binance keeps long-delisted symbols in exchangeInfo as `BREAK`, and `ALL`
 *   should not record hundreds of dead streams), and once in the set it stays
 *   there through `BREAK`/`HALT` (recorded as `status` events) until it is no
 *   longer listed;
 * - `SYMBOL_EXCLUDE` wins over `SYMBOL`; the shard is applied last.
 */

import { inShard, NO_SHARD, type Shard } from "./shard.ts";

export interface Listing {
  readonly symbol: string;
  /** exchangeInfo's `status`: `TRADING`, `BREAK`, `HALT`, `CANCEL_ONLY`… */
  readonly status: string;
}

export interface SymbolRules {
  /** `SYMBOL` terms, upper case (`*` for ALL). */
  readonly include: readonly string[];
  /** `SYMBOL_EXCLUDE` terms, upper case. */
  readonly exclude?: readonly string[];
  readonly shard?: Shard;
}

/** Whether a term is a pattern (matches many symbols) rather than one symbol's name. */
export function isPattern(term: string): boolean {
  return term.includes("*");
}

/** Canonical spelling of a term: upper case, `ALL` as `*`. */
export function canonicalTerm(term: string): string {
  const upper = term.trim().toUpperCase();
  return upper === "ALL" ? "*" : upper;
}

/** Whether `symbol` matches `term` (case-insensitive, the whole symbol). */
export function matchesTerm(symbol: string, term: string): boolean {
  const s = symbol.toUpperCase();
  const t = canonicalTerm(term);
  if (!isPattern(t)) return s === t;
  const parts = t.split("*");
  const head = parts[0];
  const tail = parts[parts.length - 1];
  if (s.length < head.length + tail.length || !s.startsWith(head) || !s.endsWith(tail)) {
    return false;
  }
  // The middle parts in order, each after the previous one, none overlapping the tail.
  let at = head.length;
  const end = s.length - tail.length;
  for (const part of parts.slice(1, -1)) {
    const found = s.indexOf(part, at);
    if (found === -1 || found + part.length > end) return false;
    at = found + part.length;
  }
  return true;
}

/** Whether any of the terms matches the symbol. */
export function matchesAny(symbol: string, terms: readonly string[]): boolean {
  return terms.some((term) => matchesTerm(symbol, term));
}

/** The plain names among the terms (they must be listed at start-up). */
export function namedSymbols(terms: readonly string[]): string[] {
  return terms.filter((t) => !isPattern(t));
}

/**
 * The symbols to record, in exchangeInfo's order. `current` is the set being
 * recorded now: a pattern-matched symbol in it stays while it is listed, even
 * when no longer `TRADING`.
 */
export function selectSymbols(
  listed: readonly Listing[],
  rules: SymbolRules,
  current: ReadonlySet<string> = new Set(),
): string[] {
  const named = new Set(namedSymbols(rules.include).map((s) => s.toUpperCase()));
  const patterns = rules.include.filter(isPattern);
  const exclude = rules.exclude ?? [];
  const shard = rules.shard ?? NO_SHARD;
  const chosen: string[] = [];
  const seen = new Set<string>();
  for (const { symbol, status } of listed) {
    if (seen.has(symbol)) continue;
    seen.add(symbol);
    const upper = symbol.toUpperCase();
    const wanted = named.has(upper) ||
      (matchesAny(symbol, patterns) && (status === "TRADING" || current.has(symbol)));
    if (!wanted || matchesAny(symbol, exclude) || !inShard(symbol, shard)) continue;
    chosen.push(symbol);
  }
  return chosen;
}

/** What changed between two listings of the selected set. */
export interface SelectionChange {
  readonly added: readonly string[];
  readonly removed: readonly string[];
  /** Symbols that stay, whose status changed. */
  readonly status: ReadonlyArray<{ symbol: string; from: string; to: string }>;
}

/** Compares the selected set and its statuses before and after a refresh. */
export function diffSelection(
  before: ReadonlyMap<string, string>,
  after: ReadonlyMap<string, string>,
): SelectionChange {
  const added = [...after.keys()].filter((s) => !before.has(s));
  const removed = [...before.keys()].filter((s) => !after.has(s));
  const status = [...after]
    .filter(([symbol, to]) => before.has(symbol) && before.get(symbol) !== to)
    .map(([symbol, to]) => ({ symbol, from: before.get(symbol)!, to }));
  return { added, removed, status };
}
