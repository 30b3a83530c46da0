/**
 * Binance stream names and endpoint URLs, per market. Pure: no I/O.
 *
 * A stream name is `<symbol lower>@<stream type>`, e.g. `btcusdt@depth20@100ms`
 * (partial book) or `btcusdt@depth@100ms` (diff depth). The stream type is the
 * part the archive partitions by.
 *
 * Only the names Binance publishes get data (BINANCE.md, "Stream names"): a
 * market's default speed carries no suffix (spot 1000 ms is `depth20`, USD-M
 * 250 ms is `depth20`); every other speed is `@<ms>ms`. A name Binance does
 * not publish is acknowledged and then silent, which looks like a dead link.
 */

import type { DepthLevel, Market, StreamKind } from "../config_types.ts";

export interface StreamSpec {
  /** Full Binance stream name, e.g. `btcusdt@depth20@100ms`. */
  readonly name: string;
  /** Upper-case symbol, e.g. `BTCUSDT`. */
  readonly symbol: string;
  /** Stream name without the symbol, e.g. `depth20@100ms`. */
  readonly type: string;
}

/** The update speed each market publishes without a suffix. */
export const DEFAULT_SPEED_MS: Readonly<Record<Market, number>> = { spot: 1000, usdm: 250 };

/**
 * How often a depth stream type pushes, ms: its `@<ms>ms` suffix, else the
 * market's default speed (spot `depth20` 1000 ms, USD-M `depth20` 250 ms).
 */
export function updateSpeedMs(market: Market, streamType: string): number {
  const match = /@(\d+)ms$/.exec(streamType);
  return match ? Number(match[1]) : DEFAULT_SPEED_MS[market] ?? DEFAULT_SPEED_MS.spot;
}

/** The published depth stream type, e.g. `depth20@100ms`, or `depth20` at the market's default speed. */
export function depthStreamType(
  market: Market,
  options: { depthLevel: DepthLevel; updateSpeedMs: number },
): string {
  const depth = options.depthLevel === "full" ? "depth" : `depth${options.depthLevel}`;
  return options.updateSpeedMs === DEFAULT_SPEED_MS[market]
    ? depth
    : `${depth}@${options.updateSpeedMs}ms`;
}

/** One stream per symbol, in the order the symbols were configured. */
export function depthStreams(
  symbols: readonly string[],
  options: { market: Market; depthLevel: DepthLevel; updateSpeedMs: number },
): StreamSpec[] {
  const type = depthStreamType(options.market, options);
  return symbols.map((symbol) => ({ name: `${symbol.toLowerCase()}@${type}`, symbol, type }));
}

/**
 * The stream names recorded for one symbol, one per `STREAMS` kind, in that
 * order: depth as configured, `<sym>@trade`, `<sym>@aggTrade`, `<sym>@bookTicker`
 * (BINANCE.md; none of them takes a speed suffix).
 */
export function symbolStreams(
  symbol: string,
  options: {
    market: Market;
    depthLevel: DepthLevel;
    updateSpeedMs: number;
    streamKinds?: readonly StreamKind[];
  },
): string[] {
  const lower = symbol.toLowerCase();
  return (options.streamKinds ?? ["depth"]).map((kind) =>
    kind === "depth" ? `${lower}@${depthStreamType(options.market, options)}` : `${lower}@${kind}`
  );
}

/**
 * The WebSocket base a stream is served on. USD-M splits its streams by
 * category since 2026 (BINANCE.md, Endpoints): depth and book ticker on
 * `/public`, aggTrade (regular market data) on `/market`; a stream on the
 * wrong base gets no data. `wsUrl` is the configured base (USD-M's default
 * ends in `/public`); one that does not is used for every stream as it is.
 */
