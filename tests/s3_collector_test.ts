/**
 * The collector as a subprocess against the fake exchange and a real S3
 * server (s3rver): outages, SIGKILL and restart, shutdown with S3 down,
 * bad buckets, a full spool and a damaged spool file.
 */

import assert from "node:assert/strict";
import { gunzipSync } from "node:zlib";
import { FakeExchange, partialDepthFeed, type SentFrame } from "./support/fake_exchange.ts";
import { runCollector, spawnCollector } from "./support/collector.ts";
import { TestS3 } from "./support/s3.ts";
import { decodeSpoolFile } from "../src/store/spool.ts";
import { listFiles, tempDir } from "./support/temp.ts";
import { freePort, silentServer, unreachableBinance } from "./support/net_guard.ts";
import { delay, waitFor } from "./support/wait.ts";

/** Data payloads per stream across every object in the bucket. */
async function storedPayloads(s3: TestS3): Promise<Map<string, string[]>> {
  const byStream = new Map<string, string[]>();
  for (const key of await s3.keys()) {
    const { body } = await s3.get(key);
    for (const line of new TextDecoder().decode(gunzipSync(body)).split("\n")) {
      if (line === "") continue;
      const value = JSON.parse(line);
      if (value.event !== undefined) continue;
      const head = `{"recv_ts":${value.recv_ts},"stream":${JSON.stringify(value.stream)},"data":`;
      assert.ok(line.startsWith(head), `unexpected line layout: ${line.slice(0, 80)}`);
      const list = byStream.get(value.stream) ?? [];
      list.push(line.slice(head.length, -1));
      byStream.set(value.stream, list);
    }
  }
  return byStream;
}

/** The event lines named `event` across every object in the bucket. */
async function storedEvents(s3: TestS3, event: string): Promise<Array<Record<string, unknown>>> {
  const events: Array<Record<string, unknown>> = [];
  for (const key of await s3.keys()) {
    const text = new TextDecoder().decode(gunzipSync((await s3.get(key)).body));
    for (const line of text.split("\n")) {
      if (line === "") continue;
      const value = JSON.parse(line);
      if (value.event === event) events.push(value);
    }
  }
  return events;
}

function payloadOf(frame: SentFrame): string {
  return frame.text.slice(`{"stream":"${frame.stream}","data":`.length, -1);
}

function startExchange(exchange: FakeExchange, streams: string[]) {
  streams.forEach((s, i) =>
    exchange.setFeed(s, partialDepthFeed({ rate: 40, startId: 1_000_000 * (i + 1) }))
  );
}

const STREAMS = ["btcusdt@depth20@100ms", "ethusdt@depth20@100ms", "bnbusdt@depth20@100ms"];

Deno.test({
  name: "collector loses nothing through an S3 outage and a SIGKILL, and stores nothing twice",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await FakeExchange.start();
    startExchange(exchange, STREAMS);
    await using s3 = await TestS3.start();
    await using data = await tempDir();
    const env = {
      ...s3.env(),
      SYMBOL: "BTCUSDT,ETHUSDT,BNBUSDT",
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: data.path,
      BATCH_SECONDS: "1",
      METRICS_ADDR: "off",
      INSTANCE_ID: "s3-test",
    };
    const spooled = async () =>
      (await listFiles(`${data.path}/spool`)).filter((f) => f.endsWith(".spool")).length;
    const first = spawnCollector(env);
    await waitFor(() => exchange.openCount > 0, 15_000, "first run to connect");
    await waitFor(
      async () => (await s3.keys()).length >= 6,
      15_000,
      "objects stored before the outage",
    );
    await s3.stop();
    await waitFor(async () => await spooled() >= 3, 30_000, "batches spooled in the outage");
    await s3.resume();
    await waitFor(async () => await spooled() === 0, 30_000, "the spool drained after the outage");
    const killAt = Date.now();
    first.kill("SIGKILL");
    await first.status;
    await delay(2000);
    const second = spawnCollector(env);
    await waitFor(() => exchange.openCount > 0, 15_000, "second run to connect");
    await waitFor(() => /Recovered \d+ batches/.test(second.stderr()), 15_000, "the recovery");
    // Traffic enough for the checks below (more than 800 frames a stream), some of it after the restart.
    const atRestart = Math.min(...STREAMS.map((s) => exchange.sentCountFor(s)));
    await waitFor(
      () => STREAMS.every((s) => exchange.sentCountFor(s) >= Math.max(atRestart + 80, 900)),
      40_000,
      "traffic after the restart",
    );
    const sentBeforeTerm = new Map(STREAMS.map((s) => [s, exchange.sentFor(s)]));
    const termAt = Date.now();
    second.kill("SIGTERM");
    const status = await second.status;
    assert.equal(status.code, 0, second.stderr());
    const exitMs = Date.now() - termAt;
    assert.ok(exitMs < 10_000, `second run took ${exitMs} ms to exit (README: within 10 s)`);

    const stored = await storedPayloads(s3);
    for (const stream of STREAMS) {
      const got = stored.get(stream) ?? [];
      const counts = new Map<string, number>();
      for (const p of got) counts.set(p, (counts.get(p) ?? 0) + 1);
      const dupes = [...counts].filter(([, n]) => n > 1);
      assert.equal(dupes.length, 0, `${stream}: ${dupes.length} payloads stored twice`);
      const sent = sentBeforeTerm.get(stream)!;
      // Only the last second before the SIGKILL may be missing.
      const mustHave = sent.filter((f) => f.at < killAt - 1000 || f.at > killAt + 1000);
      const missing = mustHave.filter((f) => !counts.has(payloadOf(f)));
      assert.ok(mustHave.length > 800, `${stream}: only ${mustHave.length} frames sent`);
      assert.equal(missing.length, 0, `${stream}: ${missing.length} messages missing`);
    }
    const spoolLeft = (await listFiles(`${data.path}/spool`)).filter((f) => f.endsWith(".spool"));
    assert.deepEqual(spoolLeft, []);
    assert.match(first.stderr(), /Spooled/, "the outage should have spooled batches");
    assert.match(
      second.stderr(),
      /Recovered \d+ batches/,
      "the restart should recover the journal",
    );
  },
});

