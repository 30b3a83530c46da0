/**
 * The loads the benchmark offers, and the one thing both the exchange process
 * and the clients must agree on: which streams a load has and how they are
 * grouped into combined-stream connections.
 */

import { partialDepthFeed } from "../tests/support/fake_exchange.ts";
import type { FakeStreamFeed } from "../tests/support/fake_exchange.ts";

export interface Load {
  /** Short label for the table, e.g. `50 × 400/s`. */
  readonly label: string;
  readonly streams: number;
  /** Messages per second per stream. */
  readonly rate: number;
  /** Streams per WebSocket connection (the collector's STREAMS_PER_CONNECTION). */
  readonly perConnection: number;
}

/** 16 levels a side gives a combined frame of ~1.1 KB, the size the targets are stated for. */
export const BOOK_LEVELS = 16;

/** The stream type every load uses: a partial book at 100 ms (the fake ignores the speed). */
export const STREAM_TYPE = "depth20@100ms";

export const LOADS: readonly Load[] = [
  { label: "10 × 10/s", streams: 10, rate: 10, perConnection: 200 },
  { label: "50 × 400/s", streams: 50, rate: 400, perConnection: 200 },
  { label: "1,500 × 10/s", streams: 1500, rate: 10, perConnection: 200 },
];

/** The 20,000 msg/s load: the CPU-ratio target, the S3-down run and the profile use it. */
export const HEAVY_LOAD: Load = LOADS[1];

/** Made-up symbols the collector's SYMBOL check accepts (`[A-Z0-9]{2,30}`): B0001USDT, … */
export function symbolsFor(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `B${String(i + 1).padStart(4, "0")}USDT`);
}

export function streamNames(count: number): string[] {
  return symbolsFor(count).map((symbol) => `${symbol.toLowerCase()}@${STREAM_TYPE}`);
}

/** The combined-stream URLs a client opens, as the collector builds them. */
export function combinedUrls(wsUrl: string, load: Pick<Load, "streams" | "perConnection">) {
  const names = streamNames(load.streams);
  const urls: string[] = [];
  for (let i = 0; i < names.length; i += load.perConnection) {
    urls.push(`${wsUrl}/stream?streams=${names.slice(i, i + load.perConnection).join("/")}`);
  }
  return urls;
}

export function connectionsOf(load: Pick<Load, "streams" | "perConnection">): number {
  return Math.ceil(load.streams / load.perConnection);
}

/**
 * A partial-book feed whose stream can be stopped: the fake exchange reads
 * `count` on every tick, so setting it to what was produced silences the
 * stream without closing any socket.
 */
export function stoppableFeed(rate: number, startId: number): FakeStreamFeed {
  return partialDepthFeed({ rate, levels: BOOK_LEVELS, startId });
}
