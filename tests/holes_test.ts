/**
 * Holes are written into the record: a lost batch leaves a `dropped` line
 * in its stream's next stored batch, and `verify` explains the hole with it.
 */

import assert from "node:assert/strict";
import { gunzipSync } from "node:zlib";
import { Batcher, type SealedBatch } from "../src/batch/batcher.ts";
import { dataLine, droppedLine } from "../src/archive/encode.ts";
import { HoleMarker } from "../src/batch/holes.ts";
import { planKey } from "../src/archive/keys.ts";
import type { Sink } from "../src/store/sink.ts";
import { Uploader } from "../src/store/uploader.ts";
import { Auditor, type Report } from "../src/verify/audit.ts";
import { flushWithMarks } from "../src/cli/stages/storage.ts";
import { withPutNew } from "./support/sink.ts";

const STREAM = "btcusdt@depth@100ms";
const SPEC = { market: "spot", streamType: "depth@100ms", symbol: "BTCUSDT" };
const T0 = Date.UTC(2026, 0, 2, 3, 4, 5) * 1000;
/** Message i: received i × 100 ms after T0, update id i (a spot diff chain: U = previous u + 1). */
const ts = (i: number) => T0 + i * 100_000;
const message = (i: number) =>
  dataLine(
    ts(i),
    STREAM,
    `{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":${i},"u":${i},"b":[],"a":[]}`,
  );
const keyOf = (firstRecvTs: number, seq: number) =>
  planKey({ ...SPEC, prefix: "binance", firstRecvTs, instanceId: "t", seq });

/**
 * A batcher, a hole marker and an uploader wired as `Storage` wires them,
 * with a queue of one byte: a batch submitted while another waits is dropped.
 * `settled` collects "how:reason" per batch.
 */
function markingPipeline(sink: Sink, nowMicros: () => number, settled: string[] = []) {
  const batcher = new Batcher({
    batchMs: 1e9,
    maxLines: 10,
    planKey: (_stream, first, seq) => keyOf(first, seq),
  });
  const holes = new HoleMarker({
    nowMicros,
    mark: (stream, text, recvTs) => {
      const sealed = batcher.add(stream, { text, recvTs, isData: false }, 0);
      if (sealed) uploader.submit(sealed);
    },
    keyFor: (stream, recvTs) => batcher.keyFor(stream, recvTs),
  });
  const uploader: Uploader = new Uploader({
    sink,
    concurrency: 1,
    maxQueueBytes: 1,
    onSettled: (batch: SealedBatch, how, _bytes, reason) => {
      settled.push(`${how}:${reason ?? ""}`);
      if (how === "dropped") holes.lost(batch, reason ?? "dropped");
      if (how === "stored" || how === "spooled") holes.kept(batch);
    },
  });
  return { batcher, holes, uploader };
}

function audit(objects: ReadonlyArray<{ key: string; lines: readonly string[] }>): Report {
  const auditor = new Auditor({});
  for (const { key, lines } of [...objects].sort((a, b) => a.key.localeCompare(b.key))) {
    assert.ok(auditor.beginObject(key), key);
    lines.forEach((text, i) => auditor.line(text, i + 1));
    auditor.endObject();
  }
  return auditor.report();
}

Deno.test("verify explains a hole and break by a dropped line that comes later, in the next batch", () => {
  const range = (from: number, to: number) =>
    Array.from({ length: to - from }, (_, k) => message(from + k));
  // Messages 20..39 were lost; the loss was noticed while 40..42 were being received.
  const mark = droppedLine(ts(42), STREAM, {
    reason: "spool full",
    messages: 20,
    firstRecvTs: ts(20),
    lastRecvTs: ts(39),
  });
  const objects = (withMark: boolean) => [
    { key: keyOf(ts(0), 0), lines: range(0, 20) },
    {
      key: keyOf(ts(40), 2),
      lines: [...range(40, 43), ...(withMark ? [mark] : []), ...range(43, 60)],
    },
  ];
  const unmarked = audit(objects(false));
  assert.equal(unmarked.ok, false, "without the dropped line the hole is unexplained");
  const report = audit(objects(true));
  assert.equal(report.ok, true, JSON.stringify(report.problems, null, 1));
  const [stream] = report.streams;
  assert.equal(stream.unexplainedBreaks, 0);
  assert.equal(stream.unexplainedHoles, 0);
  assert.equal(stream.breaks, 1);
  assert.equal(stream.holes, 1);
  assert.equal(stream.events.dropped, 1);
  for (const problem of report.problems) {
    assert.ok(problem.explained);
    assert.match(problem.detail, /explained by a dropped line: 20 messages lost \(spool full\)/);
  }
});

