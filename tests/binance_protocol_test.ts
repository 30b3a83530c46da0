/**
 * The collector against a fake exchange that follows Binance's documentation
 * (../shared/reference/BINANCE.md): serverShutdown in the combined shape,
 * published stream names per market and speed, symbol status, REST bans,
 * server pings.
 */

import assert from "node:assert/strict";
import {
  diffDepthFeed,
  FakeExchange,
  loadFixturePayloads,
  partialDepthFeed,
  replayFeed,
} from "./support/fake_exchange.ts";
import {
  type ArchivedLine,
  rawData,
  readArchive,
  runCollector,
  spawnCollector,
} from "./support/collector.ts";
import { tempDir } from "./support/temp.ts";
import { freePort, unreachableBinance } from "./support/net_guard.ts";
import { waitFor } from "./support/wait.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url);
const WAIT_MS = 60_000;

/** Breaks in a spot diff chain (U must be the previous u + 1). */
function chainBreaks(lines: readonly ArchivedLine[]): string[] {
  const breaks: string[] = [];
  let last: number | undefined;
  for (const line of lines) {
    const data = line.value.data as { U: number; u: number };
    if (last !== undefined && data.U !== last + 1) breaks.push(`U=${data.U} after u=${last}`);
    last = data.u;
  }
  return breaks;
}

function eventsOf(lines: readonly ArchivedLine[], stream: string, event: string): ArchivedLine[] {
  return lines.filter((l) => l.value.stream === stream && l.value.event === event);
}

for (const shape of ["combined", "raw"] as const) {
  Deno.test({
    name:
      `serverShutdown in the ${shape} shape, twice, each followed by a close 3 s later: rotations, no malformed line, no gap (BINANCE.md, serverShutdown)`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: () => shutdownTwice(shape),
  });
}

/** Diff mode with real fixture updates; Binance announces a shutdown twice. */
async function shutdownTwice(shape: "combined" | "raw"): Promise<void> {
  await using exchange = await FakeExchange.start();
  const streams = ["btcusdt@depth@100ms", "ethusdt@depth@100ms"];
  for (
    const [stream, file] of [
      [streams[0], "spot_diff_btcusdt_2024-08-08.ndjson.gz"],
      [streams[1], "spot_diff_ethusdt_2024-08-08.ndjson.gz"],
    ]
  ) {
    const payloads = await loadFixturePayloads(new URL(file, FIXTURES));
    exchange.setFeed(stream, replayFeed({ rate: 20, payloads }));
  }
  await using tmp = await tempDir();
  await using proc = spawnCollector({
    SYMBOL: "BTCUSDT,ETHUSDT",
    DEPTH_LEVEL: "full",
    UPDATE_SPEED_MS: "100",
    BINANCE_WS_URL: exchange.wsUrl,
    BINANCE_REST_URL: exchange.restUrl,
    DATA_DIR: tmp.path,
    BATCH_SECONDS: "1",
    METRICS_ADDR: "off",
  });
  for (let round = 1; round <= 2; round++) {
    await waitFor(() => exchange.openCount === 1, 15_000, `one open connection (${round})`);
    const sent = exchange.sentCountFor(streams[0]);
    await waitFor(
      () => exchange.sentCountFor(streams[0]) >= sent + 20,
      WAIT_MS,
      "20 more updates",
    );
    const before = exchange.connections.length;
    const announce = shape === "raw" ? { closeAfterMs: 3000, shape } : { closeAfterMs: 3000 };
    assert.equal(exchange.announceShutdown(announce), 1);
    await waitFor(() => exchange.connections.length > before, 10_000, "a successor");
    await waitFor(
      () => exchange.connections.slice(0, before).every((c) => c.closedAt !== undefined),
      10_000,
      "the announced connection to close",
    );
  }
  const sent = exchange.sentCountFor(streams[0]);
  await waitFor(() => exchange.sentCountFor(streams[0]) >= sent + 20, WAIT_MS, "more updates");
  proc.kill("SIGTERM");
  assert.equal((await proc.status).code, 0, proc.stderr());
  const lines = await readArchive(`${tmp.path}/archive`);
  assert.deepEqual(lines.filter((l) => l.value.event === "malformed").map((l) => l.text), []);
  for (const stream of streams) {
    assert.deepEqual(eventsOf(lines, stream, "gap").map((l) => l.text), [], `${stream}: gap`);
    assert.ok(eventsOf(lines, stream, "rotated").length >= 2, `${stream}: two rotated events`);
    assert.equal(eventsOf(lines, stream, "control").length, 2, `${stream}: two announcements`);
    const diffs = lines.filter((l) => l.value.stream === stream && l.value.event === undefined);
    assert.ok(diffs.length >= 60, `${stream}: ${diffs.length} diffs`);
    assert.deepEqual(chainBreaks(diffs), [], `${stream}: sequence breaks`);
  }
  assert.doesNotMatch(proc.stderr(), /Sequence gap/);
}