export function streamBaseUrl(wsUrl: string, market: Market, stream: string): string {
  if (market !== "usdm" || !stream.endsWith("@aggTrade")) return wsUrl;
  return wsUrl.replace(/\/public\/*$/, "/market");
}

/**
 * Stream types that push when the market moves, not on a clock: trades and
 * the book ticker. A quiet symbol's stream legitimately sends nothing for minutes.
 */
const EVENT_DRIVEN_TYPES = new Set(["trade", "aggTrade", "bookTicker"]);

export function isEventDriven(streamType: string): boolean {
  return EVENT_DRIVEN_TYPES.has(streamType);
}

/** Whether a connection carrying `names` may be silent for minutes: every stream is event-driven. */
export function mayBeQuiet(names: readonly string[]): boolean {
  return names.length > 0 &&
    names.every((name) => isEventDriven(parseStreamName(name)?.type ?? ""));
}

/** Splits a stream name into symbol and type; undefined when it has no `@`. */
export function parseStreamName(name: string): StreamSpec | undefined {
  const at = name.indexOf("@");
  if (at <= 0 || at === name.length - 1) return undefined;
  return { name, symbol: name.slice(0, at).toUpperCase(), type: name.slice(at + 1) };
}

/** The combined-stream URL for a set of streams under a base WebSocket URL. */
export function combinedStreamUrl(baseUrl: string, streams: readonly string[]): string {
  return `${baseUrl.replace(/\/+$/, "")}/stream?streams=${streams.join("/")}`;
}

/**
 * Longest connection URL the collector opens. Binance has been seen refusing
 * URLs of about 8 KB (BINANCE.md, "Connection rules"); half of that leaves room.
 */
export const MAX_URL_LENGTH = 4000;
/** Stream names per live `SUBSCRIBE` message (~5 KB of JSON). */
export const NAMES_PER_SUBSCRIBE = 200;
/**
 * Least ms between two `SUBSCRIBE` messages on one connection: Binance allows
 * 5 incoming messages a second on spot and 10 on USD-M, pongs included, so
 * keep to 3 and 6: a message delayed on the way arrives closer to the next
 * one than it was sent, and a pong may fall in the same second.
 */
export const SUBSCRIBE_INTERVAL_MS: Readonly<Record<Market, number>> = { spot: 334, usdm: 167 };

/** How one connection asks for its streams: some in the URL, the rest by `SUBSCRIBE`. */
export interface ConnectionPlan {
  readonly url: string;
  /** Streams named in the URL (at least one). */
  readonly inUrl: readonly string[];
  /** The rest, one `SUBSCRIBE` message per entry. */
  readonly subscribe: readonly (readonly string[])[];
}

/**
 * The combined-stream URL for as many of `streams` as fit in `maxUrlLength`
 * characters (always at least one), the others in `SUBSCRIBE` batches.
 * `timeUnit: "us"` asks spot for event times in microseconds.
 */
export function planConnection(
  baseUrl: string,
  streams: readonly string[],
  options: { maxUrlLength?: number; timeUnit?: "ms" | "us"; namesPerSubscribe?: number } = {},
): ConnectionPlan {
  const max = options.maxUrlLength ?? MAX_URL_LENGTH;
  const suffix = options.timeUnit === "us" ? "&timeUnit=MICROSECOND" : "";
  const head = combinedStreamUrl(baseUrl, []);
  let length = head.length + suffix.length;
  let fit = 0;
  while (fit < streams.length) {
    const add = streams[fit].length + (fit === 0 ? 0 : 1);
    if (fit > 0 && length + add > max) break;
    length += add;
    fit++;
  }
  const inUrl = streams.slice(0, fit);
  return {
    url: `${combinedStreamUrl(baseUrl, inUrl)}${suffix}`,
    inUrl,
    subscribe: groupStreams(streams.slice(fit), options.namesPerSubscribe ?? NAMES_PER_SUBSCRIBE),
  };
}

/** Splits streams into groups of at most `perConnection`, one group per connection. */
export function groupStreams<T>(streams: readonly T[], perConnection: number): T[][] {
  const groups: T[][] = [];
  for (let i = 0; i < streams.length; i += perConnection) {
    groups.push(streams.slice(i, i + perConnection));
  }
  return groups;
}

/** REST paths per market. */
export function restPaths(
  market: Market,
): { ping: string; depth: string; exchangeInfo: string; time: string } {
  const base = market === "spot" ? "/api/v3" : "/fapi/v1";
  return {
    ping: `${base}/ping`,
    depth: `${base}/depth`,
    exchangeInfo: `${base}/exchangeInfo`,
    time: `${base}/time`,
  };
}