Deno.test("queue overflow without a spool: every lost batch is marked in the next stored one, verify exits clean", async () => {
  let gate: Promise<void> | undefined;
  let open!: () => void;
  const stored = new Map<string, string[]>();
  const sink: Sink = withPutNew({
    kind: "local",
    location: "memory",
    async put(key, body) {
      await gate;
      stored.set(key, new TextDecoder().decode(gunzipSync(body)).trim().split("\n"));
    },
  });
  let now = 0;
  const settled: string[] = [];
  const { batcher, holes, uploader } = markingPipeline(sink, () => ts(now), settled);
  for (now = 0; now < 200; now++) {
    if (now === 40) gate = new Promise((resolve) => open = resolve);
    if (now === 120) open();
    const sealed = batcher.add(STREAM, { text: message(now), recvTs: ts(now), isData: true }, 0);
    if (sealed) uploader.submit(sealed);
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  for (const batch of batcher.sealAll()) uploader.submit(batch);
  assert.deepEqual(await uploader.flush(AbortSignal.timeout(5000)), []);
  const drops = settled.filter((s) => s.startsWith("dropped"));
  assert.ok(drops.length >= 3, `only ${drops.length} batches dropped: ${settled}`);
  assert.ok(drops.every((s) => s === "dropped:upload queue full"), String(drops));
  assert.equal(holes.pending, 0, "every mark is in a stored batch");

  const objects = [...stored].map(([key, lines]) => ({ key, lines }));
  const all = objects.flatMap((o) => o.lines.map((l) => JSON.parse(l)));
  const kept = all.filter((l) => l.data !== undefined).length;
  const marked = all.filter((l) => l.event === "dropped");
  assert.equal(
    marked.reduce((n, l) => n + l.messages, 0),
    200 - kept,
    "the dropped lines count every lost message",
  );
  const report = audit(objects);
  assert.equal(report.ok, true, JSON.stringify(report.problems, null, 1));
  assert.ok(report.streams[0].breaks > 0, "the losses were breaks in the chain");
});

Deno.test("a lost batch that carried a dropped line has both losses marked again in the next", () => {
  const marks: string[] = [];
  let open = "B"; // the stream's open batch, where a mark goes
  const holes = new HoleMarker({
    nowMicros: () => ts(50),
    mark: (_s, text) => marks.push(text),
    keyFor: () => open,
  });
  const span = (key: string, from: number, to: number, messages: number) => ({
    key,
    stream: STREAM,
    meta: { messages, firstRecvTs: ts(from), lastRecvTs: ts(to) },
  });
  holes.lost(span("A", 0, 9, 10), "spool full"); // marked into B
  assert.equal(holes.pending, 1);
  open = "C";
  holes.lost(span("B", 10, 50, 40), "disk full"); // B held the mark: lost with it
  const facts = marks.map((m) => JSON.parse(m));
  // The second mark stands for both losses.
  assert.deepEqual(facts.map((f) => [f.reason, f.messages, f.first_recv_ts, f.last_recv_ts]), [
    ["spool full", 10, ts(0), ts(9)],
    ["spool full; disk full", 50, ts(0), ts(50)],
  ]);
  assert.equal(holes.pending, 1);
  holes.kept(span("C", 50, 60, 11));
  assert.equal(holes.pending, 0);
});

Deno.test("marks that fill one-line batches lost at once are held, not looped on", () => {
  let lostNow = true;
  const written: string[] = [];
  let seq = 0;
  const holes: HoleMarker = new HoleMarker({
    nowMicros: () => ts(100),
    // Every mark fills a batch of its own (MAX_MESSAGES_PER_BATCH=1) and the queue is full.
    mark: (stream, text, recvTs) => {
      written.push(text);
      const batch = {
        key: `mark-${seq++}`,
        stream,
        meta: { messages: 0, firstRecvTs: recvTs, lastRecvTs: recvTs },
      };
      if (lostNow) holes.lost(batch, "upload queue full");
      else holes.kept(batch);
    },
    keyFor: () => `mark-${seq}`,
  });
  holes.lost(
    { key: "A", stream: STREAM, meta: { messages: 5, firstRecvTs: ts(0), lastRecvTs: ts(4) } },
    "disk full",
  );
  assert.equal(written.length, 1);
  assert.equal(holes.pending, 1, "the loss is held for the next chance");
  lostNow = false;
  holes.kept({
    key: "B",
    stream: STREAM,
    meta: { messages: 3, firstRecvTs: ts(101), lastRecvTs: ts(103) },
  });
  assert.equal(written.length, 2);
  assert.equal(JSON.parse(written[1]).messages, 5);
  assert.equal(holes.pending, 0);
});

Deno.test("shutdown: batches lost while the last ones are stored leave their dropped lines in the stored archive", async () => {
  let open!: () => void;
  const gate = new Promise<void>((resolve) => open = resolve);
  const stored = new Map<string, string[]>();
  const sink: Sink = withPutNew({
    kind: "local",
    location: "memory",
    async put(key, body) {
      await gate; // a slow disk: the queue stays full through the shutdown's seal
      stored.set(key, new TextDecoder().decode(gunzipSync(body)).trim().split("\n"));
    },
  });
  const { batcher, holes, uploader } = markingPipeline(sink, () => ts(100));
  for (let i = 0; i < 35; i++) {
    const sealed = batcher.add(STREAM, { text: message(i), recvTs: ts(i), isData: true }, 0);
    if (sealed) uploader.submit(sealed);
  }
  // Shutdown: every open batch is sealed; the last (data and a mark) is lost to the full queue,
  // and its dropped line goes into a new open batch.
  for (const batch of batcher.sealAll()) uploader.submit(batch);
  setTimeout(open, 20);
  assert.deepEqual(
    await flushWithMarks({ uploader, batcher, holes }, Date.now() + 6500),
    [],
  );
  assert.equal(holes.pending, 0, "every mark is in a stored batch");

  const all = [...stored.values()].flat().map((l) => JSON.parse(l));
  const kept = all.filter((l) => l.data !== undefined).length;
  const marked = all.filter((l) => l.event === "dropped").reduce((n, l) => n + l.messages, 0);
  assert.ok(kept < 35, "nothing was lost: the test did not test anything");
  assert.equal(marked, 35 - kept, "the dropped lines count every lost message");
});

Deno.test("shutdown: a put that never returns is reported as not stored, within the budget", async () => {
  const sink: Sink = withPutNew({
    kind: "local",
    location: "memory",
    put: () => new Promise<void>(() => {}), // a hung disk or connection
  });
  const batcher = new Batcher({
    batchMs: 1e9,
    maxLines: 10,
    planKey: (_stream, first, seq) => keyOf(first, seq),
  });
  const uploader = new Uploader({ sink, concurrency: 1 });
  const holes = new HoleMarker({ nowMicros: () => ts(1), mark: () => {}, keyFor: () => "k" });
  batcher.add(STREAM, { text: message(0), recvTs: ts(0), isData: true }, 0);
  for (const batch of batcher.sealAll()) uploader.submit(batch);
  const started = Date.now();
  const left = await flushWithMarks({ uploader, batcher, holes }, started + 2000);
  assert.equal(left.length, 1, "the hung batch is named as not stored");
  // The uploader's own grace for cancelled puts (5 s) would overrun the budget.
  const took = Date.now() - started;
  assert.ok(took < 3500, `flush took ${took} ms of a 2,000 ms budget`);
});

Deno.test("shutdown: a put that never returns in the last round of marks still ends within the budget", async () => {
  const puts: string[] = [];
  const sink: Sink = withPutNew({
    kind: "local",
    location: "memory",
    put(key) {
      puts.push(key);
      // The third batch sealed at shutdown hangs.
      return puts.length === 3 ? new Promise<void>(() => {}) : Promise.resolve();
    },
  });
  const batcher = new Batcher({
    batchMs: 1e9,
    maxLines: 10,
    planKey: (_stream, first, seq) => keyOf(first, seq),
  });
  let round = 0;
  // Every round seals one more batch (as a stream of dropped lines would).
  const sealing = {
    sealAll: () => {
      round++;
      batcher.add(STREAM, { text: message(round), recvTs: ts(round), isData: true }, 0);
      return batcher.sealAll();
    },
  };
  const uploader = new Uploader({ sink, concurrency: 1 });
  const holes = new HoleMarker({ nowMicros: () => ts(100), mark: () => {}, keyFor: () => "k" });
  const started = Date.now();
  const left = await flushWithMarks({ uploader, batcher: sealing, holes }, started + 3000);
  assert.equal(round, 3, "every round sealed a batch");
  assert.equal(left.length, 1, "the hung batch is named as not stored");
  // A grace measured from before the store phase ended would end at 1.5 + 3 = 4.5 s.
  const took = Date.now() - started;
  assert.ok(took < 3800, `flush took ${took} ms of a 3,000 ms budget`);
});

/** After the wall clock stepped back, the receive clock holds one µs value: every line shares it. */
function heldClock() {
  const T = ts(500);
  const batcher = new Batcher({ batchMs: 1e9, maxLines: 3, planKey: (_s, f, q) => `k-${f}-${q}` });
  const holes = new HoleMarker({
    nowMicros: () => T,
    mark: (stream, text, recvTs) => {
      batcher.add(stream, { text, recvTs, isData: false }, 0);
    },
    keyFor: (stream, recvTs) => batcher.keyFor(stream, recvTs),
  });
  let i = 0;
  const fill = () => {
    let sealed: SealedBatch | undefined;
    while (!sealed) {
      sealed = batcher.add(STREAM, { text: message(i++), recvTs: T, isData: true }, 0);
    }
    return sealed;
  };
  const droppedIn = async (batch: SealedBatch) =>
    new TextDecoder().decode(gunzipSync(await batch.body.finish())).trim().split("\n")
      .map((line) => JSON.parse(line)).filter((line) => line.event === "dropped")
      .reduce((n, line) => n + line.messages, 0);
  return { batcher, holes, fill, droppedIn };
}

Deno.test("clock held after a step back: a mark belongs to the batch it went into, not to every batch of its time", async () => {
  // Two batches sealed at T, both lost: each loss counted once.
  const twice = heldClock();
  const [a1, a2] = [twice.fill(), twice.fill()];
  twice.holes.lost(a1, "spool full"); // its mark goes into the open batch B
  twice.holes.lost(a2, "spool full"); // A2 spans [T, T] too, but does not hold that mark
  assert.equal(await twice.droppedIn(twice.batcher.sealAll()[0]), 6);

  // A1 lost, A2 stored, then B (holding A1's mark) lost: A1's loss is marked again.
  const again = heldClock();
  const [b1, b2] = [again.fill(), again.fill()];
  again.holes.lost(b1, "spool full");
  again.holes.kept(b2);
  again.holes.lost(again.batcher.sealAll()[0], "spool full");
  assert.equal(await again.droppedIn(again.batcher.sealAll()[0]), 3);
});