/**
 * BINANCE.md, "Stream names": for each market and speed the collector must
 * ask for, the name Binance publishes (written here from the table).
 */
const NAME_CASES = [
  { market: "usdm", speed: "250", partial: "btcusdt@depth20", diff: "btcusdt@depth" },
  { market: "usdm", speed: "500", partial: "btcusdt@depth20@500ms", diff: "btcusdt@depth@500ms" },
  { market: "usdm", speed: "100", partial: "btcusdt@depth20@100ms", diff: "btcusdt@depth@100ms" },
  { market: "spot", speed: "1000", partial: "btcusdt@depth20", diff: "btcusdt@depth" },
  { market: "spot", speed: "100", partial: "btcusdt@depth20@100ms", diff: "btcusdt@depth@100ms" },
] as const;

Deno.test({
  name:
    "USD-M 250/500/100 ms and spot 1000/100 ms, partial and diff: data arrives from a fake that publishes only documented names, partitioned by the published name",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    for (const c of NAME_CASES) {
      // Every name the table lists for BTCUSDT is fed; the fake delivers only
      // those its market publishes, so a wrong name would get silence.
      await using exchange = await FakeExchange.start({ market: c.market });
      exchange.setFeed(c.partial, partialDepthFeed({ rate: 20, levels: 5, market: c.market }));
      exchange.setFeed(c.diff, diffDepthFeed({ rate: 20, symbol: "BTCUSDT", market: c.market }));
      for (const mode of ["20", "full"] as const) {
        const name = mode === "20" ? c.partial : c.diff;
        const type = name.slice("btcusdt@".length);
        await using tmp = await tempDir();
        await using proc = spawnCollector({
          SYMBOL: "BTCUSDT",
          MARKET: c.market,
          DEPTH_LEVEL: mode,
          UPDATE_SPEED_MS: c.speed,
          BINANCE_WS_URL: c.market === "usdm" ? `${exchange.wsUrl}/public` : exchange.wsUrl,
          BINANCE_REST_URL: exchange.restUrl,
          DATA_DIR: tmp.path,
          BATCH_SECONDS: "1",
          METRICS_ADDR: "off",
        });
        const what = `${c.market} ${c.speed} ms DEPTH_LEVEL=${mode}`;
        await waitFor(
          async () =>
            (await readArchive(`${tmp.path}/archive`)).filter((l) =>
              l.value.stream === name && l.value.data !== undefined
            ).length >= 5,
          WAIT_MS,
          `${what}: 5 messages of ${name} stored`,
        );
        proc.kill("SIGTERM");
        assert.equal((await proc.status).code, 0, proc.stderr());
        const lines = await readArchive(`${tmp.path}/archive`);
        const data = lines.filter((l) => l.value.stream === name && l.value.data !== undefined);
        assert.ok(data.length >= 5, what);
        // The partition value is the published name without the symbol.
        const partition = new RegExp(
          `/(?:stream|channel)=${type.replace(/@/g, "@")}/symbol=BTCUSDT/`,
        );
        assert.ok(data.every((l) => partition.test(l.key)), `${what}: ${data[0].key}`);
      }
    }
  },
});

