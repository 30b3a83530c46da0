import assert from "node:assert/strict";
import {
  checkSymbols,
  depthWeight,
  readExchangeInfo,
  RestError,
  RestLimiter,
  weightLimitOf,
} from "../src/binance/rest.ts";
import { Snapshotter } from "../src/binance/snapshots.ts";
import { diffDepthFeed, FakeExchange } from "./support/fake_exchange.ts";

function fakeFetch(
  responses: Array<{ status: number; headers?: Record<string, string>; body?: string }>,
) {
  const calls: string[] = [];
  const impl = (input: string | URL | Request) => {
    calls.push(String(input));
    const next = responses.shift() ?? { status: 200 };
    return Promise.resolve(
      new Response(next.body ?? "{}", { status: next.status, headers: next.headers }),
    );
  };
  return { calls, fetch: impl as typeof fetch };
}

Deno.test("depthWeight follows Binance's weight table per market", () => {
  assert.equal(depthWeight("spot", 100), 5);
  assert.equal(depthWeight("spot", 1000), 50);
  assert.equal(depthWeight("spot", 5000), 250);
  assert.equal(depthWeight("usdm", 50), 2);
  assert.equal(depthWeight("usdm", 1000), 20);
});

Deno.test("RestLimiter spaces calls by weight within half the minute budget", async () => {
  const now = 1_000_000;
  const { fetch } = fakeFetch([{ status: 200 }]);
  const limiter = new RestLimiter({ market: "spot", fetch, now: () => now, monotonic: () => now });
  await limiter.get("http://x/a", { weight: 50 });
  // 50 of a 3000-per-minute budget: one such call per second.
  assert.equal(limiter.nextCallAt, now + 1000);
});

Deno.test("RestLimiter honours Retry-After on 429 and waits far longer after a 418", async () => {
  let now = 0;
  const { fetch } = fakeFetch([
    { status: 429, headers: { "retry-after": "7" } },
    { status: 418, headers: { "retry-after": "30" } },
    { status: 418 },
  ]);
  const limiter = new RestLimiter({ market: "spot", fetch, now: () => now, monotonic: () => now });
  assert.equal((await limiter.get("http://x/a", { weight: 1 })).status, 429);
  assert.equal(limiter.nextCallAt, 7000);
  now = 7000;
  assert.equal((await limiter.get("http://x/a", { weight: 1 })).status, 418);
  assert.equal(limiter.nextCallAt, 7000 + 60_000); // twice what it asked
  now = 67_000;
  await limiter.get("http://x/a", { weight: 1 });
  assert.ok(limiter.nextCallAt >= 67_000 + 240_000, "a second ban waits longer still");
});

Deno.test("RestLimiter pauses until the next minute when the used weight nears the limit", async () => {
  const now = 60_000 * 10 + 15_000;
  const { fetch } = fakeFetch([{ status: 200, headers: { "x-mbx-used-weight-1m": "5500" } }]);
  // The window is the wall clock's minute; the wait is counted on the monotonic clock.
  const limiter = new RestLimiter({ market: "spot", fetch, now: () => now, monotonic: () => 500 });
  await limiter.get("http://x/a", { weight: 1 });
  assert.equal(limiter.nextCallAt, 500 + 45_000);
});

Deno.test("checkSymbols reports unknown and non-trading symbols", async () => {
  const body = JSON.stringify({
    symbols: [{ symbol: "BTCUSDT", status: "TRADING" }, { symbol: "LUNAUSDT", status: "BREAK" }],
  });
  const { fetch, calls } = fakeFetch([{ status: 200, body }]);
  const limiter = new RestLimiter({ market: "spot", fetch });
  const result = await checkSymbols(["BTCUSDT", "LUNAUSDT", "NOPEUSDT"], {
    restUrl: "http://x",
    market: "spot",
    limiter,
  });
  assert.deepEqual(result, {
    unknown: ["NOPEUSDT"],
    notTrading: [{ symbol: "LUNAUSDT", status: "BREAK" }],
  });
  assert.deepEqual(calls, ["http://x/api/v3/exchangeInfo"]);
});

