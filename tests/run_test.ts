/**
 * The whole pipeline in-process: `run` (src/cli/run.ts) against the fake
 * exchange with the local sink in a temp dir, stopped through its shutdown
 * signal, and the archive compared with what the exchange wrote.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { parseKey } from "../src/archive/keys.ts";
import { run } from "../src/cli/run.ts";
import { parseConfig } from "../src/config.ts";
import { FakeExchange, partialDepthFeed } from "./support/fake_exchange.ts";
import { type ArchivedLine, rawData, readArchive } from "./support/collector.ts";
import { silentServer } from "./support/net_guard.ts";
import { listFiles, tempDir } from "./support/temp.ts";
import { delay, waitFor } from "./support/wait.ts";

const BTC = "btcusdt@depth20@100ms";
const ETH = "ethusdt@depth20@100ms";

interface Recording {
  readonly exchange: FakeExchange;
  readonly archiveDir: string;
  readonly lines: ArchivedLine[];
  readonly files: string[];
}

/**
 * Runs the collector against `exchange` until `during` returns, then aborts
 * shutdown, waits for `run` to return and reads the archive.
 */
async function record(
  exchange: FakeExchange,
  dataDir: string,
  env: Record<string, string>,
  during: () => Promise<void>,
): Promise<Recording> {
  const config = parseConfig({
    SYMBOL: "BTCUSDT,ETHUSDT",
    DEPTH_LEVEL: "20",
    UPDATE_SPEED_MS: "100",
    BINANCE_WS_URL: exchange.wsUrl,
    BINANCE_REST_URL: exchange.restUrl,
    DATA_DIR: dataDir,
    METRICS_ADDR: "off",
    BATCH_SECONDS: "1",
    INSTANCE_ID: "test-box",
    ...env,
  });
  const shutdown = new AbortController();
  let started = false;
  const running = run(config, { shutdown: shutdown.signal, onStarted: () => started = true });
  try {
    await waitFor(() => started, 2000, "run to start");
    await waitFor(() => exchange.openCount === 1, 2000, "the collector to connect");
    await during();
    // Nothing in flight at the stop: a frame written while the collector closes its socket
    // is dropped by the closing socket, counted as sent and never received.
    exchange.stall(60_000);
    await delay(100);
  } finally {
    shutdown.abort();
    await running;
  }
  const archiveDir = join(dataDir, "archive");
  return {
    exchange,
    archiveDir,
    lines: await readArchive(archiveDir),
    files: await listFiles(archiveDir),
  };
}

/** Data lines of one stream as the frames they came from, in archive order. */
function framesOf(lines: readonly ArchivedLine[], stream: string): string[] {
  return lines
    .filter((l) => l.value.event === undefined && l.value.stream === stream)
    .map((l) => `{"stream":${JSON.stringify(stream)},"data":${rawData(l)}}`);
}

function eventsOf(lines: readonly ArchivedLine[], event: string): ArchivedLine["value"][] {
  return lines.filter((l) => l.value.event === event).map((l) => l.value);
}

Deno.test("run archives every message exactly once, byte-identical, with connection and malformed events", async () => {
  await using exchange = await FakeExchange.start();
  exchange.setFeed(BTC, partialDepthFeed({ rate: 50, startId: 1_000 }));
  exchange.setFeed(ETH, partialDepthFeed({ rate: 50, startId: 9_000 }));
  await using tmp = await tempDir();
  const garbage = `{"stream":"${BTC}","data":{"lastUpdateId":12,"bids":[["1.0`;
  const { lines, files } = await record(exchange, tmp.path, {}, async () => {
    await waitFor(() => exchange.sentCountFor(BTC) >= 20, 2000, "20 messages");
    assert.equal(exchange.sendRaw(garbage), 1);
    // Past BATCH_SECONDS, so some batches seal by age while running.
    await delay(1300);
  });

  for (const stream of [BTC, ETH]) {
    const sent = exchange.sentFor(stream).map((f) => f.text);
    assert.ok(sent.length >= 60, `${stream}: only ${sent.length} sent`);
    assert.deepEqual(
      framesOf(lines, stream),
      sent,
      `${stream}: archive differs from what was sent`,
    );
  }

  const malformed = eventsOf(lines, "malformed");
  assert.equal(malformed.length, 1);
  assert.equal(malformed[0].raw, garbage);
  assert.equal(malformed[0].stream, BTC, "filed under the stream the broken frame names");

  const connected = eventsOf(lines, "connected");
  assert.deepEqual(connected.map((v) => v.stream).sort(), [BTC, ETH]);
  assert.ok(connected.every((v) => v.conn === 1));
  const disconnected = eventsOf(lines, "disconnected");
  assert.deepEqual(disconnected.map((v) => v.stream).sort(), [BTC, ETH]);
  assert.ok(disconnected.every((v) => v.cause === "shutdown"), JSON.stringify(disconnected));

  for (const stream of [BTC, ETH]) {
    const ofStream = lines.filter((l) => l.value.stream === stream);
    // Each stream's recording starts with `connected` and ends with `disconnected`.
    assert.equal(ofStream[0].value.event, "connected");
    assert.equal(ofStream[ofStream.length - 1].value.event, "disconnected");
    const stamps = ofStream.map((l) => l.value.recv_ts);
    assert.deepEqual(stamps, [...stamps].sort((a, b) => a - b), `${stream}: recv_ts out of order`);
    assert.ok(new Set(ofStream.map((l) => l.key)).size >= 2, `${stream}: never sealed by age`);
  }

  const objects = files.filter((f) => f.endsWith(".ndjson.gz"));
  assert.ok(objects.every((key) => parseKey(key)?.instanceId === "test-box"), objects.join("\n"));
  assert.ok(objects.every((key) => key.includes("/channel=depth20@100ms/")));
  assert.deepEqual(files.filter((f) => f.includes(".tmp-")), []);
});