Deno.test({
  name:
    "exchangeInfo says BREAK for one of three symbols: start-up succeeds, all three are recorded, one WARN (BINANCE.md, Payloads)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await FakeExchange.start();
    const streams = ["btcusdt@depth20@100ms", "ethusdt@depth20@100ms", "bnbusdt@depth20@100ms"];
    streams.forEach((s, i) =>
      exchange.setFeed(s, partialDepthFeed({ rate: 20, levels: 5, startId: 1000 * (i + 1) }))
    );
    exchange.setSymbolStatus("ETHUSDT", "BREAK");
    exchange.setWeightLimit(1200);
    await using tmp = await tempDir();
    await using proc = spawnCollector({
      SYMBOL: "BTCUSDT,ETHUSDT,BNBUSDT",
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: tmp.path,
      BATCH_SECONDS: "1",
      METRICS_ADDR: "off",
    });
    await waitFor(
      async () => {
        const lines = await readArchive(`${tmp.path}/archive`);
        return streams.every((s) => lines.some((l) => l.value.stream === s && l.value.data));
      },
      WAIT_MS,
      "data of all three streams stored",
    );
    proc.kill("SIGTERM");
    assert.equal((await proc.status).code, 0, proc.stderr());
    const warnings = proc.stderr().split("\n").filter((l) => /ETHUSDT.*BREAK/.test(l));
    assert.equal(warnings.length, 1, proc.stderr());
    assert.match(warnings[0], /WRN|WARN/i);
    // The weight limit exchangeInfo lists replaces the documented 6000.
    assert.match(proc.stderr(), /1200 request weight per minute/);
  },
});

Deno.test({
  name:
    "a snapshot older than the first buffered diff is fetched again until it overlaps; verify names the time the book was not rebuildable (BINANCE.md, Keeping a book)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await FakeExchange.start();
    const stream = "btcusdt@depth@100ms";
    const payloads = await loadFixturePayloads(
      new URL("spot_diff_btcusdt_2024-08-08.ndjson.gz", FIXTURES),
    );
    exchange.setFeed(stream, replayFeed({ rate: 20, payloads }));
    // The first two snapshots lag far behind the diff stream.
    exchange.lagSnapshots(2);
    await using tmp = await tempDir();
    const env = {
      SYMBOL: "BTCUSDT",
      DEPTH_LEVEL: "full",
      UPDATE_SPEED_MS: "100",
      SNAPSHOT_LIMIT: "100",
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: tmp.path,
      BATCH_SECONDS: "1",
      METRICS_ADDR: "off",
    };
    await using proc = spawnCollector(env);
    await waitFor(
      async () =>
        (await readArchive(`${tmp.path}/archive`)).some((l) =>
          l.value.stream === "btcusdt@depthSnapshot"
        ),
      WAIT_MS,
      "a stored snapshot",
    );
    proc.kill("SIGTERM");
    assert.equal((await proc.status).code, 0, proc.stderr());
    const depthCalls = exchange.restRequests.filter((r) => r.path === "/api/v3/depth");
    assert.ok(depthCalls.length >= 3, `${depthCalls.length} depth requests`);
    // Paced by the weight limiter (weight 5 of 3000 a minute: 100 ms apart).
    for (let i = 1; i < depthCalls.length; i++) {
      assert.ok(depthCalls[i].at - depthCalls[i - 1].at >= 90);
    }
    const lines = await readArchive(`${tmp.path}/archive`);
    const diffs = lines.filter((l) => l.value.stream === stream && l.value.event === undefined);
    const firstU = (diffs[0].value.data as { U: number }).U;
    const snapshots = lines.filter((l) => l.value.stream === "btcusdt@depthSnapshot");
    assert.ok(snapshots.length >= 1);
    for (const s of snapshots) {
      const { lastUpdateId } = s.value.data as { lastUpdateId: number };
      assert.ok(lastUpdateId + 1 >= firstU, `stored snapshot ${lastUpdateId} < chain ${firstU}`);
    }

    const verified = await runCollector(env, { args: ["verify", "--json"] });
    const report = JSON.parse(verified.stdout) as {
      streams: { stream: string; notRebuildable: { fromRecvTs: number; toRecvTs: number }[] }[];
    };
    const ranges = report.streams.find((s) => s.stream === stream)!.notRebuildable;
    // One chain: not rebuildable from its first message until the overlapping snapshot.
    assert.deepEqual(ranges.map((r) => [r.fromRecvTs, r.toRecvTs]), [
      [diffs[0].value.recv_ts, snapshots[0].value.recv_ts],
    ]);
    const text = await runCollector(env, { args: ["verify"] });
    assert.match(text.stdout, /btcusdt@depth@100ms: book not rebuildable from \S+ to \S+/);
  },
});

