/**
 * Binance REST: depth snapshots for diff mode, and the symbol check at
 * start-up. Every call goes through one `RestLimiter`, which reads the
 * request-weight header, honours `Retry-After` on 429 and backs off hard on
 * 418 (an IP ban), so a reconnect of hundreds of symbols cannot trip
 * Binance's limits.
 */

import { getLogger } from "@logtape/logtape";
import { delay } from "../delay.ts";
import type { Market } from "../config_types.ts";
import { restPaths } from "./streams.ts";

const log = getLogger(["l2", "rest"]);

/**
 * Request weight per minute allowed per IP, as documented; `exchangeInfo`'s
 * `rateLimits` is authoritative and replaces it once read (BINANCE.md, REST limits).
 */
export const WEIGHT_LIMIT: Record<Market, number> = { spot: 6000, usdm: 2400 };

/** Weight of one depth request with `limit` levels (Binance's published table). */
export function depthWeight(market: Market, limit: number): number {
  if (market === "spot") return limit <= 100 ? 5 : limit <= 500 ? 25 : limit <= 1000 ? 50 : 250;
  return limit <= 50 ? 2 : limit <= 100 ? 5 : limit <= 500 ? 10 : 20;
}

export class RestError extends Error {
  override name = "RestError";
  constructor(message: string, readonly status?: number) {
    super(message);
  }
}

export interface RestLimiterOptions {
  readonly market: Market;
  readonly fetch?: typeof fetch;
  /** Use at most this share of the weight limit (default 0.5: leave room for others). */
  readonly budgetShare?: number;
  /** Wall clock, ms: Binance counts weight per minute of it (default `Date.now`). */
  readonly now?: () => number;
  /**
   * Monotonic clock, ms, for waits (spacing, Retry-After): a step of the
   * wall clock neither stalls the calls nor cuts a ban's wait short
   * (default `performance.now`).
   */
  readonly monotonic?: () => number;
}

export interface RestCallOptions {
  /** Request weight (BINANCE.md, REST limits). */
  readonly weight: number;
  readonly signal?: AbortSignal;
  /** Called when the answer's status and headers have come, before its body. */
  readonly onAnswer?: () => void;
}

/**
 * Serialises REST calls and spaces them so their weight stays within the
 * budget; waits out 429/418 before the next call.
 */
export class RestLimiter {
  readonly #fetch: typeof fetch;
  #limit: number;
  #budget: number;
  readonly #now: () => number;
  readonly #monotonic: () => number;
  #chain: Promise<unknown> = Promise.resolve();
  #notBefore = 0;
  #banStrikes = 0;

  constructor(readonly options: RestLimiterOptions) {
    this.#fetch = options.fetch ?? fetch;
    this.#limit = WEIGHT_LIMIT[options.market];
    this.#budget = this.#limit * (options.budgetShare ?? 0.5);
    this.#now = options.now ?? Date.now;
    this.#monotonic = options.monotonic ?? (() => performance.now());
  }

  /** Request weight per minute the limiter keeps under (its share of it is the budget). */
  get weightLimit(): number {
    return this.#limit;
  }