Deno.test("checkSymbols reads the per-minute request-weight limit from rateLimits (BINANCE.md, REST limits)", async () => {
  const body = JSON.stringify({
    rateLimits: [
      { rateLimitType: "RAW_REQUESTS", interval: "MINUTE", intervalNum: 5, limit: 61000 },
      { rateLimitType: "REQUEST_WEIGHT", interval: "MINUTE", intervalNum: 1, limit: 1200 },
    ],
    symbols: [{ symbol: "BTCUSDT", status: "TRADING" }],
  });
  const { fetch } = fakeFetch([{ status: 200, body }]);
  const limiter = new RestLimiter({ market: "spot", fetch });
  const result = await checkSymbols(["BTCUSDT"], { restUrl: "http://x", market: "spot", limiter });
  assert.equal(result.weightLimit, 1200);
  assert.equal(weightLimitOf(undefined), undefined);
  assert.equal(
    weightLimitOf([{
      rateLimitType: "REQUEST_WEIGHT",
      interval: "SECOND",
      intervalNum: 10,
      limit: 5,
    }]),
    undefined,
  );
});

Deno.test("RestLimiter falls back to 6000 / 2400 and spaces calls by the limit exchangeInfo gives", async () => {
  const now = 1_000_000;
  assert.equal(new RestLimiter({ market: "spot" }).weightLimit, 6000);
  assert.equal(new RestLimiter({ market: "usdm" }).weightLimit, 2400);
  const { fetch } = fakeFetch([{ status: 200 }]);
  const limiter = new RestLimiter({ market: "spot", fetch, now: () => now, monotonic: () => now });
  limiter.setWeightLimit(1200);
  assert.equal(limiter.weightLimit, 1200);
  await limiter.get("http://x/a", { weight: 50 });
  // 50 of a 600-per-minute budget (half of 1200): one such call per 5 s.
  assert.equal(limiter.nextCallAt, now + 5000);
});

Deno.test("snapshots survive 429 answers: they are retried after Retry-After and stored exactly", async () => {
  await using exchange = await FakeExchange.start();
  exchange.setFeed("btcusdt@depth@100ms", diffDepthFeed({ rate: 20, symbol: "BTCUSDT" }));
  exchange.failRest(1, 429, { "retry-after": "1" });
  const stop = new AbortController();
  const got: Array<{ symbol: string; text: string }> = [];
  const snapshotter = new Snapshotter({
    restUrl: exchange.restUrl,
    market: "spot",
    limit: 100,
    intervalMs: 60_000,
    retryMs: 100,
    limiter: new RestLimiter({ market: "spot" }),
    nowMicros: () => Date.now() * 1000,
    signal: stop.signal,
    onSnapshot: (symbol, text) => got.push({ symbol, text }),
  });
  snapshotter.request("BTCUSDT", "test");
  const until = Date.now() + 5000;
  while (got.length === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  stop.abort();
  await snapshotter.done;
  assert.equal(got.length, 1);
  assert.equal(got[0].symbol, "BTCUSDT");
  assert.equal(typeof JSON.parse(got[0].text).lastUpdateId, "number");
  const depthCalls = exchange.restRequests.filter((r) => r.path === "/api/v3/depth");
  assert.equal(depthCalls.length, 2, "one refused, one answered");
  assert.ok(depthCalls[1].at - depthCalls[0].at >= 900, "the retry waited for Retry-After");
});

Deno.test("RestLimiter waits on the monotonic clock: a wall clock stepped back stalls nothing", async () => {
  let wall = 1_000_000;
  const { fetch } = fakeFetch([{ status: 200 }, { status: 200 }]);
  const limiter = new RestLimiter({ market: "spot", fetch, now: () => wall });
  await limiter.get("http://x/a", { weight: 50 }); // one call a second
  wall -= 3_600_000; // NTP or a person sets the clock back an hour
  const started = performance.now();
  await limiter.get("http://x/a", { weight: 50 });
  const waited = performance.now() - started;
  assert.ok(waited < 1500, `the second call waited ${waited} ms`);
});

Deno.test("an exchangeInfo answer without a usable symbols list is a failed read, never an empty market", async () => {
  for (
    const body of [
      "{}",
      "[]",
      '{"code":-1000,"msg":"An unknown error occured while processing the request."}',
      '{"symbols":[]}',
      '{"symbols":[{"sym":"BTCUSDT"}]}',
      '{"symbols":[{"symbol":"BTCUSDT"},{"symbol":""}]}',
      '{"symbols":{"BTCUSDT":{}}}',
    ]
  ) {
    const { fetch } = fakeFetch([{ status: 200, body }]);
    const limiter = new RestLimiter({ market: "spot", fetch });
    await assert.rejects(
      readExchangeInfo({ restUrl: "http://x", market: "spot", limiter }),
      RestError,
      body,
    );
  }
});
