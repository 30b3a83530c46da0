/**
 * For `verify`: per diff stream, the time ranges in which the archive cannot
 * rebuild the order book because no stored REST snapshot overlaps the update-id
 * chain (BINANCE.md, "Keeping a book"). Pure, fed in archive order.
 *
 * A chain runs from a stream's first message, or a break, to the next break.
 * Within it the book can be rebuilt from the first snapshot whose
 * `lastUpdateId` reaches back to the chain's first `U` (spot
 * `lastUpdateId + 1 >= U`, USD-M `lastUpdateId >= U`) and that the chain has
 * reached. Before that snapshot, and in a chain with none, it cannot.
 */

import { snapshotOverlaps } from "../binance/sequence.ts";
import type { Market } from "../config_types.ts";

export interface TimeRange {
  /** Receive times, µs since the epoch. */
  readonly fromRecvTs: number;
  readonly toRecvTs: number;
}

interface Chain {
  readonly startTs: number;
  readonly firstUpdateId: number;
  lastUpdateId: number;
  lastTs: number;
  /** Receive time of the first snapshot that starts a book in this chain. */
  rebuildableFrom?: number;
  /** Overlapping snapshots ahead of the chain, waiting for it to reach them. */
  readonly ahead: Array<{ lastUpdateId: number; ts: number }>;
}

export class RebuildTracker {
  readonly #market: Market;
  readonly #closed: TimeRange[] = [];
  #chain: Chain | undefined;
  /** A snapshot stored before the stream's first message. */
  #early: { lastUpdateId: number; ts: number } | undefined;

  constructor(market: Market) {
    this.#market = market;
  }

  /** A message that starts a chain (the first, or one after a break). */
  chainStart(ts: number, firstUpdateId: number): void {
    // Snapshots the old chain had not reached may start the new one (as `book`
    // keeps a loaded snapshot through a gap): the overlap rule decides.
    const carried = this.#chain?.ahead ?? [];
    this.#close();
    const chain: Chain = {
      startTs: ts,
      firstUpdateId,
      lastUpdateId: firstUpdateId,
      lastTs: ts,
      ahead: [],
    };
    const early = this.#early;
    this.#early = undefined;
    if (early) this.#consider(chain, early);
    for (const snapshot of carried) this.#consider(chain, snapshot);
    this.#chain = chain;
  }

  /**
   * The stream stopped (a `stopped` line): its chain ends, and the snapshots
   * it had not reached go with it; what follows is a new record.
   */
  end(): void {
    this.#close();
    this.#early = undefined;
  }

  /** Any message of the chain (after `chainStart` for the first one). */
  message(ts: number, lastUpdateId: number): void {
    const chain = this.#chain;
    if (!chain) return;
    chain.lastUpdateId = Math.max(chain.lastUpdateId, lastUpdateId);
    chain.lastTs = Math.max(chain.lastTs, ts);
    if (chain.rebuildableFrom !== undefined || chain.ahead.length === 0) return;
    const reached = chain.ahead.filter((s) => s.lastUpdateId <= chain.lastUpdateId);
    if (reached.length > 0) chain.rebuildableFrom = Math.min(...reached.map((s) => s.ts));
  }

  /** A stored REST snapshot of the stream's symbol. */
  snapshot(ts: number, lastUpdateId: number): void {
    const chain = this.#chain;
    if (!chain) {
      this.#early = { lastUpdateId, ts };
      return;
    }
    this.#consider(chain, { lastUpdateId, ts });
  }

  /** Ranges without a rebuildable book so far, the open chain included. */
  ranges(): TimeRange[] {
    const open = this.#chain ? gapOf(this.#chain) : undefined;
    return open ? [...this.#closed, open] : [...this.#closed];
  }

  #consider(chain: Chain, snapshot: { lastUpdateId: number; ts: number }): void {
    if (chain.rebuildableFrom !== undefined) return;
    const ids = { lastUpdateId: snapshot.lastUpdateId, firstUpdateId: chain.firstUpdateId };
    if (!snapshotOverlaps(this.#market, ids)) return; // older than the chain: useless
    if (snapshot.lastUpdateId <= chain.lastUpdateId) {
      chain.rebuildableFrom = Math.max(snapshot.ts, chain.startTs);
    } else {
      chain.ahead.push(snapshot);
    }
  }

  #close(): void {
    const chain = this.#chain;
    this.#chain = undefined;
    const gap = chain ? gapOf(chain) : undefined;
    if (gap) this.#closed.push(gap);
  }
}

function gapOf(chain: Chain): TimeRange | undefined {
  const to = chain.rebuildableFrom ?? chain.lastTs;
  if (chain.rebuildableFrom !== undefined && to <= chain.startTs) return undefined;
  return { fromRecvTs: chain.startTs, toRecvTs: to };
}
