/**
 * The metrics the alert rules and the dashboard need (issue 18): upload
 * backlog, restarts, spool bound, upload latency, and failed disk writes
 * from the crash journal and the spool.
 */

import assert from "node:assert/strict";
import type { SealedBatch } from "../src/batch/batcher.ts";
import { GzipBody, localDeflater } from "../src/batch/body.ts";
import { ChunkPool } from "../src/batch/chunks.ts";
import { Journal } from "../src/store/journal.ts";
import { HealthTracker } from "../src/ops/health.ts";
import { handler } from "../src/ops/http.ts";
import { Metrics } from "../src/ops/metrics.ts";
import type { ObjectMeta } from "../src/archive/meta.ts";
import { putIfAbsent, type Sink } from "../src/store/sink.ts";
import { Spool } from "../src/store/spool.ts";
import { Uploader } from "../src/store/uploader.ts";
import { tempDir } from "./support/temp.ts";
import { withPutNew } from "./support/sink.ts";

const meta: ObjectMeta = { messages: 1, events: 0, firstRecvTs: 1, lastRecvTs: 1 };

function sealed(key: string): SealedBatch {
  const body = new GzipBody({ pool: new ChunkPool({ chunkSize: 64 }), deflater: localDeflater(1) });
  body.appendLine('{"a":1}');
  return { key, stream: "s", body, meta, textBytes: body.byteLength, heldBytes: body.heldBytes };
}

async function scrape(metrics: Metrics, extra: Partial<Parameters<typeof handler>[0]> = {}) {
  const response = await handler({
    metrics,
    tracker: new HealthTracker(0),
    version: "t",
    now: () => 3_600_000,
    residentBytes: () => 1,
    ...extra,
  })(new Request("http://ops.test/metrics"));
  return await response.text();
}

Deno.test("/metrics reports the upload backlog and the restarts of the last hour at scrape time", async () => {
  const metrics = new Metrics();
  let backlog = 4;
  const text = await scrape(metrics, { backlog: () => backlog, restartsLastHour: () => 2 });
  assert.match(text, /^l2_upload_backlog_batches 4$/m);
  assert.match(text, /^l2_restarts_last_hour 2$/m);
  backlog = 0;
  assert.match(await scrape(metrics, { backlog: () => backlog }), /^l2_upload_backlog_batches 0$/m);
  // Known failure targets show at 0 from the start; so does the spool bound until set.
  assert.match(text, /^l2_disk_write_failures_total\{target="journal"\} 0$/m);
  assert.match(text, /^l2_disk_write_failures_total\{target="spool"\} 0$/m);
  assert.match(text, /^l2_spool_max_bytes 0$/m);
  metrics.spoolMaxBytes.set(1024);
  assert.match(await scrape(metrics), /^l2_spool_max_bytes 1024$/m);
});

Deno.test("timeSink times every put into l2_upload_duration_seconds by outcome", async () => {
  const metrics = new Metrics();
  let fail = true;
  const sink: Sink = withPutNew({
    kind: "s3",
    location: "s3://b/p",
    put: () => fail ? Promise.reject(new Error("503")) : Promise.resolve(),
  });
  const timed = metrics.timeSink(sink);
  assert.equal(timed.kind, "s3");
  assert.equal(timed.location, "s3://b/p");
  await assert.rejects(timed.put("k", new Uint8Array(1), meta), /503/);
  fail = false;
  await timed.put("k", new Uint8Array(1), meta);
  await timed.put("k", new Uint8Array(1), meta);
  const text = await metrics.registry.metrics();
  assert.match(text, /^l2_upload_duration_seconds_count\{outcome="failed"\} 1$/m);
  assert.match(text, /^l2_upload_duration_seconds_count\{outcome="ok"\} 2$/m);
  assert.match(text, /^l2_upload_duration_seconds_bucket\{le="0.05",outcome="ok"\} 2$/m);
});

