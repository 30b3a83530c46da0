/**
 * Each stage of `run` (src/cli/stages/) started and disposed alone, with
 * fakes for its neighbours: the local sink in a temp dir, the fake exchange
 * on 127.0.0.1, and plain objects for the views one stage has of another.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Batcher, type SealedBatch } from "../src/batch/batcher.ts";
import { Feeds } from "../src/cli/stages/feeds.ts";
import { Ops } from "../src/cli/stages/ops.ts";
import { StartupError } from "../src/cli/stages/startup.ts";
import { keyFor, Storage } from "../src/cli/stages/storage.ts";
import { gzipLines } from "../src/archive/encode.ts";
import { planKey } from "../src/archive/keys.ts";
import { Spool } from "../src/store/spool.ts";
import { Journal } from "../src/store/journal.ts";
import { readLastReceive } from "../src/ops/receive_state.ts";
import { parseConfig } from "../src/config.ts";
import type { Config } from "../src/config_types.ts";
import { Telemetry } from "../src/ops/events.ts";
import { Metrics } from "../src/ops/metrics.ts";
import { Recorder } from "../src/feed/recorder.ts";
import { RestLimiter } from "../src/binance/rest.ts";
import { FakeExchange, partialDepthFeed } from "./support/fake_exchange.ts";
import { readArchive } from "./support/collector.ts";
import { tempDir } from "./support/temp.ts";
import { waitFor } from "./support/wait.ts";
import { freePort } from "./support/net_guard.ts";

const BTC = "btcusdt@depth20@100ms";

function configFor(dataDir: string, env: Record<string, string> = {}): Config {
  return parseConfig({
    SYMBOL: "BTCUSDT",
    DEPTH_LEVEL: "20",
    DATA_DIR: dataDir,
    METRICS_ADDR: "off",
    INSTANCE_ID: "test-box",
    // Never the real exchange: tests reach 127.0.0.1 only.
    BINANCE_WS_URL: "ws://127.0.0.1:9",
    BINANCE_REST_URL: "http://127.0.0.1:9",
    ...env,
  });
}

/** A batcher and a list of what was submitted: storage as the feeds see it. */
function fakeStore() {
  const submitted: SealedBatch[] = [];
  const batcher = new Batcher({
    batchMs: 60_000,
    maxLines: 10_000,
    planKey: (stream, firstRecvTs, seq) => `${stream}/${firstRecvTs}/${seq}`,
  });
  return {
    submitted,
    store: {
      batcher,
      submit: (b: SealedBatch) => submitted.push(b),
      sink: { kind: "local" as const, location: "memory" },
    },
  };
}

Deno.test("Storage alone stores a sealed batch in the local archive and empties its backlog", async () => {
  await using tmp = await tempDir();
  const config = configFor(tmp.path);
  const background = new AbortController();
  {
    await using storage = await Storage.open(config, {
      signal: background.signal,
      ...telemetered(),
      now: Date.now,
    });
    assert.equal(storage.sink.kind, "local");
    const line = `{"recv_ts":1700000000000000,"stream":"${BTC}","data":{"lastUpdateId":1}}`;
    storage.batcher.add(BTC, { text: line, recvTs: 1700000000000000, isData: true }, 0);
    for (const batch of storage.batcher.sealAll()) storage.submit(batch);
    assert.equal(storage.backlog(), 1);
    const left = await storage.flush(Date.now() + 5000);
    assert.deepEqual(left, []);
    background.abort();
    await storage.close(left);
    assert.equal(storage.backlog(), 0);
  }
  const lines = await readArchive(join(tmp.path, "archive"));
  assert.equal(lines.length, 1);
  assert.equal(lines[0].value.stream, BTC);
});