Deno.test("run with MAX_MESSAGES_PER_BATCH=5 writes objects of at most 5 lines and loses nothing", async () => {
  await using exchange = await FakeExchange.start();
  exchange.setFeed(BTC, partialDepthFeed({ rate: 100, startId: 1_000 }));
  exchange.setFeed(ETH, partialDepthFeed({ rate: 100, startId: 9_000 }));
  await using tmp = await tempDir();
  const { lines, files } = await record(
    exchange,
    tmp.path,
    { MAX_MESSAGES_PER_BATCH: "5", BATCH_SECONDS: "60" },
    () => waitFor(() => exchange.sentCountFor(ETH) >= 40, 2000, "40 messages"),
  );

  for (const stream of [BTC, ETH]) {
    assert.deepEqual(framesOf(lines, stream), exchange.sentFor(stream).map((f) => f.text));
  }
  const objects = files.filter((f) => f.endsWith(".ndjson.gz"));
  const linesPerObject = new Map<string, number>();
  for (const line of lines) linesPerObject.set(line.key, (linesPerObject.get(line.key) ?? 0) + 1);
  assert.equal(linesPerObject.size, objects.length, "an object with no lines");
  for (const [key, count] of linesPerObject) assert.ok(count <= 5, `${key} holds ${count} lines`);
  assert.ok(objects.length >= 16, `only ${objects.length} objects`);

  // Each object's sidecar agrees with its contents.
  for (const key of objects) {
    const meta = JSON.parse(await Deno.readTextFile(join(tmp.path, "archive", `${key}.meta.json`)));
    const ofKey = lines.filter((l) => l.key === key);
    assert.equal(Number(meta.messages), ofKey.filter((l) => l.value.event === undefined).length);
    assert.equal(Number(meta.events), ofKey.filter((l) => l.value.event !== undefined).length);
    assert.equal(Number(meta["first-recv-ts"]), ofKey[0].value.recv_ts);
  }
  assert.deepEqual(files.filter((f) => f.includes(".tmp-")), []);
});

Deno.test("run with the local sink and a small upload queue drops nothing when every batch seals at once", async () => {
  await using exchange = await FakeExchange.start();
  const symbols = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT"];
  const streams = symbols.map((s) => `${s.toLowerCase()}@depth20@100ms`);
  streams.forEach((stream, i) =>
    exchange.setFeed(stream, partialDepthFeed({ rate: 50, startId: 1_000 * (i + 1) }))
  );
  await using tmp = await tempDir();
  const { lines } = await record(
    exchange,
    tmp.path,
    {
      SYMBOL: symbols.join(","),
      BATCH_SECONDS: "60",
      // Open batches up to 4 × 64 KB; shutdown seals them all into a queue of 64 KB,
      // one write at a time: they must borrow the room they leave, not be dropped.
      UPLOAD_QUEUE_MAX_BYTES: "64KB",
      UPLOAD_CONCURRENCY: "1",
    },
    () => waitFor(() => exchange.sentCountFor(streams[5]) >= 40, 3000, "40 messages a stream"),
  );
  for (const stream of streams) {
    assert.deepEqual(framesOf(lines, stream), exchange.sentFor(stream).map((f) => f.text), stream);
  }
});

Deno.test({
  name:
    "a shutdown during start-up ends the waits for Binance and S3: run returns at once, recording nothing",
  // The SDK keeps sockets to the silent server past the test.
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    // A server that accepts connections and never answers: Binance and S3 both hang.
    using silent = silentServer();
    const hole = silent.host;
    await using tmp = await tempDir();
    const config = parseConfig({
      SYMBOL: "BTCUSDT",
      BINANCE_WS_URL: `ws://${hole}`,
      BINANCE_REST_URL: `http://${hole}`,
      S3_BUCKET_NAME: "bucket",
      S3_ENDPOINT: `http://${hole}`,
      S3_FORCE_PATH_STYLE: "true",
      DATA_DIR: tmp.path,
      METRICS_ADDR: "off",
    });
    Deno.env.set("AWS_ACCESS_KEY_ID", "test");
    Deno.env.set("AWS_SECRET_ACCESS_KEY", "test");
    const shutdown = new AbortController();
    let started = false;
    const running = run(config, { shutdown: shutdown.signal, onStarted: () => started = true });
    try {
      await delay(500); // inside the bucket check (it would wait 3 s, then exchangeInfo 3 s)
      const asked = performance.now();
      shutdown.abort();
      await running;
      const took = performance.now() - asked;
      // launchd's ExitTimeOut is 30 s; DESIGN: exit within 10 s of the signal.
      assert.ok(took < 5000, `run returned ${Math.round(took)} ms after the shutdown`);
      assert.equal(started, false, "nothing was started");
    } finally {
      Deno.env.delete("AWS_ACCESS_KEY_ID");
      Deno.env.delete("AWS_SECRET_ACCESS_KEY");
    }
  },
});