Deno.test({
  name:
    "1,000 streams on one connection: the URL stays within 4,000 characters, the rest is subscribed within 5 messages/s, every stream delivers (BINANCE.md, Long URLs)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    // The fake refuses any URL above the bound with 414: all in the URL would get nothing.
    await using exchange = await FakeExchange.start({ maxUrlLength: 4000 });
    const symbols = Array.from({ length: 1000 }, (_, i) => `S${i}USDT`);
    const streams = symbols.map((s) => `${s.toLowerCase()}@depth5@100ms`);
    streams.forEach((s, i) =>
      exchange.setFeed(s, partialDepthFeed({ rate: 2, levels: 1, startId: 1000 * (i + 1) }))
    );
    await using tmp = await tempDir();
    await using proc = spawnCollector({
      SYMBOL: symbols.join(","),
      DEPTH_LEVEL: "5",
      STREAMS_PER_CONNECTION: "1000",
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: tmp.path,
      BATCH_SECONDS: "2",
      METRICS_ADDR: "off",
    });
    await waitFor(
      () => streams.every((s) => exchange.sentCountFor(s) >= 2),
      WAIT_MS,
      "every stream delivering",
    );
    proc.kill("SIGTERM");
    assert.equal((await proc.status).code, 0, proc.stderr());
    assert.equal(exchange.refusedLongUrls, 0);
    assert.equal(exchange.connections.length, 1, "one connection, never refused nor dropped");
    const [conn] = exchange.connections;
    assert.ok(conn.url.length <= 4000, `${conn.url.length} characters`);
    assert.notEqual(conn.closedBy, "message-rate");
    assert.deepEqual([...conn.streams].sort(), [...streams].sort());
    // Each SUBSCRIBE at least 200 ms after the previous one (5 a second at most).
    const subscribes = exchange.subscribes;
    assert.ok(subscribes.length >= 4, `${subscribes.length} SUBSCRIBE messages`);
    for (let i = 1; i < subscribes.length; i++) {
      assert.ok(subscribes[i].at - subscribes[i - 1].at >= 200, `SUBSCRIBE ${i} too soon`);
    }
    const lines = await readArchive(`${tmp.path}/archive`);
    const stored = new Set(lines.filter((l) => l.value.data).map((l) => l.value.stream));
    assert.deepEqual(streams.filter((s) => !stored.has(s)), [], "streams with no data stored");
    // Connected once each: from the URL at open, the others when acknowledged.
    const connected = lines.filter((l) => l.value.event === "connected").map((l) => l.value.stream);
    assert.deepEqual(connected.sort(), [...streams].sort());
    assert.equal(lines.filter((l) => l.value.event === "malformed").length, 0);
  },
});

