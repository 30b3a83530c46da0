/**
 * Update-id continuity rules per stream kind. Pure: given the last update id
 * kept for a stream and the ids of the next message, say whether the message
 * follows on, repeats what was kept, or leaves a hole.
 *
 * - spot diff depth:  U == previous u + 1 (a message may overlap what was
 *   kept, U <= previous u + 1 < u, without missing anything)
 * - USD-M diff depth: pu == previous u (U is not previous u + 1 on futures)
 * - partial depth:    lastUpdateId never falls; an older one is a duplicate.
 *   Partial books skip ids by design, so they never "gap"; and Binance pushes
 *   the same lastUpdateId again while the book does not change, so an equal
 *   one follows on (each push is a message of its own, stored as it came).
 *   Book ticker (`u`) follows the same rule: it skips the book updates that
 *   left the best level alone.
 * - trade (`t`) and aggTrade (`a`): ids are consecutive per symbol, so the
 *   next one is previous + 1 and anything larger is a gap.
 */

import type { Market } from "../config_types.ts";

export type SequenceRule = "spot-diff" | "usdm-diff" | "partial" | "consecutive";

export interface MessageIds {
  readonly firstUpdateId: number;
  readonly lastUpdateId: number;
  /** USD-M only: `pu`. */
  readonly prevUpdateId?: number;
}

export type Continuity =
  | { readonly kind: "first" }
  | { readonly kind: "next" }
  | { readonly kind: "duplicate"; readonly last: number }
  | { readonly kind: "gap"; readonly expected: number; readonly received: number };

/** The rule for a stream type such as `depth@100ms`, `depth20@100ms`, `trade` or `bookTicker`. */
export function sequenceRuleFor(market: Market, streamType: string): SequenceRule {
  if (/^depth(@|$)/.test(streamType)) return market === "usdm" ? "usdm-diff" : "spot-diff";
  if (streamType === "trade" || streamType === "aggTrade") return "consecutive";
  return "partial";
}

/**
 * Whether a REST snapshot at `lastUpdateId` can start a book for a chain whose
 * first buffered diff has `firstUpdateId` (BINANCE.md, "Keeping a book"):
 * spot needs `lastUpdateId + 1 >= U`, USD-M `lastUpdateId >= U`; an older
 * snapshot must be fetched again.
 */
export function snapshotOverlaps(
  market: Market,
  ids: { lastUpdateId: number; firstUpdateId: number },
): boolean {
  return market === "spot"
    ? ids.lastUpdateId + 1 >= ids.firstUpdateId
    : ids.lastUpdateId >= ids.firstUpdateId;
}

/** The verdicts without details, shared: `continuity` runs for every message. */
const FIRST: Continuity = { kind: "first" };
const NEXT: Continuity = { kind: "next" };

export function continuity(
  rule: SequenceRule,
  last: number | undefined,
  ids: MessageIds,
): Continuity {
  if (last === undefined) return FIRST;
  if (rule === "partial") return ids.lastUpdateId < last ? { kind: "duplicate", last } : NEXT;
  if (ids.lastUpdateId <= last) return { kind: "duplicate", last };
  switch (rule) {
    case "consecutive":
      return ids.firstUpdateId === last + 1
        ? NEXT
        : { kind: "gap", expected: last + 1, received: ids.firstUpdateId };
    case "spot-diff":
      return ids.firstUpdateId <= last + 1
        ? NEXT
        : { kind: "gap", expected: last + 1, received: ids.firstUpdateId };
    case "usdm-diff": {
      // Without `pu` (never seen from Binance) fall back to the spot rule.
      const prev = ids.prevUpdateId;
      if (prev === undefined) return continuity("spot-diff", last, ids);
      // Equal, as BINANCE.md says: a smaller `pu` (Binance sends -1 after a
      // reset on its side) is a break too, as `book` reads it.
      return prev === last ? NEXT : { kind: "gap", expected: last, received: prev };
    }
  }
}
