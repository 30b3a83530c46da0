import assert from "node:assert/strict";
import { gunzipSync } from "node:zlib";
import type { SealedBatch } from "../src/batch/batcher.ts";
import { type Deflater, GzipBody, localDeflater, SpillLostError } from "../src/batch/body.ts";
import { ChunkPool } from "../src/batch/chunks.ts";
import { GzipPool, workerDeflater } from "../src/batch/compress.ts";
import { localSink } from "../src/store/local.ts";
import type { ObjectMeta } from "../src/archive/meta.ts";
import type { Sink } from "../src/store/sink.ts";
import { Spool } from "../src/store/spool.ts";
import { Uploader } from "../src/store/uploader.ts";
import { listFiles, tempDir } from "./support/temp.ts";
import { withPutNew } from "./support/sink.ts";
import { waitFor } from "./support/wait.ts";

const meta: ObjectMeta = { messages: 1, events: 0, firstRecvTs: 1, lastRecvTs: 1 };
// 8-byte chunks: a one-line batch ('{"a":1}' and its newline) holds exactly 8 bytes.
const batch = (key: string, lines = ['{"a":1}'], deflater: Deflater = localDeflater(1)) => {
  const body = new GzipBody({ pool: new ChunkPool({ chunkSize: 8 }), deflater });
  for (const line of lines) body.appendLine(line);
  return {
    key,
    stream: "s",
    body,
    meta,
    textBytes: body.byteLength,
    heldBytes: body.heldBytes,
  } satisfies SealedBatch;
};

function recordingSink(failFirst = 0): Sink & { puts: string[]; attempts: number } {
  let failures = failFirst;
  const sink = withPutNew({
    kind: "local" as const,
    location: "memory",
    puts: [] as string[],
    attempts: 0,
    put(key: string): Promise<void> {
      sink.attempts++;
      if (failures-- > 0) return Promise.reject(new Error("disk hiccup"));
      sink.puts.push(key);
      return Promise.resolve();
    },
  });
  return sink;
}

Deno.test("local sink writes the object and its metadata sidecar under the key, with no temp files left", async () => {
  await using tmp = await tempDir();
  const sink = localSink(tmp.path);
  await sink.put("p/x=1/a.ndjson.gz", new Uint8Array([1, 2, 3]), { ...meta, lastUpdateId: 9 });
  assert.deepEqual(await listFiles(tmp.path), ["p/x=1/a.ndjson.gz", "p/x=1/a.ndjson.gz.meta.json"]);
  assert.deepEqual([...await Deno.readFile(`${tmp.path}/p/x=1/a.ndjson.gz`)], [1, 2, 3]);
  const sidecar = JSON.parse(await Deno.readTextFile(`${tmp.path}/p/x=1/a.ndjson.gz.meta.json`));
  assert.equal(sidecar["last-update-id"], "9");
  assert.equal(sidecar.messages, "1");
});

Deno.test("local sink makes a directory again when it was removed while running", async () => {
  await using tmp = await tempDir();
  const sink = localSink(tmp.path);
  await sink.put("p/x=1/a.ndjson.gz", new Uint8Array([1]), meta);
  await Deno.remove(`${tmp.path}/p`, { recursive: true });
  await sink.put("p/x=1/b.ndjson.gz", new Uint8Array([2]), meta);
  assert.deepEqual(await listFiles(tmp.path), ["p/x=1/b.ndjson.gz", "p/x=1/b.ndjson.gz.meta.json"]);
});

Deno.test("uploader stores every submitted batch gzipped and flush waits for them", async () => {
  await using tmp = await tempDir();
  const stored: string[] = [];
  const uploader = new Uploader({
    sink: localSink(tmp.path),
    concurrency: 2,
    onSettled: (b, how) => how === "stored" && stored.push(b.key),
  });
  for (let i = 0; i < 5; i++) uploader.submit(batch(`k${i}.ndjson.gz`, [`{"i":${i}}`]));
  const left = await uploader.flush(AbortSignal.timeout(5000));
  assert.deepEqual(left, []);
  assert.deepEqual(stored.sort(), [
    "k0.ndjson.gz",
    "k1.ndjson.gz",
    "k2.ndjson.gz",
    "k3.ndjson.gz",
    "k4.ndjson.gz",
  ]);
  const text = new TextDecoder().decode(
    gunzipSync(await Deno.readFile(`${tmp.path}/k3.ndjson.gz`)),
  );
  assert.equal(text, '{"i":3}\n');
});

