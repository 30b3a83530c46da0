import assert from "node:assert/strict";
import {
  combinedStreamUrl,
  depthStreams,
  groupStreams,
  MAX_URL_LENGTH,
  mayBeQuiet,
  parseStreamName,
  planConnection,
  streamBaseUrl,
  SUBSCRIBE_INTERVAL_MS,
  symbolStreams,
} from "../src/binance/streams.ts";
import { parseConfig } from "../src/config.ts";
import type { Market } from "../src/config_types.ts";

Deno.test("depthStreams names partial-book streams from DEPTH_LEVEL and UPDATE_SPEED_MS", () => {
  const streams = depthStreams(["BTCUSDT", "ETHUSDT"], {
    market: "spot",
    depthLevel: 20,
    updateSpeedMs: 100,
  });
  assert.deepEqual(streams.map((s) => s.name), ["btcusdt@depth20@100ms", "ethusdt@depth20@100ms"]);
  assert.equal(streams[0].type, "depth20@100ms");
  assert.equal(streams[0].symbol, "BTCUSDT");
});

Deno.test("depthStreams names the diff stream in full mode, without a suffix at spot's 1000 ms", () => {
  const [s] = depthStreams(["BNBUSDT"], {
    market: "spot",
    depthLevel: "full",
    updateSpeedMs: 1000,
  });
  assert.equal(s.name, "bnbusdt@depth");
  assert.equal(s.type, "depth");
});

/**
 * BINANCE.md, "Stream names": the only names Binance publishes, written out
 * here from the table (not computed by the code under test).
 */
const PUBLISHED: Record<Market, Record<string, Record<number, string>>> = {
  spot: {
    "5": { 1000: "btcusdt@depth5", 100: "btcusdt@depth5@100ms" },
    "10": { 1000: "btcusdt@depth10", 100: "btcusdt@depth10@100ms" },
    "20": { 1000: "btcusdt@depth20", 100: "btcusdt@depth20@100ms" },
    full: { 1000: "btcusdt@depth", 100: "btcusdt@depth@100ms" },
  },
  usdm: {
    "5": { 250: "btcusdt@depth5", 500: "btcusdt@depth5@500ms", 100: "btcusdt@depth5@100ms" },
    "10": { 250: "btcusdt@depth10", 500: "btcusdt@depth10@500ms", 100: "btcusdt@depth10@100ms" },
    "20": { 250: "btcusdt@depth20", 500: "btcusdt@depth20@500ms", 100: "btcusdt@depth20@100ms" },
    full: { 250: "btcusdt@depth", 500: "btcusdt@depth@500ms", 100: "btcusdt@depth@100ms" },
  },
};

Deno.test("every (MARKET, DEPTH_LEVEL, UPDATE_SPEED_MS) the configuration accepts is a name Binance publishes (BINANCE.md, Stream names)", () => {
  let accepted = 0;
  for (const market of ["spot", "usdm"] as const) {
    for (const depth of ["5", "10", "20", "full"]) {
      // Every speed either market documents, plus ones neither does.
      for (const speed of [0, 100, 250, 500, 1000, 2000]) {
        let config;
        try {
          config = parseConfig({ MARKET: market, DEPTH_LEVEL: depth, UPDATE_SPEED_MS: `${speed}` });
        } catch {
          assert.equal(
            PUBLISHED[market][depth][speed],
            undefined,
            `${market} ${depth} ${speed} ms is published but the configuration refuses it`,
          );
          continue;
        }
        accepted++;
        const [spec] = depthStreams(["BTCUSDT"], config);
        assert.equal(spec.name, PUBLISHED[market][depth][speed], `${market} ${depth} ${speed} ms`);
        // The partition value is the published name without the symbol.
        assert.equal(`btcusdt@${spec.type}`, spec.name);
      }
    }
  }
  // spot: 4 levels × 2 speeds; USD-M: 4 levels × 3 speeds.
  assert.equal(accepted, 20);
});

Deno.test("parseStreamName splits symbol and type and rejects names without both", () => {
  assert.deepEqual(parseStreamName("ethusdt_210625@depth@100ms"), {
    name: "ethusdt_210625@depth@100ms",
    symbol: "ETHUSDT_210625",
    type: "depth@100ms",
  });
  assert.equal(parseStreamName("nostream"), undefined);
  assert.equal(parseStreamName("@depth"), undefined);
});