Deno.test("Storage with a local archive drains what an earlier run with S3 left in the spool", async () => {
  await using tmp = await tempDir();
  // Spooled while S3 was down; then S3_BUCKET_NAME was unset and the collector restarted.
  const key = planKey({
    prefix: "binance",
    market: "spot",
    streamType: "depth20@100ms",
    symbol: "BTCUSDT",
    firstRecvTs: 1700000000000000,
    instanceId: "test-box",
    seq: 0,
  });
  const line = `{"recv_ts":1700000000000000,"stream":"${BTC}","data":{"lastUpdateId":1}}`;
  const spool = await Spool.open(join(tmp.path, "spool"), { maxBytes: 1_000_000 });
  const meta = {
    messages: 1,
    events: 0,
    firstRecvTs: 1700000000000000,
    lastRecvTs: 1700000000000000,
  };
  assert.ok(await spool.write({ key, body: await gzipLines([line], 5), meta }));
  const background = new AbortController();
  {
    await using storage = await Storage.open(configFor(tmp.path), {
      signal: background.signal,
      ...telemetered(),
      now: Date.now,
    });
    assert.equal(storage.sink.kind, "local");
    await waitFor(() => storage.backlog() === 0, 5000, "the spool to drain");
    background.abort();
    await storage.close(await storage.flush(Date.now() + 2000));
  }
  const lines = await readArchive(join(tmp.path, "archive"));
  assert.deepEqual(lines.map((l) => l.value.stream), [BTC]);
  assert.deepEqual(
    await Array.fromAsync(Deno.readDir(join(tmp.path, "spool"))).then((e) =>
      e.filter((f) => f.isFile).map((f) => f.name)
    ),
    [],
  );
});

Deno.test("Storage alone: the run before's last receive time is the later of its stored one and its crash journal's", async () => {
  const journaled = (Date.now() + 5000) * 1000;
  for (const [stored, expected] of [[undefined, journaled], [journaled + 7, journaled + 7]]) {
    await using tmp = await tempDir();
    await crashJournal(join(tmp.path, "journal"), [journaled - 2, journaled]);
    const background = new AbortController();
    await using storage = await Storage.open(configFor(tmp.path), {
      signal: background.signal,
      ...telemetered(),
      now: Date.now,
      previousRecvTs: stored,
    });
    assert.equal(storage.receivedUntil, expected);
    // The journal's time is stored at once: a stop before the receive clock runs must not
    // lose it. (A stored time the journal does not pass is in its file already.)
    assert.equal(await readLastReceive(tmp.path), stored === undefined ? expected : undefined);
    background.abort();
    await storage.close(await storage.flush(Date.now() + 2000));
  }
});

/** A crash journal as a process killed after its last flush leaves it: one open batch of BTC. */
async function crashJournal(dir: string, recvTimes: readonly number[]): Promise<void> {
  const copy = `${dir}.live`;
  const journal = await Journal.start(copy, { flushMs: 60_000 });
  const batcher = new Batcher({
    batchMs: 60_000,
    maxLines: 1000,
    planKey: (stream, firstRecvTs, seq) => keyFor(configFor("/unused"), stream, firstRecvTs, seq),
    observer: journal,
  });
  recvTimes.forEach((recvTs, i) => {
    const text = `{"recv_ts":${recvTs},"stream":"${BTC}","data":{"lastUpdateId":${i + 1}}}`;
    batcher.add(BTC, { text, recvTs, isData: true }, 0);
  });
  await journal.flush();
  await Deno.mkdir(dir);
  for await (const entry of Deno.readDir(copy)) {
    if (entry.isFile) await Deno.copyFile(join(copy, entry.name), join(dir, entry.name));
  }
  batcher.sealAll();
  await journal.close();
}

Deno.test("Storage alone: a crash journal that cannot be read stops the start, and disposal leaves nothing running", async () => {
  await using tmp = await tempDir();
  // A file where the journal directory should be.
  await Deno.writeTextFile(join(tmp.path, "journal"), "not a directory");
  const open = Storage.open(configFor(tmp.path), {
    signal: new AbortController().signal,
    ...telemetered(),
    now: Date.now,
  });
  await assert.rejects(open, (error: Error) => {
    assert.ok(error instanceof StartupError);
    assert.match(error.message, /crash journal/);
    assert.ok(error.message.includes(join(tmp.path, "journal")), error.message);
    return true;
  });
});

