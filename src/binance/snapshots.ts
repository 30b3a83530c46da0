/**
 * Diff mode: REST depth snapshots per symbol, taken when a symbol's diff
 * chain starts (the stream is already delivering, so the snapshot's
 * `lastUpdateId` falls inside diffs being recorded — Binance's documented
 * procedure), after every break, and every `intervalMs`. Requests queue up
 * one at a time behind the RestLimiter, so a reconnect of many symbols is
 * staggered instead of a burst.
 *
 * A snapshot older than the first diff of the symbol's current chain cannot
 * start a book (BINANCE.md, "Keeping a book"): it is not stored, and the
 * symbol goes to the back of the queue to be fetched again, still paced by
 * the limiter, until one overlaps.
 */

import { getLogger } from "@logtape/logtape";
import { whyNotOneLine } from "../archive/decode.ts";
import { delay } from "../delay.ts";
import type { Market } from "../config_types.ts";
import { depthWeight, type RestLimiter } from "./rest.ts";
import { snapshotOverlaps } from "./sequence.ts";
import { restPaths } from "./streams.ts";

const log = getLogger(["l2", "snapshots"]);

export interface SnapshotterOptions {
  readonly restUrl: string;
  readonly market: Market;
  readonly limit: number;
  readonly intervalMs: number;
  readonly limiter: RestLimiter;
  /** A snapshot arrived: the exact response body and its receive time (µs). */
  readonly onSnapshot: (symbol: string, text: string, recvTs: number) => void;
  readonly nowMicros: () => number;
  readonly signal: AbortSignal;
  /** Wait before retrying a failed snapshot, ms. */
  readonly retryMs?: number;
  /** The first update id of the symbol's current diff chain, when it has one. */
  readonly chainStart?: (symbol: string) => number | undefined;
}

type Outcome = "stored" | "failed" | "stale";

export class Snapshotter {
  readonly #options: SnapshotterOptions;
  /** Symbols waiting, in request order; a symbol is queued at most once. */
  readonly #queue = new Set<string>();
  readonly #timers = new Map<string, ReturnType<typeof setTimeout>>();
  /** Symbols no longer recorded: not fetched again until requested anew. */
  readonly #forgotten = new Set<string>();
  #inFlight: string | undefined;
  #wake: (() => void) | undefined;
  #refetches = 0;
  readonly done: Promise<void>;

  constructor(options: SnapshotterOptions) {
    this.#options = options;
    this.done = this.#loop();
  }

  /** Asks for a snapshot of `symbol` as soon as the limits allow. */
  request(symbol: string, reason: string): void {
    this.#forgotten.delete(symbol);
    if (this.#options.signal.aborted || this.#queue.has(symbol)) return;
    log.debug("Snapshot of {symbol} requested ({reason})", { symbol, reason });
    this.#queue.add(symbol);
    this.#wake?.();
  }

  /**
   * `symbol` is no longer recorded (delisted, or left the selection): no
   * more snapshots of it, neither queued nor periodic nor retried (a
   * delisted symbol's request fails for good, and each retry would take its
   * share of the REST weight from the symbols still recorded).
   */
  forget(symbol: string): void {
    this.#forgotten.add(symbol);
    clearTimeout(this.#timers.get(symbol));
    this.#timers.delete(symbol);
    // The one in flight, if any, stays queued until it returns; the loop then lets it go.
    if (this.#inFlight !== symbol) this.#queue.delete(symbol);
  }

  get queued(): number {
    return this.#queue.size;
  }

  /** Snapshots fetched again because they were older than their chain. */
  get refetches(): number {
    return this.#refetches;
  }

  async #loop(): Promise<void> {
    const { signal } = this.#options;
    while (!signal.aborted) {
      const [symbol] = this.#queue;
      if (symbol === undefined) {
        await new Promise<void>((resolve) => {
          const done = () => {
            signal.removeEventListener("abort", done);
            resolve();
          };
          this.#wake = done;
          signal.addEventListener("abort", done, { once: true });
        });
        this.#wake = undefined;
        continue;
      }
      this.#inFlight = symbol;
      const outcome = await this.#take(symbol);
      this.#inFlight = undefined;
      this.#queue.delete(symbol);
      if (signal.aborted) break;
      if (this.#forgotten.has(symbol)) continue;
      if (outcome === "stale") {
        // Behind the others already waiting; the limiter paces the next call.
        this.#refetches++;
        this.request(symbol, "older than its chain");
        continue;
      }
      const ok = outcome === "stored";
      // Next periodic snapshot (or a retry after a failure).
      clearTimeout(this.#timers.get(symbol));
      this.#timers.set(
        symbol,
        setTimeout(
          () => this.request(symbol, ok ? "interval" : "retry"),
          ok ? this.#options.intervalMs : this.#options.retryMs ?? 10_000,
        ),
      );
    }
    for (const timer of this.#timers.values()) clearTimeout(timer);
  }

  async #take(symbol: string): Promise<Outcome> {
    const { restUrl, market, limit, limiter, signal } = this.#options;
    const url = `${restUrl}${restPaths(market).depth}?symbol=${symbol}&limit=${limit}`;
    try {
      const { status, text } = await limiter.get(url, {
        weight: depthWeight(market, limit),
        signal,
      });
      const recvTs = this.#options.nowMicros();
      if (status !== 200) {
        log.warn("Snapshot of {symbol} failed: HTTP {status}", { symbol, status });
        return "failed";
      }
      // The body is stored as sent in one NDJSON line: whitespace around the
      // JSON value is not part of it, a line break inside could not be stored.
      const body = text.trim();
      const parsed = JSON.parse(body) as { lastUpdateId?: unknown };
      if (typeof parsed.lastUpdateId !== "number") {
        log.warn("Snapshot of {symbol} has no lastUpdateId; not stored", { symbol });
        return "failed";
      }
      const why = whyNotOneLine(body, parsed);
      if (why) {
        log.warn(
          "Snapshot of {symbol} holds {why} (a proxy reformatted it?); an archive line cannot " +
            "carry it as sent: not stored",
          { symbol, why },
        );
        return "failed";
      }
      const first = this.#options.chainStart?.(symbol);
      if (
        first !== undefined &&
        !snapshotOverlaps(market, { lastUpdateId: parsed.lastUpdateId, firstUpdateId: first })
      ) {
        log.info(
          "Snapshot of {symbol} at update id {lastUpdateId} is older than its chain (first U {first}); fetching again",
          { symbol, lastUpdateId: parsed.lastUpdateId, first },
        );
        return "stale";
      }
      this.#options.onSnapshot(symbol, body, recvTs);
      log.info("Snapshot of {symbol} at update id {lastUpdateId}", {
        symbol,
        lastUpdateId: parsed.lastUpdateId,
      });
      return "stored";
    } catch (error) {
      if (!signal.aborted) log.warn("Snapshot of {symbol} failed: {error}", { symbol, error });
      await delay(0);
      return "failed";
    }
  }
}