Deno.test({
  name: "collector shut down while S3 is down exits 0 in time and spools what it holds",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await FakeExchange.start();
    startExchange(exchange, STREAMS.slice(0, 1));
    await using s3 = await TestS3.start();
    await using data = await tempDir();
    const env = {
      ...s3.env(),
      SYMBOL: "BTCUSDT",
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: data.path,
      BATCH_SECONDS: "60",
      METRICS_ADDR: "off",
    };
    const proc = spawnCollector(env);
    await waitFor(() => exchange.openCount > 0, 15_000, "connect");
    await delay(2000);
    await s3.stop();
    await delay(500);
    const sent = exchange.sentFor(STREAMS[0]).map(payloadOf);
    const termAt = Date.now();
    proc.kill("SIGTERM");
    assert.equal((await proc.status).code, 0, proc.stderr());
    const tookMs = Date.now() - termAt;
    assert.ok(tookMs < 10_000, `exit took ${tookMs} ms`);
    const spooled = (await listFiles(`${data.path}/spool`)).filter((f) => f.endsWith(".spool"));
    assert.ok(spooled.length >= 1, "nothing spooled");

    // The next start uploads the spool, and every message is there.
    await s3.resume();
    const again = spawnCollector(env);
    await waitFor(async () => (await s3.keys()).length >= spooled.length, 20_000, "spool drained");
    again.kill("SIGTERM");
    assert.equal((await again.status).code, 0, again.stderr());
    const stored = (await storedPayloads(s3)).get(STREAMS[0]) ?? [];
    const storedSet = new Set(stored);
    assert.equal(sent.filter((p) => !storedSet.has(p)).length, 0);
  },
});

Deno.test("collector exits 2 naming the bucket when it does not exist", async () => {
  await using s3 = await TestS3.start();
  await using data = await tempDir();
  const result = await runCollector({
    ...s3.env(),
    ...unreachableBinance(),
    S3_BUCKET_NAME: "no-such-bucket",
    DATA_DIR: data.path,
    METRICS_ADDR: "off",
  });
  assert.equal(result.code, 2, result.stderr);
  assert.match(result.stderr, /no-such-bucket/);
  assert.match(result.stderr, /does not exist/);
  assert.ok(result.stderr.includes(s3.endpoint), "the endpoint should be named");
  assert.doesNotMatch(result.stderr, /S3RVER/, "credentials must not be printed");
});

Deno.test({
  name: "collector starts while S3 is unreachable, spooling instead of stopping",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await FakeExchange.start();
    startExchange(exchange, STREAMS.slice(0, 1));
    await using s3 = await TestS3.start();
    await s3.stop();
    await using data = await tempDir();
    const proc = spawnCollector({
      ...s3.env(),
      SYMBOL: "BTCUSDT",
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: data.path,
      BATCH_SECONDS: "1",
      METRICS_ADDR: "off",
    });
    await waitFor(
      async () => (await listFiles(`${data.path}/spool`)).some((f) => f.endsWith(".spool")),
      20_000,
      "a spooled batch",
    );
    proc.kill("SIGTERM");
    assert.equal((await proc.status).code, 0, proc.stderr());
    assert.match(proc.stderr(), /could not be reached/);
  },
});