Deno.test("Storage with a local archive starts when a file stands where the spool would be (it needs no spool)", async () => {
  await using tmp = await tempDir();
  await Deno.writeTextFile(join(tmp.path, "spool"), "not a directory");
  const background = new AbortController();
  {
    await using storage = await Storage.open(configFor(tmp.path), {
      signal: background.signal,
      ...telemetered(),
      now: Date.now,
    });
    const line = `{"recv_ts":1700000000000000,"stream":"${BTC}","data":{"lastUpdateId":1}}`;
    storage.batcher.add(BTC, { text: line, recvTs: 1700000000000000, isData: true }, 0);
    for (const batch of storage.batcher.sealAll()) storage.submit(batch);
    const left = await storage.flush(Date.now() + 5000);
    assert.deepEqual(left, []);
    background.abort();
    await storage.close(left);
  }
  assert.equal((await readArchive(join(tmp.path, "archive"))).length, 1);
  assert.equal(await Deno.readTextFile(join(tmp.path, "spool")), "not a directory");
});

Deno.test({
  name: "Storage with S3 stops the start naming the spool's path when a file stands there",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using tmp = await tempDir();
    await Deno.writeTextFile(join(tmp.path, "spool"), "not a directory");
    // Nothing listens there: the bucket check fails at once and the start goes on to the spool.
    const config = configFor(tmp.path, {
      S3_BUCKET_NAME: "l2-test-bucket",
      S3_ENDPOINT: `http://127.0.0.1:${freePort()}`,
      S3_FORCE_PATH_STYLE: "true",
      AWS_ACCESS_KEY_ID: "test",
      AWS_SECRET_ACCESS_KEY: "test",
    });
    const open = Storage.open(config, {
      signal: new AbortController().signal,
      ...telemetered(),
      now: Date.now,
    });
    await assert.rejects(open, (error: Error) => {
      assert.ok(error instanceof StartupError);
      assert.match(error.message, /cannot open the spool/);
      assert.ok(error.message.includes(join(tmp.path, "spool")), error.message);
      return true;
    });
  },
});

Deno.test("Feeds alone record the fake exchange's frames into the batcher and seal them at stop", async () => {
  await using exchange = await FakeExchange.start();
  exchange.setFeed(BTC, partialDepthFeed({ rate: 50, startId: 1_000 }));
  await using tmp = await tempDir();
  const config = configFor(tmp.path, {
    BINANCE_WS_URL: exchange.wsUrl,
    BINANCE_REST_URL: exchange.restUrl,
  });
  const { store, submitted } = fakeStore();
  const stop = new AbortController();
  await using feeds = await Feeds.open(config, {
    signal: stop.signal,
    store,
    ...telemetered(),
    now: Date.now,
  });
  assert.deepEqual(feeds.streams(), []);
  feeds.record({ nowMicros: () => Date.now() * 1000, tick: () => {} });
  assert.deepEqual(feeds.streams(), [BTC]);
  assert.equal(feeds.recording().symbols, 1);
  await waitFor(() => store.batcher.openLines >= 10, 5000, "frames to reach the batcher");
  stop.abort();
  await feeds.stopped();
  feeds.sealAll();
  const data = submitted.filter((b) => b.stream === BTC);
  assert.equal(data.length, 1);
  assert.ok(data[0].meta.messages >= 5, `${data[0].meta.messages} messages`);
  assert.equal(store.batcher.openLines, 0);
});

Deno.test("Feeds alone: a SYMBOL Binance does not list stops the start", async () => {
  await using exchange = await FakeExchange.start();
  await using tmp = await tempDir();
  const config = configFor(tmp.path, {
    SYMBOL: "BTCUSDT,NOSUCHCOIN",
    BINANCE_WS_URL: exchange.wsUrl,
    BINANCE_REST_URL: exchange.restUrl,
  });
  const { store } = fakeStore();
  const open = Feeds.open(config, {
    signal: new AbortController().signal,
    store,
    ...telemetered(),
    now: Date.now,
  });
  await assert.rejects(open, (error: Error) => {
    assert.ok(error instanceof StartupError);
    assert.match(error.message, /NOSUCHCOIN \(not listed on spot\)/);
    return true;
  });
  assert.equal(exchange.openCount, 0);
});