Deno.test("combinedStreamUrl joins streams under the base URL's /stream path", () => {
  assert.equal(
    combinedStreamUrl("wss://fstream.binance.com/public/", ["a@depth", "b@depth"]),
    "wss://fstream.binance.com/public/stream?streams=a@depth/b@depth",
  );
});

Deno.test("groupStreams spreads streams over connections of at most N", () => {
  const groups = groupStreams([1, 2, 3, 4, 5], 2);
  assert.deepEqual(groups, [[1, 2], [3, 4], [5]]);
  assert.deepEqual(groupStreams([], 2), []);
});

Deno.test("planConnection keeps the URL within the bound and puts the rest in SUBSCRIBE batches (BINANCE.md, Long URLs)", () => {
  const names = Array.from({ length: 1000 }, (_, i) => `sym${i}usdt@depth20@100ms`);
  const base = "wss://stream.binance.com:9443";
  const plan = planConnection(base, names);
  assert.ok(plan.url.length <= MAX_URL_LENGTH, `${plan.url.length} characters`);
  assert.equal(MAX_URL_LENGTH, 4000);
  // As many as fit: one more name would cross the bound.
  assert.ok(plan.url.length + 1 + names[plan.inUrl.length].length > MAX_URL_LENGTH);
  assert.equal(plan.url, `${base}/stream?streams=${plan.inUrl.join("/")}`);
  assert.deepEqual([...plan.inUrl, ...plan.subscribe.flat()], names);
  assert.ok(plan.subscribe.every((batch) => batch.length > 0 && batch.length <= 200));

  const few = planConnection(base, names.slice(0, 3), { timeUnit: "us" });
  assert.equal(
    few.url,
    `${base}/stream?streams=${names.slice(0, 3).join("/")}&timeUnit=MICROSECOND`,
  );
  assert.deepEqual(few.subscribe, []);
  // One name always goes in the URL, however long.
  assert.deepEqual(planConnection(base, ["x".repeat(5000)]).inUrl, ["x".repeat(5000)]);
});

Deno.test("symbolStreams names one stream per STREAMS kind; USD-M aggTrade goes to /market (BINANCE.md, Endpoints)", () => {
  const spot = { market: "spot", depthLevel: 20, updateSpeedMs: 100 } as const;
  assert.deepEqual(symbolStreams("BTCUSDT", spot), ["btcusdt@depth20@100ms"]);
  assert.deepEqual(
    symbolStreams("BTCUSDT", {
      ...spot,
      streamKinds: ["depth", "trade", "aggTrade", "bookTicker"],
    }),
    ["btcusdt@depth20@100ms", "btcusdt@trade", "btcusdt@aggTrade", "btcusdt@bookTicker"],
  );
  const usdm = "wss://fstream.binance.com/public";
  assert.equal(streamBaseUrl(usdm, "usdm", "btcusdt@aggTrade"), "wss://fstream.binance.com/market");
  assert.equal(streamBaseUrl(usdm, "usdm", "btcusdt@bookTicker"), usdm);
  assert.equal(streamBaseUrl(usdm, "usdm", "btcusdt@depth"), usdm);
  const spotUrl = "wss://stream.binance.com:9443";
  assert.equal(streamBaseUrl(spotUrl, "spot", "btcusdt@aggTrade"), spotUrl);
});

Deno.test("a connection may be quiet only when every stream is a trade or book ticker stream", () => {
  assert.equal(mayBeQuiet(["btcusdt@aggTrade", "ethusdt@aggTrade"]), true);
  assert.equal(mayBeQuiet(["btcusdt@trade", "btcusdt@bookTicker"]), true);
  assert.equal(mayBeQuiet(["btcusdt@trade", "btcusdt@depth@100ms"]), false);
  assert.equal(mayBeQuiet(["btcusdt@depth20@100ms"]), false);
  assert.equal(mayBeQuiet([]), false);
});

Deno.test("SUBSCRIBE spacing keeps two messages a second free below Binance's limit (a pong, an arrival bunched by the network)", () => {
  // BINANCE.md, "Connection rules": 5 incoming messages a second on spot, 10 on USD-M.
  const limits = { spot: 5, usdm: 10 } as const;
  for (const market of ["spot", "usdm"] as const) {
    const perSecond = Math.ceil(1000 / SUBSCRIBE_INTERVAL_MS[market]);
    assert.ok(perSecond <= limits[market] - 2, `${market}: ${perSecond} a second`);
  }
});