Deno.test("timeSink keeps a sink's never-replace put: a recovered batch cannot overwrite an object", async () => {
  const metrics = new Metrics();
  const stored = new Map<string, number>();
  const sink: Sink = {
    kind: "local",
    location: "/x",
    put: (key, body) => {
      stored.set(key, body.length);
      return Promise.resolve();
    },
    putNew: (key, body) => {
      if (stored.has(key)) return Promise.resolve(false);
      stored.set(key, body.length);
      return Promise.resolve(true);
    },
  };
  const timed = metrics.timeSink(sink);
  await timed.put("k", new Uint8Array(10), meta);
  assert.equal(await putIfAbsent(timed, { key: "k", body: new Uint8Array(7), meta }), false);
  assert.equal(stored.get("k"), 10, "the shorter recovered copy replaced the stored object");
  assert.equal(await putIfAbsent(timed, { key: "k2", body: new Uint8Array(7), meta }), true);
  assert.match(
    await metrics.registry.metrics(),
    /^l2_upload_duration_seconds_count\{outcome="ok"\} 3$/m,
  );
});

Deno.test("a spool write that fails (a disk error, not a full spool) is reported", async () => {
  await using tmp = await tempDir();
  const spool = await Spool.open(tmp.path, { maxBytes: 1_000_000 });
  spool.write = () => Promise.reject(new Error("EIO: i/o error"));
  const failures: unknown[] = [];
  const settled: string[] = [];
  const uploader = new Uploader({
    sink: withPutNew({
      kind: "s3",
      location: "x",
      put: () => Promise.reject(new Error("S3 down")),
    }),
    spool,
    concurrency: 1,
    maxAttempts: 1,
    retryInitialMs: 1,
    onSpoolWriteFailed: (error) => failures.push(error),
    onSettled: (_b, how) => settled.push(how),
  });
  uploader.submit(sealed("a.ndjson.gz"));
  await uploader.flush(AbortSignal.timeout(5000));
  assert.equal(failures.length, 1);
  assert.match(String(failures[0]), /EIO/);
  assert.deepEqual(settled, ["dropped"]);
});

const emptyBody = () => new GzipBody({ pool: new ChunkPool(), deflater: localDeflater(5) });

Deno.test({
  name: "a failed crash-journal write is reported on every failure",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using tmp = await tempDir();
    let failing = false;
    const realOpen = Deno.open;
    // Journal files whose writes fail while `failing`, like a full disk.
    const patched = async (path: string | URL, options?: Deno.OpenOptions) => {
      const file = await realOpen(path, options);
      const [write, writeSync] = [file.write.bind(file), file.writeSync.bind(file)];
      const full = () => new Error("ENOSPC: no space left on device");
      file.write = (bytes: Uint8Array) => failing ? Promise.reject(full()) : write(bytes);
      file.writeSync = (bytes: Uint8Array) => {
        if (failing) throw full();
        return writeSync(bytes);
      };
      return file;
    };
    Object.assign(Deno, { open: patched });
    let failures = 0;
    try {
      const journal = await Journal.start(tmp.path, {
        flushMs: 1_000_000,
        onWriteFailed: () => failures++,
      });
      try {
        journal.opened("k1", "s", emptyBody());
        await journal.flush();
        assert.equal(failures, 0);
        failing = true;
        journal.opened("k2", "s", emptyBody());
        await journal.flush();
        await journal.flush();
        assert.equal(failures, 2);
        failing = false;
        await journal.flush();
        assert.equal(failures, 2);
      } finally {
        await journal.close();
      }
    } finally {
      Object.assign(Deno, { open: realOpen });
    }
  },
});

Deno.test("a stopped stream's last-message age leaves /metrics, so its stale alert clears", async () => {
  for (const perStream of [true, false]) {
    const metrics = new Metrics({ perStream });
    let ages = new Map([["btcusdt@depth20@100ms", 300]]); // halted: 300 s quiet
    const get = handler({
      metrics,
      tracker: new HealthTracker(0),
      version: "test",
      messageAges: () => ages,
    });
    const scrape = async () =>
      (await (await get(new Request("http://127.0.0.1/metrics"))).text()).split("\n")
        .filter((line) => line.startsWith("l2_last_message_age_seconds{"));
    assert.equal((await scrape()).length, 1);
    ages = new Map(); // then delisted: the recorder no longer lists it
    assert.deepEqual(await scrape(), [], `perStream ${perStream}`);
  }
});