Deno.test("Ops alone serve /status from the views they are given and stop at disposal", async () => {
  await using exchange = await FakeExchange.start();
  await using tmp = await tempDir();
  const config = configFor(tmp.path, {
    METRICS_ADDR: "127.0.0.1:0",
    BINANCE_REST_URL: exchange.restUrl,
  });
  const { store } = fakeStore();
  const background = new AbortController();
  const suspended: string[] = [];
  let port = 0;
  {
    await using ops = await Ops.open(config, {
      signal: background.signal,
      ...telemetered(),
      now: Date.now,
      version: "9.9.9",
    });
    const before = ops.address;
    assert.equal(before, undefined, "no server before start");
    const clock = ops.start(
      {
        backlog: () => 7,
        spoolMaxBytes: undefined,
        openBatches: () => ({ bytes: 0, textBytes: 0 }),
      },
      {
        recorder: new Recorder({ batcher: store.batcher, submit: () => {} }),
        restLimiter: new RestLimiter({ market: "spot" }),
        streams: () => [BTC],
        recording: () => ({ symbols: 1, streams: 1, awaitingFirstSnapshot: [] }),
        suspended: () => suspended.push("suspended"),
      },
    );
    assert.ok(clock.nowMicros() > 1_700_000_000_000_000);
    const addr = ops.address;
    assert.ok(addr && addr.port > 0);
    port = addr.port;
    const response = await fetch(`http://127.0.0.1:${port}/status`);
    const status = await response.json();
    assert.equal(status.version, "9.9.9");
    assert.equal(status.lastUpload.backlog, 7);
    assert.deepEqual(status.recording, { symbols: 1, streams: 1, awaitingFirstSnapshot: [] });
    background.abort();
  }
  // Disposed: the server has stopped listening.
  await assert.rejects(fetch(`http://127.0.0.1:${port}/healthz`));
  assert.deepEqual(suspended, []);
});

Deno.test("Ops alone: a METRICS_ADDR in use stops the start with a start-up error", async () => {
  await using tmp = await tempDir();
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const config = configFor(tmp.path, { METRICS_ADDR: `127.0.0.1:${taken.addr.port}` });
  const { store } = fakeStore();
  await using ops = await Ops.open(config, {
    signal: new AbortController().signal,
    ...telemetered(),
    now: Date.now,
  });
  assert.throws(
    () =>
      ops.start(
        {
          backlog: () => 0,
          spoolMaxBytes: undefined,
          openBatches: () => ({ bytes: 0, textBytes: 0 }),
        },
        {
          recorder: new Recorder({ batcher: store.batcher, submit: () => {} }),
          restLimiter: new RestLimiter({
            market: "spot",
            fetch: () => Promise.reject(new Error("no exchange here")),
          }),
          streams: () => [],
          recording: () => ({ symbols: 0, streams: 0, awaitingFirstSnapshot: [] }),
          suspended: () => {},
        },
      ),
    (error: Error) => error instanceof StartupError && /already in use/.test(error.message),
  );
});

/** Metrics and the named events that move them, as `run` makes them. */
function telemetered(): { metrics: Metrics; telemetry: Telemetry } {
  const metrics = new Metrics();
  return { metrics, telemetry: new Telemetry({ metrics, market: "spot", now: Date.now }) };
}

Deno.test("a batch's key names the symbol in NFC, as --symbol and DuckDB queries have it", () => {
  const config = configFor("/tmp/unused");
  // Binance names streams with the lower-cased symbol: İ (U+0130) comes back as I + U+0307.
  const key = keyFor(config, `${"İSTANBULUSDT".toLowerCase()}@depth@100ms`, 1700000000000000, 0);
  const symbol = /symbol=([^/]+)\//.exec(key)?.[1];
  assert.equal(symbol, "İSTANBULUSDT");
  assert.equal(symbol, symbol?.normalize("NFC"));
});