  /** Binance's own per-minute weight limit, read from `exchangeInfo.rateLimits`. */
  setWeightLimit(perMinute: number): void {
    if (!(perMinute > 0) || perMinute === this.#limit) return;
    log.info("Binance allows {limit} request weight per minute (exchangeInfo)", {
      limit: perMinute,
      documented: WEIGHT_LIMIT[this.options.market],
    });
    this.#limit = perMinute;
    this.#budget = perMinute * (this.options.budgetShare ?? 0.5);
  }

  /** Earliest time (ms, the limiter's monotonic clock) the next call may start. */
  get nextCallAt(): number {
    return this.#notBefore;
  }

  /**
   * GETs `url` (weight `weight`), returning status, the exact body text, and
   * when (wall clock, ms) it was sent (after any wait) and answered.
   */
  get(
    url: string,
    options: RestCallOptions,
  ): Promise<{ status: number; text: string; sentAt: number; receivedAt: number }> {
    const call = this.#chain.then(() => this.#call(url, options));
    this.#chain = call.catch(() => {});
    return call;
  }

  async #call(url: string, options: RestCallOptions) {
    await delay(this.#notBefore - this.#monotonic(), options.signal);
    if (options.signal?.aborted) throw new RestError("aborted");
    // Even spacing: a budget of B weight per minute allows one call per W/B minutes.
    this.#notBefore = this.#monotonic() + Math.ceil((60_000 * options.weight) / this.#budget);
    const sentAt = this.#now();
    const response = await this.#fetch(url, {
      signal: AbortSignal.any([
        options.signal ?? new AbortController().signal,
        AbortSignal.timeout(15_000),
      ]),
    });
    options.onAnswer?.();
    const text = await response.text();
    const receivedAt = this.#now();
    const answeredAt = this.#monotonic();
    const used = Number(response.headers.get("x-mbx-used-weight-1m"));
    if (Number.isFinite(used) && used > this.#limit * 0.8) {
      // Close to the limit: wait for the next minute window (of the wall clock).
      const window = 60_000 - (receivedAt % 60_000);
      this.#notBefore = Math.max(this.#notBefore, answeredAt + window);
      log.warn("Binance request weight at {used} this minute; pausing REST calls", { used });
    }
    if (response.status === 429 || response.status === 418) {
      const retryAfter = Number(response.headers.get("retry-after"));
      const banned = response.status === 418;
      this.#banStrikes = banned ? this.#banStrikes + 1 : 0;
      // 418 means an IP ban is already in force: wait far longer than asked.
      const waitMs = Number.isFinite(retryAfter) && retryAfter > 0
        ? retryAfter * 1000 * (banned ? 2 : 1)
        : banned
        ? Math.min(3_600_000, 120_000 * 2 ** (this.#banStrikes - 1))
        : 60_000;
      this.#notBefore = Math.max(this.#notBefore, answeredAt + waitMs);
      log.error("Binance answered {status} to {url}; no REST calls for {waitMs} ms", {
        status: response.status,
        url,
        waitMs,
      });
    }
    return { status: response.status, text, sentAt, receivedAt };
  }
}

export interface SymbolCheck {
  /** Configured symbols that Binance does not list. */
  readonly unknown: string[];
  /** Listed but not trading (halted, delisted…), with their status. */
  readonly notTrading: Array<{ symbol: string; status: string }>;
  /** The per-minute `REQUEST_WEIGHT` limit from `rateLimits`, when listed. */
  readonly weightLimit?: number;
}

interface RateLimit {
  rateLimitType?: unknown;
  interval?: unknown;
  intervalNum?: unknown;
  limit?: unknown;
}

/** The per-minute request-weight limit among `rateLimits` (a 1-minute window only). */
export function weightLimitOf(rateLimits: unknown): number | undefined {
  if (!Array.isArray(rateLimits)) return undefined;
  const entry = (rateLimits as RateLimit[]).find((r) =>
    r?.rateLimitType === "REQUEST_WEIGHT" && r.interval === "MINUTE" && r.intervalNum === 1
  );
  const limit = entry?.limit;
  return typeof limit === "number" && limit > 0 ? limit : undefined;
}

/** What `exchangeInfo` lists: every symbol with its status, and the weight limit. */
export interface ExchangeInfo {
  /** In exchangeInfo's order; a symbol without a status counts as `TRADING`. */
  readonly listed: ReadonlyArray<{ readonly symbol: string; readonly status: string }>;
  /** The per-minute `REQUEST_WEIGHT` limit from `rateLimits`, when listed. */
  readonly weightLimit?: number;
}

/** Reads `exchangeInfo` (weight 20); throws RestError when it cannot ask or the answer is not JSON. */
export async function readExchangeInfo(
  options: {
    restUrl: string;
    market: Market;
    limiter: RestLimiter;
    signal?: AbortSignal;
    /** Called when the answer's head has come (its body, megabytes on spot, may take longer). */
    onAnswer?: () => void;
  },
): Promise<ExchangeInfo> {
  const url = `${options.restUrl}${restPaths(options.market).exchangeInfo}`;
  const { status, text } = await options.limiter.get(url, {
    weight: 20,
    signal: options.signal,
    onAnswer: options.onAnswer,
  });
  if (status !== 200) throw new RestError(`${url} answered HTTP ${status}`, status);
  let info: { symbols?: Array<{ symbol?: unknown; status?: unknown }>; rateLimits?: unknown };
  try {
    info = JSON.parse(text);
  } catch {
    throw new RestError(`${url} did not answer JSON`);
  }
  // A listing that is not one is a failed read (the current set is kept), never an empty market.
  if (typeof info !== "object" || info === null || !Array.isArray(info.symbols)) {
    throw new RestError(`${url} answered JSON without a symbols list`);
  }
  if (info.symbols.length === 0) throw new RestError(`${url} listed no symbol`);
  const bad = info.symbols.find((s) => typeof s?.symbol !== "string" || s.symbol === "");
  if (bad !== undefined) {
    throw new RestError(`${url} listed an entry without a symbol: ${JSON.stringify(bad)}`);
  }
  const listed = info.symbols
    .map((s) => ({ symbol: String(s.symbol), status: String(s.status ?? "TRADING") }));
  const weightLimit = weightLimitOf(info.rateLimits);
  return weightLimit === undefined ? { listed } : { listed, weightLimit };
}

/** Checks configured symbols against `exchangeInfo`; throws RestError when it cannot ask. */
export async function checkSymbols(
  symbols: readonly string[],
  options: { restUrl: string; market: Market; limiter: RestLimiter; signal?: AbortSignal },
): Promise<SymbolCheck> {
  const info = await readExchangeInfo(options);
  const listed = new Map(info.listed.map((s) => [s.symbol, s.status]));
  const weightLimit = info.weightLimit;
  const unknown = symbols.filter((s) => !listed.has(s));
  const notTrading = symbols
    .filter((s) => listed.has(s) && listed.get(s) !== "TRADING")
    .map((symbol) => ({ symbol, status: listed.get(symbol)! }));
  return weightLimit === undefined ? { unknown, notTrading } : { unknown, notTrading, weightLimit };
}