Deno.test({
  name:
    "TIME_UNIT=us puts timeUnit=MICROSECOND on spot URLs; clock offset and lag appear in /metrics, /status and status",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    // Binance's clock 2 s behind the local one.
    await using exchange = await FakeExchange.start({ clockOffsetMs: -2000 });
    exchange.setFeed("btcusdt@depth@100ms", diffDepthFeed({ rate: 40, symbol: "BTCUSDT" }));
    await using tmp = await tempDir();
    const addr = `127.0.0.1:${freePort()}`;
    const env = {
      SYMBOL: "BTCUSDT",
      DEPTH_LEVEL: "full",
      TIME_UNIT: "us",
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: tmp.path,
      BATCH_SECONDS: "1",
      METRICS_ADDR: addr,
    };
    await using proc = spawnCollector(env);
    let metrics = "";
    await waitFor(
      async () => {
        try {
          metrics = await (await fetch(`http://${addr}/metrics`)).text();
        } catch {
          return false;
        }
        // The clock reading waits its turn behind the snapshots (one REST limiter for all).
        const offset = Number(/^l2_clock_offset_seconds (\S+)/m.exec(metrics)?.[1]);
        return /^l2_exchange_lag_seconds_count\{market="spot"\} [1-9]/m.test(metrics) &&
          offset !== 0;
      },
      WAIT_MS,
      "lag samples and a clock reading in /metrics",
    );
    assert.ok(exchange.connections.every((c) => c.url.endsWith("&timeUnit=MICROSECOND")));
    const offset = Number(/^l2_clock_offset_seconds (\S+)/m.exec(metrics)?.[1]);
    assert.ok(Math.abs(offset - 2) < 0.5, `offset ${offset}`);
    // E came in µs: read as such, the lag is small (read as ms it would be ~-1.8e9 s).
    const sum = Number(/^l2_exchange_lag_seconds_sum\{market="spot"\} (\S+)/m.exec(metrics)?.[1]);
    const count = Number(
      /^l2_exchange_lag_seconds_count\{market="spot"\} (\S+)/m.exec(metrics)?.[1],
    );
    assert.ok(sum / count > -0.5 && sum / count < 2, `mean lag ${sum / count} s`);

    const status = await (await fetch(`http://${addr}/status`)).json();
    assert.ok(Math.abs(status.exchange.clockOffsetSeconds - 2) < 0.5);
    assert.ok(status.exchange.lag.spot.samples >= 1);
    const printed = await runCollector(env, { args: ["status"] });
    assert.match(
      printed.stdout,
      /clock \+\d(?:\.\d+)? s vs Binance \(OFF BY MORE THAN 1 s\); spot lag/,
    );
    proc.kill("SIGTERM");
    assert.equal((await proc.status).code, 0, proc.stderr());
    // Above 1 s: one warning at start.
    assert.match(proc.stderr(), /\[WRN\].*local clock is [12](\.\d+)? s off Binance/);
  },
});

for (const status of [429, 418] as const) {
  Deno.test({
    name:
      `a REST ban (${status} with Retry-After) while snapshots are due: no REST call reaches Binance until Retry-After has passed, then snapshots are fetched and stored (BINANCE.md, REST limits)`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: () => restBan(status),
  });
}

/**
 * Diff mode, two symbols: Binance bans the IP for 2 s and the link drops, so
 * both symbols need a snapshot at once (their REST calls, and the clock
 * watch's, share one limiter). A 429 ban escalates to 418 if called again
 * before its Retry-After (as Binance documents): a client that honours it
 * never sees one.
 */
async function restBan(status: 429 | 418): Promise<void> {
  await using exchange = await FakeExchange.start();
  const symbols = ["BTCUSDT", "ETHUSDT"];
  for (const symbol of symbols) {
    exchange.setFeed(`${symbol.toLowerCase()}@depth@100ms`, diffDepthFeed({ rate: 20, symbol }));
  }
  await using tmp = await tempDir();
  await using proc = spawnCollector({
    SYMBOL: symbols.join(","),
    DEPTH_LEVEL: "full",
    UPDATE_SPEED_MS: "100",
    SNAPSHOT_LIMIT: "100",
    BINANCE_WS_URL: exchange.wsUrl,
    BINANCE_REST_URL: exchange.restUrl,
    DATA_DIR: tmp.path,
    BATCH_SECONDS: "1",
    METRICS_ADDR: "off",
  });
  const depthOk = () =>
    exchange.restRequests.filter((r) => r.path === "/api/v3/depth" && r.status === 200);
  await waitFor(() => depthOk().length >= 2, WAIT_MS, "both first snapshots");
  const before = exchange.restRequests.length;
  exchange.banRest(2000, status, { escalateMs: 10_000 });
  exchange.dropAll();
  await waitFor(
    () => exchange.restRequests.length > before,
    WAIT_MS,
    "a REST call during the ban",
  );
  const refused = exchange.restRequests[before];
  assert.equal(refused.status, status, `${refused.path} answered ${refused.status}`);
  await waitFor(
    () => depthOk().filter((r) => r.at > refused.at).length >= 1,
    WAIT_MS,
    "a snapshot after the ban",
  );
  const resumed = depthOk().find((r) => r.at > refused.at)!;
  // Stored: a snapshot line received after the ban ended.
  await waitFor(
    async () =>
      (await readArchive(`${tmp.path}/archive`)).some((l) =>
        l.value.stream.endsWith("@depthSnapshot") && l.value.recv_ts >= resumed.at * 1000
      ),
    WAIT_MS,
    "a snapshot stored after the ban",
  );
  proc.kill("SIGTERM");
  assert.equal((await proc.status).code, 0, proc.stderr());
  const after = exchange.restRequests.slice(before);
  // Nothing reached the exchange until Retry-After had passed since the refusal
  // (a few ms of slack: the fake and the collector read different clocks).
  const retryAfterMs = refused.retryAfter! * 1000;
  assert.ok(retryAfterMs >= 1000 && retryAfterMs <= 2000, `Retry-After ${refused.retryAfter}`);
  const early = after.slice(1).filter((r) => r.at < refused.at + retryAfterMs - 20);
  assert.deepEqual(early.map((r) => `${r.path} +${r.at - refused.at} ms`), []);
  assert.equal(after.filter((r) => r.status !== 200).length, 1, "one refusal, never escalated");
}