Deno.test({
  name: "an S3 endpoint that never answers does not hold the recording back for its timeout",
  // The SDK keeps its socket to the silent server until the process ends.
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await FakeExchange.start();
    startExchange(exchange, STREAMS.slice(0, 1));
    using silent = silentServer();
    await using data = await tempDir();
    const proc = spawnCollector({
      AWS_ACCESS_KEY_ID: "test",
      AWS_SECRET_ACCESS_KEY: "test",
      AWS_REGION: "us-east-1",
      S3_BUCKET_NAME: "bucket",
      S3_ENDPOINT: `http://${silent.host}`,
      S3_FORCE_PATH_STYLE: "true",
      SYMBOL: "BTCUSDT",
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: data.path,
      BATCH_SECONDS: "1",
      METRICS_ADDR: "off",
    });
    // HeadBucket's timeout is 15 s; the start waits START_WAIT_MS (3 s) for it.
    await waitFor(() => exchange.openCount > 0, 10_000, "the collector to connect");
    await waitFor(() => exchange.sentCountFor(STREAMS[0]) >= 40, 10_000, "1 s of messages");
    assert.match(proc.stderr(), /has not answered HeadBucket in 3 s; recording anyway/);
    proc.kill("SIGTERM");
    assert.equal((await proc.status).code, 0, proc.stderr());
    // The puts to the silent endpoint are cut by the shutdown; what they held is spooled.
    const spooled = (await listFiles(`${data.path}/spool`)).filter((f) => f.endsWith(".spool"));
    assert.ok(spooled.length > 0, proc.stderr());
  },
});

Deno.test({
  name: "collector drops and reports batches once the spool is full, keeping what is spooled",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await FakeExchange.start();
    startExchange(exchange, STREAMS.slice(0, 1));
    await using s3 = await TestS3.start();
    await s3.stop();
    await using data = await tempDir();
    const metricsAddr = `127.0.0.1:${freePort()}`;
    const proc = spawnCollector({
      ...s3.env(),
      SYMBOL: "BTCUSDT",
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: data.path,
      BATCH_SECONDS: "1",
      // Room for a couple of 1 s batches (~13 KB each), not for all of them.
      SPOOL_MAX_BYTES: "40KB",
      METRICS_ADDR: metricsAddr,
    });
    await waitFor(() => /Spool full/.test(proc.stderr()), 30_000, "the spool to fill");
    // README: what the full spool drops is counted in l2_dropped_messages_total.
    const loggedBefore = droppedInLog(proc.stderr());
    const metrics = await (await fetch(`http://${metricsAddr}/metrics`)).text();
    const counted = Number(/^l2_dropped_messages_total (\d+)/m.exec(metrics)?.[1]);
    proc.kill("SIGTERM");
    assert.equal((await proc.status).code, 0, proc.stderr());
    const files = (await listFiles(`${data.path}/spool`)).filter((f) => f.endsWith(".spool"));
    assert.ok(files.length >= 1, "earlier batches must stay spooled");
    let total = 0;
    for (const f of files) total += (await Deno.stat(`${data.path}/spool/${f}`)).size;
    assert.ok(total <= 40 * 1024, `spool holds ${total} bytes, over its bound`);
    assert.match(proc.stderr(), /ERR.*Spool full.*dropped/);
    assert.ok(loggedBefore >= 1, "the log names the dropped messages");
    assert.ok(
      counted >= loggedBefore && counted <= droppedInLog(proc.stderr()),
      `l2_dropped_messages_total ${counted}: not the ${loggedBefore}..${
        droppedInLog(proc.stderr())
      } messages the log says were dropped`,
    );
  },
});

/** Messages the collector's "Spool full … dropped KEY with N messages" lines add up to. */
function droppedInLog(stderr: string): number {
  let total = 0;
  for (const m of stderr.matchAll(/Spool full .*? with (\d+) messages/g)) total += Number(m[1]);
  return total;
}