Deno.test("uploader retries a failing put until it succeeds", async () => {
  const sink = recordingSink(2);
  const failures: unknown[] = [];
  const uploader = new Uploader({
    sink,
    concurrency: 1,
    retryInitialMs: 5,
    retryMaxMs: 20,
    onFailedAttempt: (_b, e) => failures.push(e),
  });
  uploader.submit(batch("x"));
  assert.deepEqual(await uploader.flush(AbortSignal.timeout(5000)), []);
  assert.deepEqual(sink.puts, ["x"]);
  assert.equal(sink.attempts, 3);
  assert.equal(failures.length, 2);
});

Deno.test("uploader returns the batches it could not store when flush is cut short", async () => {
  const sink = recordingSink(Infinity);
  const uploader = new Uploader({
    sink,
    concurrency: 1,
    retryInitialMs: 5,
    retryMaxMs: 10,
  });
  uploader.submit(batch("a"));
  uploader.submit(batch("b"));
  const left = await uploader.flush(AbortSignal.timeout(200));
  assert.deepEqual(left.map((b) => b.key).sort(), ["a", "b"]);
  assert.ok(sink.attempts >= 2);
});

// Backoffs of up to 10 minutes (full jitter: a uniform wait below the cap): were the wait not cut
// short, the batch would stay unstored long after each test's bound.
const LONG_BACKOFF = { retryInitialMs: 600_000, retryMaxMs: 600_000 };

Deno.test("uploader: retries waiting out their backoff go at once when a put succeeds after a run of failures", async () => {
  let full = true;
  const attempts: string[] = [];
  const stored: string[] = [];
  const sink: Sink = withPutNew({
    kind: "local",
    location: "memory",
    put(key: string): Promise<void> {
      attempts.push(key);
      if (full) return Promise.reject(new Error("ENOSPC: no space left on device"));
      stored.push(key);
      return Promise.resolve();
    },
  });
  const uploader = new Uploader({ sink, concurrency: 4, ...LONG_BACKOFF });
  for (const key of ["a", "b", "c"]) uploader.submit(batch(key));
  await waitFor(() => attempts.length === 3, 2000, "three failed attempts: the disk looks full");
  full = false; // the disk has room again
  uploader.submit(batch("d"));
  await waitFor(() => stored.length === 4, 2000, "a, b and c stored after d's put worked");
  assert.deepEqual(stored.sort(), ["a", "b", "c", "d"]);
  assert.deepEqual(await uploader.flush(AbortSignal.timeout(1000)), []);
});

/** A sink that fails the keys in `failing` (mutable) and counts every attempt. */
function failingSink(failing: Set<string>) {
  const attempts = new Map<string, number>();
  const sink: Sink = withPutNew({
    kind: "local",
    location: "memory",
    put(key: string): Promise<void> {
      attempts.set(key, (attempts.get(key) ?? 0) + 1);
      return failing.has(key) ? Promise.reject(new Error("SlowDown")) : Promise.resolve();
    },
  });
  return { sink, attempts };
}

