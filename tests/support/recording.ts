/**
 * Records the two small archives the reader tests use (DuckDB queries of the
 * README, `book`), with the real collector against the fake exchange:
 *
 * - diff mode: BTCUSDT and ETHUSDT replaying the real 2024-08-08 captures at
 *   their own 100 ms pace for 40 s, a REST snapshot every 10 s (usually five
 *   a symbol: the recording stops just after the first one past the replay); the exchange
 *   keeps each symbol's true book from the capture's real REST snapshot, so
 *   every stored snapshot agrees with the diffs;
 * - partial-book mode: `depth20@100ms` of both symbols for a few seconds, on
 *   spot and, from a USD-M fake exchange, on USD-M (whose partial books have
 *   the diffs' shape: `U`, `u`, `pu`, `b`, `a`).
 *
 * The collectors run at once (about 45 s together). The exchanges stay
 * available afterwards for their ledgers: what they wrote, and the REST
 * snapshots they served.
 */

import {
  FakeExchange,
  loadFixturePayloads,
  partialDepthFeed,
  replayFeed,
} from "./fake_exchange.ts";
import { spawnCollector } from "./collector.ts";
import { waitFor } from "./wait.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url);
export const SYMBOLS = ["BTCUSDT", "ETHUSDT"] as const;
export const DIFF_SECONDS = 40;
export const DIFF_RATE = 10;
export const diffStream = (symbol: string) => `${symbol.toLowerCase()}@depth@100ms`;
export const partialStream = (symbol: string) => `${symbol.toLowerCase()}@depth20@100ms`;

export interface Recording {
  readonly exchange: FakeExchange;
  /** DATA_DIRs: the archives are under `<dir>/archive`. */
  readonly diffDir: string;
  readonly partialDir: string;
  /** The USD-M partial-book archive and the exchange that sent it. */
  readonly usdm: { readonly exchange: FakeExchange; readonly partialDir: string };
  /** The fixture's diff payloads and REST snapshot per symbol (what the exchange replayed). */
  readonly fixtures: Readonly<Record<string, { diffs: string[]; snapshot: string }>>;
}

export async function fixtureOf(symbol: string): Promise<{ diffs: string[]; snapshot: string }> {
  const lower = symbol.toLowerCase();
  return {
    diffs: await loadFixturePayloads(new URL(`spot_diff_${lower}_2024-08-08.ndjson.gz`, FIXTURES)),
    snapshot: (await Deno.readTextFile(
      new URL(`spot_snapshot_${lower}_2024-08-08.ndjson`, FIXTURES),
    )).trim(),
  };
}

/** Depth requests the exchange answered for `symbol`. */
export function snapshotRequests(exchange: FakeExchange, symbol: string): number {
  return exchange.restRequests.filter((r) =>
    r.path === "/api/v3/depth" && new URLSearchParams(r.query).get("symbol") === symbol
  ).length;
}

export async function record(root: string): Promise<Recording> {
  const exchange = await FakeExchange.start();
  const usdmExchange = await FakeExchange.start({ market: "usdm" });
  const fixtures: Record<string, { diffs: string[]; snapshot: string }> = {};
  for (const symbol of SYMBOLS) {
    fixtures[symbol] = await fixtureOf(symbol);
    exchange.keepBook(symbol, fixtures[symbol].snapshot);
    exchange.setFeed(partialStream(symbol), partialDepthFeed({ rate: 10 }));
    usdmExchange.setFeed(
      partialStream(symbol),
      partialDepthFeed({ rate: 10, market: "usdm", symbol }),
    );
  }
  const common = {
    SYMBOL: SYMBOLS.join(","),
    BINANCE_WS_URL: exchange.wsUrl,
    BINANCE_REST_URL: exchange.restUrl,
    BATCH_SECONDS: "2",
    METRICS_ADDR: "off",
    INSTANCE_ID: "test-box",
    // The replay ends before the recording does: that silence is not a stale link.
    STALE_AFTER_SECONDS: "300",
  };
  const diffDir = `${root}/diff/data`;
  const partialDir = `${root}/partial/data`;
  const diff = spawnCollector({
    ...common,
    DATA_DIR: diffDir,
    DEPTH_LEVEL: "full",
    SNAPSHOT_INTERVAL_SECONDS: "10",
  });
  const partial = spawnCollector({ ...common, DATA_DIR: partialDir, DEPTH_LEVEL: "20" });
  const usdmPartialDir = `${root}/usdm-partial/data`;
  const usdmPartial = spawnCollector({
    ...common,
    MARKET: "usdm",
    BINANCE_WS_URL: `${usdmExchange.wsUrl}/public`,
    BINANCE_REST_URL: usdmExchange.restUrl,
    DATA_DIR: usdmPartialDir,
    DEPTH_LEVEL: "20",
    UPDATE_SPEED_MS: "100",
  });
  try {
    // The replay starts when the diff collector is connected, so all of it is recorded.
    await waitFor(
      () => exchange.connections.some((c) => c.streams.includes(diffStream(SYMBOLS[0]))),
      20_000,
      "the diff collector to connect",
    );
    for (const symbol of SYMBOLS) {
      exchange.setFeed(
        diffStream(symbol),
        replayFeed({
          rate: DIFF_RATE,
          payloads: fixtures[symbol].diffs.slice(0, DIFF_SECONDS * DIFF_RATE),
        }),
      );
    }
    // Partial books: a few seconds are plenty.
    await waitFor(
      () =>
        SYMBOLS.every((s) =>
          exchange.sentCountFor(partialStream(s)) >= 50 &&
          usdmExchange.sentCountFor(partialStream(s)) >= 50
        ),
      20_000,
      "partial books",
    );
    for (
      const [name, collector] of [["partial", partial], ["USD-M partial", usdmPartial]] as const
    ) {
      collector.kill("SIGTERM");
      const status = await collector.status;
      if (status.code !== 0) {
        throw new Error(`${name} collector exited ${status.code}: ${collector.stderr()}`);
      }
    }
    // Diffs: every replayed message sent, then stop just after the next snapshot
    // (0, 10, … 40 s), so no snapshot is in flight at SIGTERM.
    await waitFor(
      () => SYMBOLS.every((s) => exchange.producedCount(diffStream(s)) >= DIFF_SECONDS * DIFF_RATE),
      DIFF_SECONDS * 1000 + 30_000,
      "the replayed diffs",
    );
    const before = SYMBOLS.map((s) => snapshotRequests(exchange, s));
    await waitFor(
      () => SYMBOLS.every((s, i) => snapshotRequests(exchange, s) > before[i]),
      30_000,
      "the next snapshots",
    );
    await new Promise((resolve) => setTimeout(resolve, 1000));
    diff.kill("SIGTERM");
    const diffStatus = await diff.status;
    if (diffStatus.code !== 0) {
      throw new Error(`diff collector exited ${diffStatus.code}: ${diff.stderr()}`);
    }
  } catch (error) {
    // deno-lint-ignore no-console
    console.error(
      `partial collector:\n${partial.stderr()}\nUSD-M partial collector:\n${usdmPartial.stderr()}` +
        `\ndiff collector:\n${diff.stderr()}`,
    );
    await partial[Symbol.asyncDispose]();
    await usdmPartial[Symbol.asyncDispose]();
    await diff[Symbol.asyncDispose]();
    await exchange.close();
    await usdmExchange.close();
    throw error;
  }
  return {
    exchange,
    diffDir,
    partialDir,
    usdm: { exchange: usdmExchange, partialDir: usdmPartialDir },
    fixtures,
  };
}
