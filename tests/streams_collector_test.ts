/**
 * STREAMS=depth,trade,bookTicker (issue 16): each kind its own partition,
 * every message stored once and byte for byte (real trades and book-ticker
 * messages from a recording), trade-id gaps marked and judged by `verify`.
 */

import assert from "node:assert/strict";
import { parseKey } from "../src/archive/keys.ts";
import { rawData, readArchive, runCollector, spawnCollector } from "./support/collector.ts";
import { FakeExchange, partialDepthFeed, replayFeed } from "./support/fake_exchange.ts";
import { tempDir } from "./support/temp.ts";
import { waitFor } from "./support/wait.ts";

/** The exact `data` texts of one stream in the raw recording (`<ns> <frame>` per line). */
async function recorded(stream: string): Promise<string[]> {
  const text = await Deno.readTextFile(
    new URL("./fixtures/spot_recorded_raw_btcusdt_2024-08-08_head3000.txt", import.meta.url),
  );
  const head = `{"stream":"${stream}","data":`;
  return text.split("\n")
    .map((line) => line.slice(line.indexOf(" ") + 1))
    .filter((frame) => frame.startsWith(head))
    .map((frame) => frame.slice(head.length, -1));
}

Deno.test("STREAMS=depth,trade,bookTicker stores every message once, byte for byte, each kind in its own partition, and marks trade-id gaps", async () => {
  const trades = await recorded("btcusdt@trade");
  const tickers = (await recorded("btcusdt@bookTicker")).slice(0, 600);
  assert.equal(trades.length, 518, "the fixture's real trades");
  const tradeId = (payload: string) => (JSON.parse(payload) as { t: number }).t;
  // ETHUSDT's feed misses one trade: a gap the collector must mark.
  const missing = 100;
  const ethTrades = trades.filter((_, i) => i !== missing);

  await using exchange = await FakeExchange.start({ market: "spot" });
  const symbols = ["btcusdt", "ethusdt", "bnbusdt"];
  symbols.forEach((s, i) =>
    exchange.setFeed(`${s}@depth20@100ms`, partialDepthFeed({ rate: 20, startId: 1000 * (i + 1) }))
  );
  await using tmp = await tempDir();
  const env = {
    SYMBOL: symbols.join(","),
    STREAMS: "depth,trade,bookTicker",
    DEPTH_LEVEL: "20",
    UPDATE_SPEED_MS: "100",
    BINANCE_WS_URL: exchange.wsUrl,
    BINANCE_REST_URL: exchange.restUrl,
    DATA_DIR: tmp.path,
    BATCH_SECONDS: "2",
    METRICS_ADDR: "off",
  };
  await using proc = spawnCollector(env);
  await waitFor(
    () => symbols.every((s) => exchange.sentCountFor(`${s}@depth20@100ms`) >= 5),
    20_000,
    "depth flowing on every symbol",
  );
  // The trade and ticker feeds start once the collector listens: nothing is sent into the void.
  const feeds = new Map<string, string[]>([
    ["btcusdt@trade", trades],
    ["ethusdt@trade", ethTrades],
    ["bnbusdt@trade", trades.slice(0, 200)],
    ...symbols.map((s) => [`${s}@bookTicker`, tickers] as [string, string[]]),
  ]);
  for (const [stream, payloads] of feeds) {
    exchange.setFeed(stream, replayFeed({ rate: 400, payloads }));
  }
  await waitFor(
    () => [...feeds].every(([s, p]) => exchange.sentCountFor(s) === p.length),
    20_000,
    "every trade and ticker sent",
  );
  proc.kill("SIGTERM");
  assert.equal((await proc.status).code, 0, proc.stderr());

  const lines = await readArchive(`${tmp.path}/archive`);
  for (const [stream, payloads] of feeds) {
    const own = lines.filter((l) => l.value.stream === stream);
    const data = own.filter((l) => l.value.data !== undefined).map(rawData);
    assert.deepEqual(data, payloads, `${stream}: every message once, byte for byte, in order`);
    const kind = stream.slice(stream.indexOf("@") + 1);
    for (const line of own) assert.equal(parseKey(line.key)?.streamType, kind, line.key);
    const gaps = own.filter((l) => l.value.event === "gap");
    if (stream === "ethusdt@trade") {
      assert.deepEqual(gaps.map((g) => [g.value.expected, g.value.received]), [[
        tradeId(trades[missing]),
        tradeId(trades[missing + 1]),
      ]]);
    } else {
      assert.deepEqual(gaps, [], `${stream}: no gap`);
    }
  }

  // verify knows each kind's rule: the one break is found, and explained by its gap line.
  const verified = await runCollector(env, { args: ["verify", "--json"], timeoutMs: 30_000 });
  assert.equal(verified.code, 0, verified.stdout + verified.stderr);
  const report = JSON.parse(verified.stdout) as {
    streams: Array<{ stream: string; messages: number; breaks: number; duplicates: number }>;
  };
  const byStream = new Map(report.streams.map((s) => [s.stream, s]));
  for (const [stream, payloads] of feeds) {
    const s = byStream.get(stream);
    assert.ok(s, `verify did not see ${stream}`);
    assert.equal(s.messages, payloads.length, stream);
    assert.equal(s.breaks, stream === "ethusdt@trade" ? 1 : 0, stream);
    assert.equal(s.duplicates, 0, stream);
  }
});

