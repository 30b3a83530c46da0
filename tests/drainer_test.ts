import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { join } from "node:path";
import { type LostReason, nextNames, startDrainer } from "../src/store/drainer.ts";
import type { ObjectMeta } from "../src/archive/meta.ts";
import type { Sink } from "../src/store/sink.ts";
import { Spool, type SpooledBatch } from "../src/store/spool.ts";
import { listFiles, tempDir } from "./support/temp.ts";
import { withPutNew } from "./support/sink.ts";

const meta: ObjectMeta = { messages: 1, events: 0, firstRecvTs: 10, lastRecvTs: 20 };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(check: () => boolean, what: string, timeoutMs = 2000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** A sink that records what it stored and fails while `failing` is set. */
function recordingSink() {
  const sink = withPutNew({
    kind: "local" as const,
    location: "memory",
    failing: false,
    attempts: 0,
    puts: [] as Array<{ key: string; body: number[]; meta: ObjectMeta }>,
    put(key: string, body: Uint8Array, meta: ObjectMeta): Promise<void> {
      sink.attempts++;
      if (sink.failing) return Promise.reject(new Error("S3 is down"));
      sink.puts.push({ key, body: [...body], meta });
      return Promise.resolve();
    },
  });
  return withPutNew(sink);
}

async function spoolWith(dir: string, keys: string[]): Promise<{ spool: Spool; names: string[] }> {
  const spool = await Spool.open(dir, { maxBytes: 1_000_000 });
  for (const [i, key] of keys.entries()) {
    assert.ok(await spool.write({ key, body: new Uint8Array([i, i, i]), meta }));
  }
  return { spool, names: spool.names() };
}

Deno.test("drainer uploads spooled batches oldest first and empties the spool", async () => {
  await using tmp = await tempDir();
  const { spool } = await spoolWith(tmp.path, ["a", "b", "c", "d"]);
  const sink = recordingSink();
  const stored: string[] = [];
  const stop = new AbortController();
  const drainer = startDrainer({
    spool,
    sink,
    signal: stop.signal,
    idleMs: 10,
    onStored: (key) => stored.push(key),
  });
  await waitFor(() => spool.count === 0, "the spool to empty");
  stop.abort();
  await drainer.done;
  assert.deepEqual(sink.puts.map((p) => p.key), ["a", "b", "c", "d"]);
  assert.deepEqual(sink.puts[2], { key: "c", body: [2, 2, 2], meta });
  assert.deepEqual(stored, ["a", "b", "c", "d"]);
  assert.equal(spool.bytes, 0);
  assert.deepEqual(await listFiles(tmp.path), []);
});

Deno.test("drainer deletes a spool file only after the sink's put resolved", async () => {
  await using tmp = await tempDir();
  const { spool, names: [name] } = await spoolWith(tmp.path, ["a"]);
  let confirm = () => {};
  let started = false;
  const sink: Sink = withPutNew({
    kind: "s3",
    location: "s3://b/p",
    put: () => {
      started = true;
      return new Promise<void>((resolve) => confirm = resolve);
    },
  });
  const stop = new AbortController();
  const drainer = startDrainer({ spool, sink, signal: stop.signal, idleMs: 10 });
  await waitFor(() => started, "the put to start");
  await sleep(30);
  assert.deepEqual(await listFiles(tmp.path), [name], "the file is kept while the put is pending");
  assert.equal(spool.count, 1);
  confirm();
  await waitFor(() => spool.count === 0, "the file to be deleted");
  assert.deepEqual(await listFiles(tmp.path), []);
  stop.abort();
  await drainer.done;
});

Deno.test("drainer keeps the spool file when the put fails", async () => {
  await using tmp = await tempDir();
  const { spool, names } = await spoolWith(tmp.path, ["a", "b"]);
  const sink = recordingSink();
  sink.failing = true;
  const failed: string[] = [];
  const stop = new AbortController();
  const drainer = startDrainer({
    spool,
    sink,
    signal: stop.signal,
    initialBackoffMs: 10_000,
    maxBackoffMs: 10_000,
    onFailedAttempt: (key) => failed.push(key),
  });
  await waitFor(() => failed.length >= 1, "a failed attempt");
  stop.abort();
  await drainer.done;
  assert.equal(failed[0], "a");
  assert.deepEqual(spool.names(), names);
  assert.deepEqual(await listFiles(tmp.path), names);
});

Deno.test("drainer backs off while the sink fails and resumes when it recovers", async () => {
  await using tmp = await tempDir();
  const { spool } = await spoolWith(tmp.path, ["a", "b"]);
  const sink = recordingSink();
  sink.failing = true;
  const stop = new AbortController();
  const drainer = startDrainer({
    spool,
    sink,
    signal: stop.signal,
    idleMs: 10,
    initialBackoffMs: 40,
    maxBackoffMs: 80,
  });
  await sleep(300);
  // Every wait lasts at least 50 ms, so 300 ms hold at most 7 attempts;
  // a drainer that did not back off would have made thousands.
  assert.ok(sink.attempts >= 2, `only ${sink.attempts} attempts`);
  assert.ok(sink.attempts <= 7, `${sink.attempts} attempts in 300 ms`);
  assert.equal(spool.count, 2);
  sink.failing = false;
  await waitFor(() => spool.count === 0, "the drain to resume", 1000);
  assert.deepEqual(sink.puts.map((p) => p.key), ["a", "b"]);
  stop.abort();
  await drainer.done;
});

Deno.test("drainer nudge() ends a backoff wait early", async () => {
  await using tmp = await tempDir();
  const { spool } = await spoolWith(tmp.path, ["a"]);
  const sink = recordingSink();
  sink.failing = true;
  const stop = new AbortController();
  // Full jitter picks the first wait in [0, 1e9) ms: it lasts more than a
  // second with odds of one in a million.
  const drainer = startDrainer({
    spool,
    sink,
    signal: stop.signal,
    idleMs: 10,
    initialBackoffMs: 1e9,
    maxBackoffMs: 1e9,
  });
  await waitFor(() => sink.attempts === 1, "the first attempt");
  await sleep(100);
  assert.equal(sink.attempts, 1, "the drainer waits after a failure");
  sink.failing = false;
  drainer.nudge();
  await waitFor(() => spool.count === 0, "the nudged drain", 500);
  assert.deepEqual(sink.puts.map((p) => p.key), ["a"]);
  stop.abort();
  await drainer.done;
});

Deno.test("drainer quarantines a damaged file and still drains the rest", async () => {
  await using tmp = await tempDir();
  const { spool, names } = await spoolWith(tmp.path, ["a", "b", "c"]);
  const damaged = join(tmp.path, names[1]);
  const bytes = await Deno.readFile(damaged);
  bytes[bytes.length - 1] ^= 0xff;
  await Deno.writeFile(damaged, bytes);
  const sink = recordingSink();
  const quarantined: Array<[string, string]> = [];
  const stop = new AbortController();
  const drainer = startDrainer({
    spool,
    sink,
    signal: stop.signal,
    idleMs: 10,
    onQuarantined: (name, reason) => quarantined.push([name, reason]),
  });
  await waitFor(() => spool.count === 0, "the spool to empty");
  stop.abort();
  await drainer.done;
  assert.deepEqual(sink.puts.map((p) => p.key), ["a", "c"]);
  assert.equal(quarantined.length, 1);
  assert.equal(quarantined[0][0], names[1]);
  assert.match(quarantined[0][1], /SHA-256/);
  assert.deepEqual(await listFiles(tmp.path), [`quarantine/${names[1]}`]);
});

Deno.test({
  name: "drainer skips a spool file that vanished from disk and drains the rest",
  async fn() {
    await using tmp = await tempDir();
    const { spool, names } = await spoolWith(tmp.path, ["a", "b"]);
    await Deno.remove(join(tmp.path, names[0]));
    const sink = recordingSink();
    const stop = new AbortController();
    const drainer = startDrainer({ spool, sink, signal: stop.signal, idleMs: 10 });
    try {
      await waitFor(() => spool.count === 0, "the spool to empty", 1000);
      assert.deepEqual(sink.puts.map((p) => p.key), ["b"]);
    } finally {
      stop.abort();
      await drainer.done;
    }
  },
});

/** Drains `spool` until it is empty, collecting the lost batches and the ERROR lines. */
async function drainLosing(spool: Spool, sink: Sink) {
  const lost: Array<[string, SpooledBatch | undefined, LostReason]> = [];
  const errors: LogRecord[] = [];
  await configure({
    reset: true,
    sinks: { memory: (record) => errors.push(record) },
    loggers: [
      { category: ["l2", "spool"], lowestLevel: "error", sinks: ["memory"] },
      { category: ["logtape", "meta"], lowestLevel: "error", sinks: [] },
    ],
  });
  const stop = new AbortController();
  const drainer = startDrainer({
    spool,
    sink,
    signal: stop.signal,
    idleMs: 10,
    onLost: (name, batch, reason) => lost.push([name, batch, reason]),
  });
  try {
    await waitFor(() => spool.count === 0, "the spool to empty");
  } finally {
    stop.abort();
    await drainer.done;
    await reset();
  }
  return { lost, errors: errors.map((r) => ({ text: r.message.join(""), props: r.properties })) };
}

Deno.test("drainer reports a quarantined file's batch as lost, as its header or name tells it", async () => {
  await using tmp = await tempDir();
  const spool = await Spool.open(tmp.path, { maxBytes: 1_000_000 });
  const write = async (e: { key: string; stream?: string }) => {
    assert.ok(await spool.write({ ...e, body: new Uint8Array([1, 2, 3]), meta }));
    return spool.names().at(-1)!;
  };
  const truncated = await write({ key: "a", stream: "btcusdt@depth@100ms" });
  const zeroed = await write({ key: "b", stream: "ethusdt@depth@100ms" });
  const untold = await write({ key: "c" });
  const intact = await write({ key: "d", stream: "btcusdt@depth@100ms" });
  const bytes = await Deno.readFile(join(tmp.path, truncated));
  await Deno.writeFile(join(tmp.path, truncated), bytes.subarray(0, bytes.length - 1));
  await Deno.writeFile(join(tmp.path, zeroed), new Uint8Array(0));
  await Deno.writeFile(join(tmp.path, untold), new Uint8Array(0));
  const sink = recordingSink();
  const { lost, errors } = await drainLosing(spool, sink);
  assert.deepEqual(sink.puts.map((p) => p.key), ["d"]);
  assert.ok(intact);
  const span = { messages: 1, firstRecvTs: 10, lastRecvTs: 20 };
  assert.deepEqual(lost, [
    [truncated, { stream: "btcusdt@depth@100ms", meta: span }, "spool file damaged"],
    [zeroed, { stream: "ethusdt@depth@100ms", meta: span }, "spool file damaged"],
    [untold, undefined, "spool file damaged"],
  ]);
  assert.equal(errors.length, 3);
  for (const e of errors) {
    assert.match(e.text, /^Quarantined damaged spool file .*not in the archive/);
  }
  assert.equal(errors[0].props.stream, "btcusdt@depth@100ms");
  assert.equal(errors[0].props.messages, 1);
  assert.match(errors[2].text, /no dropped line can mark the hole/);
  assert.equal(errors[2].props.name, untold);
});

Deno.test("drainer reports the batch of a spool file removed from disk as lost", async () => {
  await using tmp = await tempDir();
  const spool = await Spool.open(tmp.path, { maxBytes: 1_000_000 });
  assert.ok(
    await spool.write({ key: "a", stream: "btcusdt@depth@100ms", body: new Uint8Array(3), meta }),
  );
  const [name] = spool.names();
  await Deno.remove(join(tmp.path, name));
  const { lost, errors } = await drainLosing(spool, recordingSink());
  const span = { messages: 1, firstRecvTs: 10, lastRecvTs: 20 };
  assert.deepEqual(lost, [[
    name,
    { stream: "btcusdt@depth@100ms", meta: span },
    "spool file removed",
  ]]);
  assert.equal(errors.length, 1);
  assert.match(errors[0].text, /was removed before its batch was stored.*not in the archive/);
});

Deno.test("drainer stops promptly when its signal aborts, idle or backing off", async () => {
  await using tmp = await tempDir();
  const spool = await Spool.open(tmp.path, { maxBytes: 1_000_000 });
  const sink = recordingSink();

  const idle = new AbortController();
  const idleDrainer = startDrainer({ spool, sink, signal: idle.signal, idleMs: 60_000 });
  await sleep(20);
  let started = Date.now();
  idle.abort();
  await idleDrainer.done;
  // Idle for 60 s otherwise; 1 s leaves room for a loaded machine.
  assert.ok(Date.now() - started < 1000, "an idle drainer stops at once");

  assert.ok(await spool.write({ key: "a", body: new Uint8Array([1]), meta }));
  sink.failing = true;
  const failing = new AbortController();
  const failingDrainer = startDrainer({
    spool,
    sink,
    signal: failing.signal,
    initialBackoffMs: 1e9,
    maxBackoffMs: 1e9,
  });
  await waitFor(() => sink.attempts === 1, "the first attempt");
  started = Date.now();
  failing.abort();
  await failingDrainer.done;
  assert.ok(Date.now() - started < 1000, "a backing-off drainer stops at once");
  assert.equal(spool.count, 1);
});

Deno.test("drainer passes its signal to the sink so an abort cancels a hung put", async () => {
  await using tmp = await tempDir();
  const { spool, names } = await spoolWith(tmp.path, ["a"]);
  let seen: AbortSignal | undefined;
  const sink: Sink = withPutNew({
    kind: "s3",
    location: "s3://b/p",
    put: (_key, _body, _meta, signal) => {
      seen = signal;
      return new Promise<void>((_, reject) => {
        signal?.addEventListener("abort", () => reject(signal.reason), { once: true });
      });
    },
  });
  const stop = new AbortController();
  const drainer = startDrainer({ spool, sink, signal: stop.signal });
  await waitFor(() => seen !== undefined, "the put to start");
  stop.abort();
  await drainer.done;
  assert.deepEqual(spool.names(), names, "an aborted put leaves the file");
});

Deno.test("drainer: a file the sink keeps refusing waits behind the others instead of blocking them", async () => {
  await using tmp = await tempDir();
  // The oldest file's put is refused every time (e.g. a permanent S3 error); 20 behind it.
  const keys = ["refused", ...Array.from({ length: 20 }, (_, i) => `ok-${i}`)];
  const { spool } = await spoolWith(tmp.path, keys);
  const sink = recordingSink();
  const tried: string[] = [];
  const put = sink.put.bind(sink);
  sink.put = (key, body, meta) => {
    tried.push(key);
    return key === "refused"
      ? Promise.reject(new Error("PermanentRedirect"))
      : put(key, body, meta);
  };
  const stop = new AbortController();
  // The first round fails whole (the sink may be down) and backs off; then the others go.
  const drainer = startDrainer({
    spool,
    sink,
    signal: stop.signal,
    idleMs: 10,
    initialBackoffMs: 100,
    maxBackoffMs: 200,
    // As the S3 sink classifies it: a permanent refusal, not an outage.
    isRetryable: (error) => (error as Error).message !== "PermanentRedirect",
  });
  await waitFor(() => spool.count === 1, "every other file to drain");
  stop.abort();
  await drainer.done;
  assert.deepEqual(sink.puts.map((p) => p.key), keys.slice(1));
  assert.deepEqual(tried.slice(0, 2), ["refused", "ok-0"]);
  assert.deepEqual(spool.names().length, 1);
});

Deno.test("nextNames: least-failed first, oldest first among equals, none in flight", () => {
  const failures = new Map([["a", 2], ["c", 1], ["gone", 5]]);
  assert.deepEqual(nextNames(["a", "b", "c", "d"], new Set(["b"]), failures, 2), ["d", "c"]);
  assert.deepEqual(nextNames(["a", "b", "c", "d"], new Set(), failures, 4), ["b", "d", "c", "a"]);
  assert.equal(failures.has("gone"), true); // kept while the map is no larger than the spool
  assert.deepEqual(nextNames(["a"], new Set(), failures, 4), ["a"]);
  assert.deepEqual([...failures.keys()], ["a"]);
});
