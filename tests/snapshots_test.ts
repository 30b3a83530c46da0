import assert from "node:assert/strict";
import { RestLimiter } from "../src/binance/rest.ts";
import { snapshotOverlaps } from "../src/binance/sequence.ts";
import { Snapshotter } from "../src/binance/snapshots.ts";
import { DiffStreams } from "../src/cli/stages/diff_streams.ts";
import { diffDepthFeed, FakeExchange } from "./support/fake_exchange.ts";
import { waitFor } from "./support/wait.ts";

Deno.test("snapshotOverlaps: spot needs lastUpdateId + 1 >= U, USD-M lastUpdateId >= U (BINANCE.md, Keeping a book)", () => {
  assert.equal(snapshotOverlaps("spot", { lastUpdateId: 99, firstUpdateId: 100 }), true);
  assert.equal(snapshotOverlaps("spot", { lastUpdateId: 98, firstUpdateId: 100 }), false);
  assert.equal(snapshotOverlaps("usdm", { lastUpdateId: 100, firstUpdateId: 100 }), true);
  assert.equal(snapshotOverlaps("usdm", { lastUpdateId: 99, firstUpdateId: 100 }), false);
});

Deno.test("a snapshot older than the chain's first diff is fetched again, paced by the limiter, until one overlaps", async () => {
  await using exchange = await FakeExchange.start();
  const startId = 50_000_000_000;
  exchange.setFeed("btcusdt@depth@100ms", diffDepthFeed({ rate: 20, symbol: "BTCUSDT", startId }));
  await waitFor(() => exchange.producedCount("btcusdt@depth@100ms") >= 2, 5000, "diffs");
  exchange.lagSnapshots(2);
  const stop = new AbortController();
  const got: string[] = [];
  const calls: number[] = [];
  const snapshotter = new Snapshotter({
    restUrl: exchange.restUrl,
    market: "spot",
    limit: 100,
    intervalMs: 60_000,
    // Call times taken where the limiter makes them: the server's receive
    // times also carry the loopback's and the scheduler's jitter.
    limiter: new RestLimiter({
      market: "spot",
      fetch: (input, init) => {
        calls.push(performance.now());
        return fetch(input, init);
      },
    }),
    nowMicros: () => Date.now() * 1000,
    signal: stop.signal,
    // The chain started with the feed's first message: U = startId.
    chainStart: (symbol) => (symbol === "BTCUSDT" ? startId : undefined),
    onSnapshot: (_symbol, text) => got.push(text),
  });
  try {
    snapshotter.request("BTCUSDT", "test");
    await waitFor(() => got.length > 0, 5000, "an overlapping snapshot");
  } finally {
    stop.abort();
    await snapshotter.done;
  }
  assert.equal(got.length, 1, "the lagging snapshots are not stored");
  const { lastUpdateId } = JSON.parse(got[0]) as { lastUpdateId: number };
  assert.ok(lastUpdateId + 1 >= startId, `${lastUpdateId} overlaps the chain from ${startId}`);
  const depth = exchange.restRequests.filter((r) => r.path === "/api/v3/depth");
  assert.equal(depth.length, 3);
  assert.equal(snapshotter.refetches, 2);
  // Weight 5 of a 3000-per-minute budget: at least 100 ms between calls
  // (timers never fire early; 2 ms for the clocks' rounding).
  assert.equal(calls.length, 3);
  for (let i = 1; i < calls.length; i++) {
    assert.ok(calls[i] - calls[i - 1] >= 98, `calls ${calls[i] - calls[i - 1]} ms apart`);
  }
});

Deno.test("a symbol that leaves the recorded set is not fetched again, neither retried nor refreshed", async () => {
  // A delisted symbol's depth answers HTTP 400 for good; each retry would take weight from the rest.
  const calls: string[] = [];
  const listed = new Set(["BTCUSDT", "OLDUSDT"]);
  const fetchDepth: typeof fetch = (input) => {
    const symbol = new URL(String(input)).searchParams.get("symbol")!;
    calls.push(symbol);
    return Promise.resolve(
      listed.has(symbol)
        ? new Response('{"lastUpdateId":1000000000,"bids":[],"asks":[]}')
        : new Response('{"code":-1121,"msg":"Invalid symbol."}', { status: 400 }),
    );
  };
  const stop = new AbortController();
  const diffs = new DiffStreams("depth@100ms");
  const snapshotter = new Snapshotter({
    restUrl: "http://127.0.0.1:9",
    market: "spot",
    limit: 100,
    intervalMs: 100, // refreshes and retries every 100 ms: a long test in a few
    retryMs: 100,
    limiter: new RestLimiter({ market: "spot", fetch: fetchDepth }),
    nowMicros: () => Date.now() * 1000,
    signal: stop.signal,
    onSnapshot: (symbol) => diffs.stored(symbol),
  });
  diffs.requestFrom(snapshotter);
  diffs.changed({ added: ["btcusdt@depth@100ms", "oldusdt@depth@100ms"], removed: [] });
  try {
    diffs.chainStarted("btcusdt@depth@100ms");
    diffs.chainStarted("oldusdt@depth@100ms");
    await waitFor(() => calls.includes("OLDUSDT"), 3000, "the first snapshot of OLDUSDT");
    listed.delete("OLDUSDT"); // delisted: its requests fail from now on
    await waitFor(() => calls.filter((s) => s === "OLDUSDT").length >= 2, 3000, "a retry");
    diffs.changed({ added: [], removed: ["oldusdt@depth@100ms"] });
    const [old, btc] = ["OLDUSDT", "BTCUSDT"].map((s) => calls.filter((c) => c === s).length);
    await waitFor(() => calls.filter((s) => s === "BTCUSDT").length >= btc + 3, 3000, "refreshes");
    // At most the one in flight when it left.
    assert.ok(calls.filter((s) => s === "OLDUSDT").length <= old + 1, calls.join(" "));
  } finally {
    stop.abort();
    await snapshotter.done;
  }
});

Deno.test("a snapshot body is stored as one line: a trailing newline is dropped, one spanning lines is not stored", async () => {
  // A proxy or mirror behind BINANCE_REST_URL may add a newline or pretty-print the answer.
  const bodies = new Map([
    ["AAAUSDT", '{"lastUpdateId":5,"bids":[],"asks":[]}\n'],
    ["BBBUSDT", '{\n  "lastUpdateId": 6,\n  "bids": [],\n  "asks": []\n}'],
  ]);
  const stop = new AbortController();
  const stored: Array<[string, string]> = [];
  const asked: string[] = [];
  const snapshotter = new Snapshotter({
    restUrl: "http://127.0.0.1:9",
    market: "spot",
    limit: 100,
    intervalMs: 60_000,
    retryMs: 60_000,
    limiter: new RestLimiter({
      market: "spot",
      fetch: (input) => {
        const symbol = new URL(String(input)).searchParams.get("symbol")!;
        asked.push(symbol);
        return Promise.resolve(new Response(bodies.get(symbol)));
      },
    }),
    nowMicros: () => Date.now() * 1000,
    signal: stop.signal,
    onSnapshot: (symbol, text) => stored.push([symbol, text]),
  });
  try {
    snapshotter.request("AAAUSDT", "test");
    snapshotter.request("BBBUSDT", "test");
    await waitFor(() => asked.length === 2, 3000, "both snapshots to be fetched");
    await waitFor(() => snapshotter.queued === 0, 3000, "both answers to be read");
  } finally {
    stop.abort();
    await snapshotter.done;
  }
  assert.deepEqual(stored, [["AAAUSDT", '{"lastUpdateId":5,"bids":[],"asks":[]}']]);
});