Deno.test({
  name:
    "Binance's pings (every 300 ms here, pong due within 3 s) are answered: the connection stays up across them and the diff stream is stored without a hole (BINANCE.md, Connection rules)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await FakeExchange.start({
      // A generous deadline: a busy CI machine may hold the pong back, not the collector.
      pings: { intervalMs: 300, deadlineMs: 3000 },
    });
    const stream = "btcusdt@depth@100ms";
    exchange.setFeed(stream, diffDepthFeed({ rate: 50, symbol: "BTCUSDT" }));
    await using tmp = await tempDir();
    await using proc = spawnCollector({
      SYMBOL: "BTCUSDT",
      DEPTH_LEVEL: "full",
      UPDATE_SPEED_MS: "100",
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: tmp.path,
      BATCH_SECONDS: "1",
      METRICS_ADDR: "off",
    });
    await waitFor(() => exchange.openCount === 1, 15_000, "the collector to connect");
    await waitFor(
      () => exchange.connections[0].pings >= 10 || exchange.connections[0].closedBy !== undefined,
      WAIT_MS,
      "ten pings",
    );
    const [conn] = exchange.connections;
    assert.equal(conn.closedBy, undefined, "the connection was dropped");
    const sent = exchange.sentFor(stream).map((f) =>
      f.text.slice(`{"stream":"${stream}","data":`.length, -1)
    );
    proc.kill("SIGTERM");
    assert.equal((await proc.status).code, 0, proc.stderr());

    assert.equal(exchange.connections.length, 1, "one connection throughout");
    assert.ok(conn.pongs >= conn.pings - 1, `${conn.pongs} pongs to ${conn.pings} pings`);
    assert.equal(conn.unsolicitedPongs, 0);
    const lines = await readArchive(`${tmp.path}/archive`);
    const stored = lines.filter((l) => l.value.stream === stream && l.value.event === undefined);
    const storedSet = new Set(stored.map(rawData));
    assert.deepEqual(sent.filter((p) => !storedSet.has(p)), [], "frames sent but not stored");
    assert.deepEqual(chainBreaks(stored), []);
    assert.deepEqual(eventsOf(lines, stream, "gap"), []);
    // Disconnected only by the collector's own shutdown at SIGTERM.
    assert.deepEqual(
      eventsOf(lines, stream, "disconnected").map((l) => l.value.cause),
      ["shutdown"],
    );
  },
});

Deno.test("TIME_UNIT=us with MARKET=usdm is a configuration error (exit 2)", async () => {
  await using tmp = await tempDir();
  const result = await runCollector({
    ...unreachableBinance(),
    MARKET: "usdm",
    TIME_UNIT: "us",
    DATA_DIR: tmp.path,
    METRICS_ADDR: "off",
  }, { args: ["check"] });
  assert.equal(result.code, 2, result.stdout + result.stderr);
  assert.match(result.stdout + result.stderr, /TIME_UNIT="us": expected ms for MARKET=usdm/);
});
