import assert from "node:assert/strict";
import { clockOffsetSeconds, watchClock } from "../src/binance/clock.ts";
import { RestLimiter } from "../src/binance/rest.ts";
import { summary } from "../src/cli/status.ts";
import type { StatusReport } from "../src/ops/http.ts";

Deno.test("clockOffsetSeconds corrects for the round trip: the server read its clock halfway", () => {
  // Sent at 1000, answered at 1200 (local ms); the server said 1050: local is 50 ms ahead.
  assert.equal(clockOffsetSeconds({ sentAt: 1000, serverTime: 1050, receivedAt: 1200 }), 0.05);
  assert.equal(clockOffsetSeconds({ sentAt: 1000, serverTime: 3100, receivedAt: 1200 }), -2);
});

Deno.test("watchClock asks /time at start, then every interval, and reports each offset", async () => {
  const calls: string[] = [];
  let local = 10_000;
  const fetch = ((url: string) => {
    calls.push(url);
    local += 100; // a 100 ms round trip, the server 1.5 s behind
    return Promise.resolve(Response.json({ serverTime: local - 50 - 1500 }));
  }) as typeof globalThis.fetch;
  const offsets: number[] = [];
  const stop = new AbortController();
  const done = watchClock({
    restUrl: "http://x",
    market: "usdm",
    limiter: new RestLimiter({ market: "usdm", fetch, now: () => local }),
    intervalMs: 20,
    signal: stop.signal,
    onOffset: (s) => {
      offsets.push(s);
      if (offsets.length === 2) stop.abort();
    },
  });
  await done;
  assert.deepEqual(offsets, [1.5, 1.5]);
  assert.deepEqual(calls, ["http://x/fapi/v1/time", "http://x/fapi/v1/time"]);
});

Deno.test("watchClock through the REST limiter sends nothing while Binance bans the IP", async () => {
  const calls: string[] = [];
  const fetch = ((url: string) => {
    calls.push(url);
    return Promise.resolve(
      url.endsWith("/exchangeInfo")
        ? new Response("banned", { status: 418, headers: { "retry-after": "120" } })
        : Response.json({ serverTime: Date.now() }),
    );
  }) as typeof globalThis.fetch;
  const limiter = new RestLimiter({ market: "spot", fetch });
  await limiter.get("http://x/api/v3/exchangeInfo", { weight: 20 }); // 418: a ban of minutes
  const stop = new AbortController();
  const offsets: number[] = [];
  const done = watchClock({
    restUrl: "http://x",
    market: "spot",
    limiter,
    intervalMs: 10,
    signal: stop.signal,
    onOffset: (s) => offsets.push(s),
  });
  await new Promise((resolve) => setTimeout(resolve, 300));
  stop.abort();
  await done;
  assert.deepEqual(calls, ["http://x/api/v3/exchangeInfo"], "no /time during the ban");
  assert.deepEqual(offsets, []);

  // Without a ban it reads the time through the limiter, sent and answered on the wall clock.
  const free = new RestLimiter({ market: "spot", fetch });
  const again = new AbortController();
  const read: number[] = [];
  await watchClock({
    restUrl: "http://x",
    market: "spot",
    limiter: free,
    signal: again.signal,
    onOffset: (s) => {
      read.push(s);
      again.abort();
    },
  });
  assert.equal(read.length, 1);
  assert.ok(Math.abs(read[0]) < 0.5, String(read[0]));
  assert.deepEqual(calls.slice(1), ["http://x/api/v3/time"]);
});

Deno.test("status prints the clock offset and the lag per market", () => {
  const report = {
    version: "v",
    instanceId: null,
    startedAt: "2026-12-03T00:00:00.000Z",
    uptimeSeconds: 5,
    health: "ok",
    rates: {
      messagesPerSecond: 1,
      bytesPerSecond: 1,
      reconnectsLastHour: 0,
      uploadFailuresLastHour: 0,
      uploadAttemptsLastHour: 0,
      batchesStoredLastHour: 0,
      droppedMessagesLastHour: 0,
      restartsLastHour: 0,
    },
    totals: {},
    spool: { bytes: 0, batches: 0, maxBytes: null, full: false },
    lastUpload: { at: null, ageSeconds: null, backlog: 0 },
    connections: { webSockets: 1 },
    memory: { residentBytes: 1 },
    streams: {},
    exchange: { clockOffsetSeconds: 1.25, lag: { spot: { samples: 7, meanSeconds: 0.031 } } },
  } as unknown as StatusReport;
  const text = summary("127.0.0.1:1", { status: "ok", checks: [] } as never, report);
  assert.match(
    text,
    /clock \+1\.25 s vs Binance \(OFF BY MORE THAN 1 s\); spot lag 0\.031 s \(mean of 7\)/,
  );
});