Deno.test({
  name:
    "collector quarantines a truncated and an emptied spool file, uploads the rest and marks both losses with dropped lines",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using s3 = await TestS3.start();
    await using data = await tempDir();
    await using exchange = await FakeExchange.start();
    startExchange(exchange, STREAMS.slice(0, 1));
    const env = {
      ...s3.env(),
      SYMBOL: "BTCUSDT",
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: data.path,
      BATCH_SECONDS: "1",
      METRICS_ADDR: "off",
    };
    // Fill the spool with a short outage, then stop.
    await s3.stop();
    const first = spawnCollector(env);
    await waitFor(
      async () =>
        (await listFiles(`${data.path}/spool`)).filter((f) => f.endsWith(".spool")).length >= 3,
      30_000,
      "three spooled batches",
    );
    first.kill("SIGTERM");
    assert.equal((await first.status).code, 0, first.stderr());
    const files = (await listFiles(`${data.path}/spool`)).filter((f) => f.endsWith(".spool"));
    const victims = files.slice(0, 2).map((f) => `${data.path}/spool/${f}`);
    const lost = await Promise.all(
      victims.map(async (v) => decodeSpoolFile(await Deno.readFile(v)).meta),
    );
    const bytes = await Deno.readFile(victims[0]);
    await Deno.writeFile(victims[0], bytes.subarray(0, Math.floor(bytes.length / 2)));
    // Nothing left to read: only the file's name tells what it held.
    await Deno.writeFile(victims[1], new Uint8Array(0));

    await s3.resume();
    const second = spawnCollector(env);
    await waitFor(
      async () =>
        (await listFiles(`${data.path}/spool`)).filter((f) => /^\d.*\.spool$/.test(f)).length === 0,
      30_000,
      "the spool to drain",
    );
    second.kill("SIGTERM");
    assert.equal((await second.status).code, 0, second.stderr());
    assert.deepEqual(await listFiles(`${data.path}/spool/quarantine`), files.slice(0, 2));
    assert.match(second.stderr(), /Quarantined .*not in the archive/);
    assert.ok((await s3.keys()).length >= files.length - 2);
    const dropped = (await storedEvents(s3, "dropped")).map((d) => ({
      stream: d.stream,
      reason: d.reason,
      messages: d.messages,
      firstRecvTs: d.first_recv_ts,
      lastRecvTs: d.last_recv_ts,
    }));
    assert.deepEqual(
      dropped.sort((a, b) => Number(a.firstRecvTs) - Number(b.firstRecvTs)),
      lost.map((m) => ({
        stream: STREAMS[0],
        reason: "spool file damaged",
        messages: m.messages,
        firstRecvTs: m.firstRecvTs,
        lastRecvTs: m.lastRecvTs,
      })).sort((a, b) => a.firstRecvTs - b.firstRecvTs),
    );
  },
});

Deno.test({
  name: "check passes against a working bucket and fails naming a missing one",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await FakeExchange.start();
    await using s3 = await TestS3.start();
    await using data = await tempDir();
    const env = {
      ...s3.env(),
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: data.path,
      METRICS_ADDR: "off",
    };
    const good = await runCollector(env, { args: ["check"] });
    assert.equal(good.code, 0, good.stdout + good.stderr);
    for (
      const name of ["config", "data dir", "s3 head-bucket", "s3 put + delete", "binance rest"]
    ) {
      assert.match(
        good.stdout,
        new RegExp(`^OK\\s+${name.replace("+", "\\+")}`, "m"),
        `${name} not OK`,
      );
    }
    assert.deepEqual(await s3.keys(), [], "the probe object must be deleted");
    assert.ok(exchange.restRequests.some((r) => r.path === "/api/v3/ping"));

    const bad = await runCollector({ ...env, S3_BUCKET_NAME: "missing-bucket" }, {
      args: ["check"],
    });
    assert.notEqual(bad.code, 0);
    assert.match(bad.stdout, /^FAIL\s+s3 head-bucket.*missing-bucket.*does not exist/m);
    assert.doesNotMatch(bad.stdout, /record anyway/, "run stops on a missing bucket");
    assert.doesNotMatch(bad.stdout + bad.stderr, /S3RVER/);

    // S3 away: a failure too, which says that `run` would go on, spooling.
    await s3.stop();
    const away = await runCollector(env, { args: ["check"] });
    assert.notEqual(away.code, 0);
    assert.match(
      away.stdout,
      /^FAIL\s+s3 head-bucket.*could not be reached.*would record anyway, spooling/m,
    );
  },
});

Deno.test("check with no bucket checks the local archive directory and Binance", async () => {
  await using exchange = await FakeExchange.start();
  await using data = await tempDir();
  const result = await runCollector(
    {
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: data.path,
      METRICS_ADDR: "off",
    },
    { args: ["check"] },
  );
  assert.equal(result.code, 0, result.stdout + result.stderr);
  assert.match(result.stdout, /^OK\s+archive dir/m);
  exchange.failRest(1, 503);
  const down = await runCollector(
    {
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: data.path,
      METRICS_ADDR: "off",
    },
    { args: ["check"] },
  );
  assert.equal(down.code, 1);
  assert.match(
    down.stdout,
    /^FAIL\s+binance rest.*503; `run` would record the named symbols anyway/m,
  );
  // No answer at all: `run` would go on, and the FAIL lines say so.
  const away = await runCollector(
    { ...unreachableBinance(), DATA_DIR: data.path, METRICS_ADDR: "off" },
    { args: ["check"] },
  );
  assert.equal(away.code, 1);
  assert.match(away.stdout, /^FAIL\s+binance rest.*would record the named symbols anyway/m);
  assert.match(away.stdout, /^FAIL\s+symbols.*would record the named symbols anyway/m);
});