Deno.test("USD-M STREAMS=depth,aggTrade,bookTicker: aggTrade on /market, depth and book ticker on /public", async () => {
  await using exchange = await FakeExchange.start({ market: "usdm" });
  // Shaped as BINANCE.md and Binance's USD-M docs show them; ids consecutive.
  const aggTrades = Array.from(
    { length: 50 },
    (_, i) =>
      `{"e":"aggTrade","E":${1795830418000 + i},"s":"BTCUSDT","a":${5933014 + i},"p":"61496.50",` +
      `"q":"0.010","f":${100 + 2 * i},"l":${101 + 2 * i},"T":${1795830417999 + i},"m":true}`,
  );
  const tickers = Array.from(
    { length: 50 },
    (_, i) =>
      `{"e":"bookTicker","u":${400900217 + 3 * i},"s":"BTCUSDT","b":"61496.40","B":"31.21",` +
      `"a":"61496.50","A":"40.66","T":${1795830417999 + i},"E":${1795830418000 + i}}`,
  );
  exchange.setFeed("btcusdt@depth20@100ms", partialDepthFeed({ rate: 20, market: "usdm" }));
  await using tmp = await tempDir();
  await using proc = spawnCollector({
    SYMBOL: "BTCUSDT",
    MARKET: "usdm",
    STREAMS: "depth,aggTrade,bookTicker",
    DEPTH_LEVEL: "20",
    UPDATE_SPEED_MS: "100",
    BINANCE_WS_URL: `${exchange.wsUrl}/public`,
    BINANCE_REST_URL: exchange.restUrl,
    DATA_DIR: tmp.path,
    METRICS_ADDR: "off",
  });
  await waitFor(() => exchange.sentCountFor("btcusdt@depth20@100ms") >= 5, 20_000, "depth");
  await waitFor(() => exchange.openCount >= 2, 20_000, "the /market connection");
  exchange.setFeed("btcusdt@aggTrade", replayFeed({ rate: 200, payloads: aggTrades }));
  exchange.setFeed("btcusdt@bookTicker", replayFeed({ rate: 200, payloads: tickers }));
  await waitFor(
    () =>
      exchange.sentCountFor("btcusdt@aggTrade") === 50 &&
      exchange.sentCountFor("btcusdt@bookTicker") === 50,
    20_000,
    "aggTrade and book ticker delivered",
  );
  proc.kill("SIGTERM");
  assert.equal((await proc.status).code, 0, proc.stderr());

  const paths = exchange.connections.map((c) => [new URL(c.url).pathname, [...c.streams].sort()]);
  assert.deepEqual(paths.sort(), [
    ["/market/stream", ["btcusdt@aggTrade"]],
    ["/public/stream", ["btcusdt@bookTicker", "btcusdt@depth20@100ms"]],
  ]);
  const lines = await readArchive(`${tmp.path}/archive`);
  const stored = (stream: string) =>
    lines.filter((l) => l.value.stream === stream && l.value.data !== undefined).map(rawData);
  assert.deepEqual(stored("btcusdt@aggTrade"), aggTrades);
  assert.deepEqual(stored("btcusdt@bookTicker"), tickers);
  // USD-M partial books in Binance's shape, every fifth push repeating the last: each stored once.
  const depth = "btcusdt@depth20@100ms";
  const head = `{"stream":"${depth}","data":`;
  const sentDepth = exchange.sentFor(depth).map((f) => f.text.slice(head.length, -1));
  assert.ok(sentDepth.length >= 5);
  assert.deepEqual(stored(depth), sentDepth);
  assert.equal(lines.filter((l) => l.value.event === "gap").length, 0);
});