Deno.test("uploader: a put that keeps failing while others succeed waits out its backoff", async () => {
  // One key throttled (S3 SlowDown on its prefix, say); the others go through.
  const { sink, attempts } = failingSink(new Set(["bad"]));
  const uploader = new Uploader({ sink, concurrency: 2, ...LONG_BACKOFF });
  uploader.submit(batch("bad"));
  await waitFor(() => attempts.get("bad") === 1, 2000, "bad's first attempt");
  for (let i = 0; i < 20; i++) {
    uploader.submit(batch(`good${i}`));
    await waitFor(() => attempts.has(`good${i}`), 2000, `good${i} stored`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  // Successes between single failures do not make the sink look down: no early retry.
  assert.equal(attempts.get("bad"), 1);
  const left = await uploader.flush(AbortSignal.timeout(50));
  assert.deepEqual(left.map((b) => b.key), ["bad"]);
});

Deno.test("uploader: several keys failing together among successes are woken early once, not at every success", async () => {
  // A throttled prefix holding several keys; the other streams' puts go through.
  const failing = ["bad1", "bad2", "bad3"];
  const { sink, attempts } = failingSink(new Set(failing));
  const uploader = new Uploader({ sink, concurrency: 8, ...LONG_BACKOFF });
  for (const key of failing) uploader.submit(batch(key));
  await waitFor(() => failing.every((k) => attempts.get(k) === 1), 2000, "first attempts");
  for (let i = 0; i < 20; i++) {
    uploader.submit(batch(`good${i}`));
    await waitFor(() => attempts.has(`good${i}`), 2000, `good${i} stored`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  // Three failures in a row: the first success woke them; their own run of failures did not
  // make each later success wake them again.
  for (const key of failing) assert.equal(attempts.get(key), 2, key);
  const left = await uploader.flush(AbortSignal.timeout(50));
  assert.deepEqual(left.map((b) => b.key).sort(), failing);
});

Deno.test("uploader: a recovery right after a false one ends the backoffs when the wake interval is up", async () => {
  const failing = new Set(["a", "b", "c"]);
  const attempts = new Map<string, number>();
  const stored: string[] = [];
  const sink: Sink = withPutNew({
    kind: "local",
    location: "memory",
    put(key: string): Promise<void> {
      attempts.set(key, (attempts.get(key) ?? 0) + 1);
      if (failing.has(key)) return Promise.reject(new Error("ENOSPC: no space left on device"));
      stored.push(key);
      return Promise.resolve();
    },
  });
  const uploader = new Uploader({ sink, concurrency: 8, wakeEveryMs: 300, ...LONG_BACKOFF });
  for (const key of failing) uploader.submit(batch(key));
  await waitFor(() => attempts.size === 3, 2000, "three failed attempts");
  uploader.submit(batch("small")); // a small object fits on the nearly full disk: a false recovery
  await waitFor(
    () => [...failing].every((k) => attempts.get(k) === 2),
    2000,
    "woken, failed again",
  );
  failing.clear(); // now the disk has room
  uploader.submit(batch("d")); // stored, but within 300 ms of the last wake
  await waitFor(() => stored.length === 5, 2000, "a, b and c stored once the interval was up");
  assert.deepEqual(stored.slice(0, 2), ["small", "d"]);
  assert.deepEqual(await uploader.flush(AbortSignal.timeout(1000)), []);
});

Deno.test("uploader: keys failing together among successes are woken at growing intervals", async () => {
  const failing = new Set(["bad1", "bad2", "bad3"]);
  const { sink, attempts } = failingSink(failing);
  const uploader = new Uploader({ sink, concurrency: 8, wakeEveryMs: 100, ...LONG_BACKOFF });
  for (const key of failing) uploader.submit(batch(key));
  await waitFor(() => attempts.size === 3, 2000, "first attempts");
  // Other streams succeed every 20 ms for 1.5 s: at a fixed 100 ms the failing keys would be woken
  // ~15 times; doubling (100, 200, 400, 800 ms) wakes them about 4 times.
  for (let i = 0; i < 75; i++) {
    uploader.submit(batch(`good${i}`));
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  for (const key of failing) {
    const n = attempts.get(key) ?? 0;
    assert.ok(n >= 2 && n <= 7, `${key}: ${n} attempts`);
  }
  await uploader.flush(AbortSignal.timeout(50));
});

Deno.test("uploader: a wake still deferred when everything has settled does not outlive flush", async () => {
  await using tmp = await tempDir();
  const spool = await Spool.open(tmp.path, { maxBytes: 1_000_000 });
  const timers = trackTimers();
  const failing = new Set(["a", "b", "c"]);
  const { sink, attempts } = failingSink(failing);
  const uploader = new Uploader({
    sink,
    spool,
    maxAttempts: 2,
    concurrency: 8,
    wakeEveryMs: 60_000,
    ...LONG_BACKOFF,
  });
  for (const key of failing) uploader.submit(batch(key));
  await waitFor(() => attempts.size === 3, 2000, "first attempts");
  uploader.submit(batch("s1")); // wakes a, b and c: their second attempts fail and spool them
  await waitFor(() => spool.count === 3, 2000, "a, b and c spooled");
  uploader.submit(batch("s2")); // after a run of failures again: a wake deferred by 60 s
  await waitFor(() => attempts.has("s2"), 2000, "s2 stored");
  // Everything settled; the deferred wake's 60 s timer must go with flush, or it holds the process.
  try {
    assert.deepEqual(await uploader.flush(AbortSignal.timeout(1000)), []);
    assert.equal(timers.longLive(), 0, "a long timer of the uploader outlived flush");
  } finally {
    timers.restore();
  }
});

/** Tracks timers started from now: `longLive()` counts those of 10 s or more not yet fired or cleared. */
function trackTimers() {
  const timers = globalThis as unknown as {
    setTimeout(fn: () => void, ms?: number): number;
    clearTimeout(id?: number): void;
  };
  const [set, clear] = [timers.setTimeout, timers.clearTimeout];
  const long = new Set<number>();
  timers.setTimeout = (fn, ms) => {
    const id = set(() => {
      long.delete(id);
      fn();
    }, ms);
    if ((ms ?? 0) >= 10_000) long.add(id);
    return id;
  };
  timers.clearTimeout = (id) => {
    if (id !== undefined) long.delete(id);
    clear(id);
  };
  return {
    longLive: () => long.size,
    restore: () => {
      timers.setTimeout = set;
      timers.clearTimeout = clear;
    },
  };
}

Deno.test("uploader: shutdown ends a retry's backoff and returns its batch unstored", async () => {
  const sink = recordingSink(Infinity);
  const uploader = new Uploader({ sink, concurrency: 1, ...LONG_BACKOFF });
  uploader.submit(batch("a"));
  await waitFor(() => sink.attempts === 1, 2000, "a's first attempt");
  const started = Date.now();
  const left = await uploader.flush(AbortSignal.timeout(50));
  assert.deepEqual(left.map((b) => b.key), ["a"]);
  // Settled by the cancelled backoff, not by the wait for puts that never return (5 s).
  assert.ok(Date.now() - started < 4000, `flush took ${Date.now() - started} ms`);
  assert.equal(sink.attempts, 1);
});

Deno.test("uploader: flush returns a batch whose put never returns, with those not stored", async () => {
  const sink: Sink = withPutNew({
    kind: "local",
    location: "memory",
    put: () => new Promise<void>(() => {}),
  });
  const uploader = new Uploader({ sink, concurrency: 1, cancelGraceMs: 100 });
  uploader.submit(batch("hung"));
  uploader.submit(batch("queued"));
  const left = await uploader.flush(AbortSignal.timeout(50));
  assert.deepEqual(left.map((b) => b.key).sort(), ["hung", "queued"]);
});

Deno.test("uploader does not retry an error its sink calls permanent", async () => {
  const sink = recordingSink(Infinity);
  const uploader = new Uploader({
    sink,
    concurrency: 1,
    retryInitialMs: 5,
    isRetryable: () => false,
  });
  uploader.submit(batch("a"));
  const left = await uploader.flush(AbortSignal.timeout(2000));
  assert.deepEqual(left.map((b) => b.key), ["a"]);
  assert.equal(sink.attempts, 1);
});

Deno.test("uploader without a spool drops and reports batches beyond its queue bound, but never one it must keep", async () => {
  let release!: () => void;
  const stuck = new Promise<void>((r) => release = r);
  const sink: Sink = withPutNew({ kind: "local", location: "memory", put: () => stuck });
  const settled: Array<[string, string]> = [];
  const uploader = new Uploader({
    sink,
    concurrency: 1,
    maxQueueBytes: 10,
    onSettled: (b, how) => settled.push([b.key, how]),
  });
  uploader.submit(batch("a")); // taken by the one worker
  uploader.submit(batch("b")); // queued: 8 bytes
  uploader.submit(batch("c")); // 16 > 10: dropped
  assert.deepEqual(settled, [["c", "dropped"]]);
  uploader.submit(batch("r"), { keep: true }); // recovered from the journal: queued anyway
  assert.deepEqual(settled, [["c", "dropped"]]);
  release();
  assert.deepEqual(await uploader.flush(AbortSignal.timeout(2000)), []);
  assert.deepEqual(settled.map(([k, how]) => `${k}:${how}`).sort(), [
    "a:stored",
    "b:stored",
    "c:dropped",
    "r:stored",
  ]);
});

Deno.test("uploader without a spool lets its queue borrow the room it is lent before dropping", async () => {
  let release!: () => void;
  const stuck = new Promise<void>((r) => release = r);
  const sink: Sink = withPutNew({ kind: "local", location: "memory", put: () => stuck });
  const settled: string[] = [];
  let lent = 16;
  const uploader = new Uploader({
    sink,
    concurrency: 1,
    maxQueueBytes: 10,
    borrowable: () => lent,
    onSettled: (b, how) => settled.push(`${b.key}:${how}`),
  });
  uploader.submit(batch("a")); // taken by the one worker
  for (const key of ["b", "c", "d"]) uploader.submit(batch(key)); // 24 bytes ≤ 10 + 16
  assert.deepEqual(settled, []);
  assert.equal(uploader.borrowedBytes, 14, "what the queue holds beyond its own bound");
  lent = 0; // the open batches filled up again: nothing more to lend
  uploader.submit(batch("e"));
  assert.deepEqual(settled, ["e:dropped"]);
  release();
  assert.deepEqual(await uploader.flush(AbortSignal.timeout(2000)), []);
  assert.deepEqual(settled.sort(), ["a:stored", "b:stored", "c:stored", "d:stored", "e:dropped"]);
});

Deno.test("uploader compresses on its own thread when the gzip worker fails, and loses nothing", async () => {
  await using tmp = await tempDir();
  const pool = new GzipPool({ level: 1 });
  const settled: string[] = [];
  const uploader = new Uploader({
    sink: localSink(tmp.path),
    concurrency: 2,
    onSettled: (b, how) => settled.push(`${b.key}:${how}`),
  });
  const lines = ['{"a":1}', '{"b":"é"}'];
  const deflater = workerDeflater(pool, { hereBytes: 0 });
  uploader.submit(batch("k/0", lines, deflater));
  pool.close(); // the worker goes away with a call in flight, and before the next one
  uploader.submit(batch("k/1", lines, deflater));
  assert.deepEqual(await uploader.flush(AbortSignal.timeout(5000)), []);
  assert.deepEqual(settled.sort(), ["k/0:stored", "k/1:stored"]);
  for (const key of ["k/0", "k/1"]) {
    const text = new TextDecoder().decode(gunzipSync(await Deno.readFile(`${tmp.path}/${key}`)));
    assert.equal(text, lines.join("\n") + "\n");
  }
});

Deno.test("uploader does not count batches it must keep against its bound", async () => {
  let release!: () => void;
  const stuck = new Promise<void>((r) => release = r);
  const sink: Sink = withPutNew({ kind: "local", location: "memory", put: () => stuck });
  const settled: string[] = [];
  const uploader = new Uploader({
    sink,
    concurrency: 1,
    maxQueueBytes: 10,
    onSettled: (b, how) => settled.push(`${b.key}:${how}`),
  });
  uploader.submit(batch("a")); // taken by the one worker
  uploader.submit(batch("r1"), { keep: true });
  uploader.submit(batch("r2"), { keep: true }); // 16 bytes of recovered text queued
  uploader.submit(batch("b")); // 8 ≤ 10: the recovered batches take none of the bound
  assert.deepEqual(settled, []);
  release();
  assert.deepEqual(await uploader.flush(AbortSignal.timeout(2000)), []);
  assert.deepEqual(settled.sort(), ["a:stored", "b:stored", "r1:stored", "r2:stored"]);
});

Deno.test("a batch whose crash journal file is gone is dropped at once (a dropped line), not left for a journal that no longer has it", async () => {
  await using tmp = await tempDir();
  const settled: string[] = [];
  const uploader = new Uploader({
    sink: localSink(tmp.path),
    concurrency: 1,
    onSettled: (b, how, _bytes, reason) => settled.push(`${b.key}:${how}:${reason}`),
  });
  const gone = batch("k/gone");
  // What finishing does when a spilled piece's file was removed (body.ts reads it back).
  gone.body.finish = () =>
    Promise.reject(
      new SpillLostError(
        "j/run-b4.gz.part",
        new Deno.errors.NotFound("readfile 'j/run-b4.gz.part'"),
      ),
    );
  const broken = batch("k/broken");
  broken.body.finish = () => Promise.reject(new Error("deflate failed"));
  // A NotFound that is not the journal's file lost (none finishes that way today) is not taken for one.
  const other = batch("k/other");
  other.body.finish = () => Promise.reject(new Deno.errors.NotFound("something else"));
  uploader.submit(gone);
  uploader.submit(broken);
  uploader.submit(other);
  uploader.submit(batch("k/fine"));
  const left = await uploader.flush(AbortSignal.timeout(5000));
  assert.deepEqual(settled.sort(), ["k/fine:stored:undefined", "k/gone:dropped:journal file lost"]);
  // A batch that merely could not be compressed stays for the crash journal, as before.
  assert.deepEqual(left.map((b) => b.key).sort(), ["k/broken", "k/other"]);
});
