/**
 * The Recorder (src/feed/recorder.ts) with a real Batcher, an array for sealed
 * batches and a hand-driven monotonic clock: frames become archive lines,
 * broken and control frames are kept as event lines, batches seal by age,
 * count and on shutdown, and the metrics move.
 */

import assert from "node:assert/strict";
import { Batcher, type SealedBatch } from "../src/batch/batcher.ts";
import { Metrics } from "../src/ops/metrics.ts";
import { Recorder } from "../src/feed/recorder.ts";

const FIXTURE = new URL("./fixtures/mixed_trimmed_messages.ndjson", import.meta.url);
const fixtureLines = (await Deno.readTextFile(FIXTURE)).split("\n").filter((l) => l !== "");
/** The fixture's combined-stream frames, with their stream and exact `data` text. */
const fixtureFrames = fixtureLines.flatMap((text) => {
  const head = /^\{"stream":"([^"]+)","data":/.exec(text);
  return head ? [{ text, stream: head[1], data: text.slice(head[0].length, -1) }] : [];
});

const BTC = "btcusdt@depth20@100ms";
const ETH = "ethusdt@depth20@100ms";
const STREAMS = [BTC, ETH];

/** A stream group as the feed would hand it over, without rotation controls. */
function group(names: readonly string[]) {
  return { conn: 1, names };
}

interface Setup {
  readonly recorder: Recorder;
  readonly batcher: Batcher;
  readonly submitted: SealedBatch[];
  readonly metrics: Metrics;
  /** Sets the monotonic clock, ms. */
  at(ms: number): void;
}

function setup(options: { batchMs?: number; maxLines?: number } = {}): Setup {
  let now = 0;
  const submitted: SealedBatch[] = [];
  const metrics = new Metrics();
  const batcher = new Batcher({
    batchMs: options.batchMs ?? 60_000,
    maxLines: options.maxLines ?? 10_000,
    planKey: (stream, firstRecvTs, seq) => `${stream}/${firstRecvTs}_${seq}`,
  });
  const recorder = new Recorder({
    batcher,
    metrics,
    submit: (batch) => submitted.push(batch),
    monotonicMs: () => now,
  });
  return { recorder, batcher, submitted, metrics, at: (ms) => now = ms };
}

/** Seals everything and returns the lines of each stream, in order. */
async function sealAndRead(s: Setup): Promise<Map<string, string[]>> {
  s.recorder.sealAll();
  const byStream = new Map<string, string[]>();
  for (const batch of s.submitted) {
    byStream.set(batch.stream, [...byStream.get(batch.stream) ?? [], ...await batch.body.lines()]);
  }
  return byStream;
}

async function metricValues(
  metrics: Metrics,
  name: string,
): Promise<{ labels: Record<string, unknown>; value: number }[]> {
  const metric = metrics.registry.getSingleMetric(name);
  assert.ok(metric, `no metric ${name}`);
  return (await metric.get()).values.map((v) => ({ labels: { ...v.labels }, value: v.value }));
}

Deno.test("recorder writes data frames as data lines with the payload spliced byte-for-byte", async () => {
  const s = setup();
  // 1.0 and a 20-digit integer would not survive a JSON round trip.
  const odd = { stream: BTC, data: '{"lastUpdateId":7,"x":1.0,"big":12345678901234567890}' };
  const frames = [
    ...fixtureFrames,
    { ...odd, text: `{"stream":"${odd.stream}","data":${odd.data}}` },
  ];
  const streams = [...new Set(frames.map((f) => f.stream))];
  frames.forEach((f, i) => s.recorder.frame(group(streams), f.text, 1_000_000 + i));
  assert.equal(s.submitted.length, 0, "nothing seals before its time");

  const lines = await sealAndRead(s);
  for (const stream of streams) {
    // Per stream, in arrival order, each line the fixed prefix plus the exchange's own bytes.
    const expected = frames.flatMap((f, i) =>
      f.stream === stream
        ? [`{"recv_ts":${1_000_000 + i},"stream":"${stream}","data":${f.data}}`]
        : []
    );
    assert.deepEqual(lines.get(stream), expected);
  }
  assert.ok(
    s.submitted.every((b) => b.meta.events === 0 && b.meta.messages === b.body.lineCount),
  );
});

Deno.test("recorder keeps each batch's first and last update ids in its metadata", () => {
  const s = setup();
  const diff = fixtureFrames.filter((f) => f.stream === "btcusdt@depth@100ms");
  assert.ok(diff.length >= 2);
  diff.forEach((f, i) => s.recorder.frame(group([f.stream]), f.text, 10 + i));
  s.recorder.sealAll();
  assert.equal(s.submitted.length, 1);
  const { meta } = s.submitted[0];
  const payloads = diff.map((f) => JSON.parse(f.data));
  assert.equal(meta.firstUpdateId, payloads[0].U);
  assert.equal(meta.lastUpdateId, payloads[payloads.length - 1].u);
  assert.equal(meta.firstRecvTs, 10);
  assert.equal(meta.lastRecvTs, 10 + diff.length - 1);
});

Deno.test("recorder keeps invalid JSON as a malformed event line under the stream it names", async () => {
  const s = setup();
  const truncated = `{"stream":"${ETH}","data":{"lastUpdateId":17044571457,"bids":[["1782.0`;
  s.recorder.frame(group(STREAMS), truncated, 42);
  const lines = await sealAndRead(s);
  assert.deepEqual([...lines.keys()], [ETH]);
  const [line] = lines.get(ETH)!;
  const value = JSON.parse(line);
  assert.equal(value.recv_ts, 42);
  assert.equal(value.stream, ETH);
  assert.equal(value.event, "malformed");
  assert.equal(value.raw, truncated);
  assert.match(value.reason, /JSON/);
  assert.equal(value.data, undefined);
  assert.equal(s.submitted[0].meta.messages, 0);
  assert.equal(s.submitted[0].meta.events, 1);
});

Deno.test("recorder files malformed frames that name no stream of the connection under its first stream", async () => {
  const s = setup();
  const frames = [
    "not json at all",
    "[1,2]",
    '{"result":null,"id":1}',
    // Names a stream, but not one this connection carries.
    '{"stream":"xrpusdt@depth20@100ms","data":[{"lastUpdateId":1}]}',
    '{"stream":"xrpusdt@depth20@100ms","data":{"lastUpd',
  ];
  frames.forEach((text, i) => s.recorder.frame(group(STREAMS), text, 100 + i));
  const lines = await sealAndRead(s);
  assert.deepEqual([...lines.keys()], [BTC]);
  const values = lines.get(BTC)!.map((l) => JSON.parse(l));
  assert.deepEqual(values.map((v) => v.raw), frames);
  assert.ok(values.every((v) => v.event === "malformed" && v.stream === BTC));
  assert.deepEqual(values.map((v) => v.recv_ts), [100, 101, 102, 103, 104]);
});

Deno.test("recorder files a well-formed frame of unknown shape under the stream it names", async () => {
  const s = setup();
  const text = `{"stream":"${ETH}","data":[["1782.0","6.4"]]}`;
  s.recorder.frame(group(STREAMS), text, 7);
  const lines = await sealAndRead(s);
  assert.deepEqual([...lines.keys()], [ETH]);
  const value = JSON.parse(lines.get(ETH)![0]);
  assert.equal(value.event, "malformed");
  assert.equal(value.raw, text);
  assert.match(value.reason, /unknown shape/);
});

Deno.test("recorder writes a serverShutdown control frame as a control line in every stream", async () => {
  const s = setup();
  const text = '{"e":"serverShutdown","E":1723075200000}';
  s.recorder.frame(group(STREAMS), text, 55);
  const lines = await sealAndRead(s);
  assert.deepEqual([...lines.keys()].sort(), [...STREAMS].sort());
  for (const stream of STREAMS) {
    const values = lines.get(stream)!.map((l) => JSON.parse(l));
    assert.deepEqual(values, [{
      recv_ts: 55,
      stream,
      event: "control",
      conn: 1,
      socket: 0,
      raw: text,
    }]);
  }
});

Deno.test("recorder event() writes one line per stream, fixed fields first and not overridable", async () => {
  const s = setup();
  s.recorder.event(STREAMS, "disconnected", 99, {
    conn: 1,
    cause: "error",
    recv_ts: 0,
    stream: "other",
    event: "other",
  });
  const lines = await sealAndRead(s);
  for (const stream of STREAMS) {
    assert.deepEqual(lines.get(stream), [
      `{"recv_ts":99,"stream":"${stream}","event":"disconnected","conn":1,"cause":"error"}`,
    ]);
  }
  assert.ok(s.submitted.every((b) => b.meta.messages === 0 && b.meta.events === 1));
});

Deno.test("recorder event() never stamps a line before one its stream already has", async () => {
  const s = setup();
  const frame = fixtureFrames[0];
  const quiet = frame.stream === BTC ? ETH : BTC;
  // A line stamped a few µs after the `suspended` line's time (as a loss marked while the
  // suspension sealed the batches is), then the `suspended` line itself.
  s.recorder.frame(group([frame.stream, quiet]), frame.text, 1_000_005);
  s.recorder.event([frame.stream, quiet], "suspended", 1_000_000, { duration_ms: 5000 });
  const lines = await sealAndRead(s);
  const times = (stream: string) => lines.get(stream)!.map((l) => JSON.parse(l).recv_ts as number);
  assert.deepEqual(times(frame.stream), [1_000_005, 1_000_005]);
  assert.deepEqual(times(quiet), [1_000_000]);
});

Deno.test("recorder tick() seals each stream's batch once its first line is batchMs old", () => {
  const s = setup({ batchMs: 1000 });
  const [btc, eth] = [fixtureFrames[0], fixtureFrames[1]];
  s.at(0);
  s.recorder.frame(group([btc.stream, eth.stream]), btc.text, 1);
  s.at(500);
  s.recorder.frame(group([btc.stream, eth.stream]), eth.text, 2);
  s.at(999);
  s.recorder.frame(group([btc.stream, eth.stream]), btc.text, 3);
  s.recorder.tick();
  assert.equal(s.submitted.length, 0);
  s.at(1000);
  s.recorder.tick();
  assert.deepEqual(s.submitted.map((b) => [b.stream, b.body.lineCount]), [[btc.stream, 2]]);
  s.at(1499);
  s.recorder.tick();
  assert.equal(s.submitted.length, 1);
  s.at(1500);
  s.recorder.tick();
  assert.deepEqual(s.submitted.map((b) => [b.stream, b.body.lineCount]), [[btc.stream, 2], [
    eth.stream,
    1,
  ]]);
  s.recorder.tick();
  assert.equal(s.submitted.length, 2, "an empty stream seals nothing");
});

Deno.test("recorder seals a batch the moment it reaches maxLines", () => {
  const s = setup({ maxLines: 3 });
  const frame = fixtureFrames[0];
  for (let i = 0; i < 7; i++) s.recorder.frame(group([frame.stream]), frame.text, i);
  assert.deepEqual(s.submitted.map((b) => b.body.lineCount), [3, 3]);
  s.recorder.sealAll();
  assert.deepEqual(s.submitted.map((b) => b.body.lineCount), [3, 3, 1]);
  assert.deepEqual(s.submitted.map((b) => b.meta.firstRecvTs), [0, 3, 6]);
  assert.equal(new Set(s.submitted.map((b) => b.key)).size, 3, "every batch has its own key");
});

Deno.test("recorder sealAll() seals every open batch and leaves none behind", () => {
  const s = setup();
  s.recorder.event(STREAMS, "connected", 1, { conn: 1 });
  s.recorder.frame(group(STREAMS), `{"stream":"${BTC}","data":{"lastUpdateId":5}}`, 2);
  assert.equal(s.batcher.openLines, 3);
  s.recorder.sealAll();
  assert.deepEqual(s.submitted.map((b) => [b.stream, b.body.lineCount]).sort(), [[BTC, 2], [
    ETH,
    1,
  ]]);
  assert.equal(s.batcher.openLines, 0);
  s.recorder.sealAll();
  assert.equal(s.submitted.length, 2, "nothing left to seal");
});

Deno.test("recorder counts data messages per stream and malformed frames", async () => {
  const s = setup();
  const data = (stream: string, id: number) =>
    `{"stream":"${stream}","data":{"lastUpdateId":${id}}}`;
  s.recorder.frame(group(STREAMS), data(BTC, 1), 1);
  s.recorder.frame(group(STREAMS), data(BTC, 2), 2);
  s.recorder.frame(group(STREAMS), data(ETH, 1), 3);
  s.recorder.frame(group(STREAMS), "garbage", 4);
  s.recorder.frame(group(STREAMS), '{"result":null,"id":1}', 5);
  s.recorder.frame(group(STREAMS), '{"e":"serverShutdown"}', 6);
  s.recorder.event(STREAMS, "connected", 7);

  const messages = await metricValues(s.metrics, "l2_messages_received_total");
  assert.deepEqual(
    messages.map((m) => [m.labels.stream, m.value]).sort(),
    [[BTC, 2], [ETH, 1]],
  );
  assert.deepEqual(
    (await metricValues(s.metrics, "l2_malformed_frames_total")).map((m) => m.value),
    [2],
  );
  const text = await s.metrics.registry.getSingleMetricAsString("l2_messages_received_total");
  assert.match(text, new RegExp(`l2_messages_received_total\\{stream="${BTC}"\\} 2`));
});

Deno.test("recorder reports seconds since each stream's last data message", () => {
  const s = setup();
  s.at(1000);
  s.recorder.frame(group(STREAMS), `{"stream":"${BTC}","data":{"lastUpdateId":1}}`, 1);
  s.at(3500);
  s.recorder.frame(group(STREAMS), `{"stream":"${ETH}","data":{"lastUpdateId":1}}`, 2);
  s.recorder.frame(group(STREAMS), "garbage", 3);
  s.at(4000);
  assert.deepEqual(s.recorder.messageAges(), new Map([[BTC, 3], [ETH, 0.5]]));
});

Deno.test("recorder reads its clock per tick and per opened batch, not per message; ages are at most a tick old", () => {
  let now = 0;
  let reads = 0;
  const batcher = new Batcher({
    batchMs: 60_000,
    maxLines: 10_000,
    planKey: (stream, firstRecvTs, seq) => `${stream}/${firstRecvTs}_${seq}`,
  });
  const recorder = new Recorder({
    batcher,
    submit: () => {},
    monotonicMs: () => (reads++, now),
  });
  const frame = (id: number) => `{"stream":"${BTC}","data":{"lastUpdateId":${id}}}`;
  now = 1000;
  recorder.frame(group(STREAMS), frame(1), 1);
  const afterOpen = reads;
  now = 1100;
  for (let id = 2; id < 100; id++) recorder.frame(group(STREAMS), frame(id), id);
  assert.equal(reads, afterOpen, "no clock read for messages into an open batch");
  // Dated by the batch's opening, not by the later messages.
  now = 1150;
  assert.deepEqual(recorder.messageAges(), new Map([[BTC, 0.15]]));
  now = 1200;
  recorder.tick();
  now = 1210;
  recorder.frame(group(STREAMS), frame(100), 100);
  now = 1300;
  assert.deepEqual(recorder.messageAges(), new Map([[BTC, 0.1]]));
});

Deno.test({
  name: "recorder counts received bytes as UTF-8 bytes",
  async fn() {
    const s = setup();
    const text = `{"stream":"${BTC}","data":{"lastUpdateId":1,"note":"prix €"}}`;
    s.recorder.frame(group(STREAMS), text, 1);
    s.recorder.frame(group(STREAMS), "ok", 2);
    const [bytes] = await metricValues(s.metrics, "l2_bytes_received_total");
    assert.equal(bytes.value, new TextEncoder().encode(text).length + 2);
  },
});

Deno.test({
  name: "recorder never lets text after a frame's data value into the archive line",
  async fn() {
    const s = setup();
    const text = `{"stream":"${BTC}","data":{"lastUpdateId":1},"recv_ts":5}`;
    s.recorder.frame(group(STREAMS), text, 1_000_000);
    const lines = await sealAndRead(s);
    const [line] = lines.get(BTC)!;
    // A key beside stream and data: the frame is kept whole as raw text, not as data.
    assert.deepEqual(JSON.parse(line), {
      recv_ts: 1_000_000,
      stream: BTC,
      event: "malformed",
      reason: "keys beside stream and data",
      raw: text,
    });
  },
});

Deno.test("recorder keeps a broken frame naming a stopped stream in a live one: `stopped` stays the stopped stream's last line", async () => {
  const s = setup();
  const g = group(STREAMS);
  s.recorder.frame(g, `{"stream":"${BTC}","data":{"lastUpdateId":1}}`, 1_000_000);
  s.recorder.stop([BTC], 1_000_001, { reason: "delisted" });
  const broken = `{"stream":"${BTC}","data":{"lastUpdateId":`;
  s.recorder.frame(g, broken, 1_000_002);
  const lines = await sealAndRead(s);
  assert.deepEqual(lines.get(BTC)!.map((l) => JSON.parse(l).event ?? "data"), ["data", "stopped"]);
  const [kept] = lines.get(ETH)!.map((l) => JSON.parse(l));
  assert.equal(kept.event, "malformed");
  assert.equal(kept.raw, broken);
});

// --- Handover between sockets (rotation) and continuity -------------------

const DIFF = "btcusdt@depth@100ms";

/** A spot diff frame covering update ids first..last. */
function diff(first: number, last: number): string {
  return `{"stream":"${DIFF}","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":${first},"u":${last},"b":[],"a":[]}}`;
}

function chainSetup() {
  const submitted: SealedBatch[] = [];
  const retired: number[] = [];
  const chainStarts: string[] = [];
  const recorder = new Recorder({
    batcher: new Batcher({ batchMs: 60_000, maxLines: 10_000, planKey: (s) => s }),
    submit: (b) => submitted.push(b),
    ruleFor: () => "spot-diff",
    onChainStart: (s) => chainStarts.push(s),
    monotonicMs: () => 0,
  });
  const group = { conn: 1, names: [DIFF], retire: (id: number) => retired.push(id) };
  const lines = async () => {
    recorder.sealAll();
    const texts = await Promise.all(submitted.map((b) => b.body.lines()));
    return texts.flat().map((l) => JSON.parse(l));
  };
  return { recorder, group, retired, chainStarts, lines };
}

Deno.test("recorder switches a stream to a successor that repeats what was stored, storing each update once", async () => {
  const { recorder, group, retired, lines } = chainSetup();
  let ts = 0;
  for (let i = 1; i <= 5; i++) recorder.frame(group, diff(i * 10, i * 10 + 9), ++ts, 1);
  // The successor joins late: its first frame repeats one already stored.
  recorder.frame(group, diff(50, 59), ++ts, 2);
  recorder.frame(group, diff(60, 69), ++ts, 1); // the old socket is still ahead
  recorder.frame(group, diff(60, 69), ++ts, 2); // repeat, dropped
  recorder.frame(group, diff(70, 79), ++ts, 2);
  recorder.frame(group, diff(70, 79), ++ts, 1); // the retired socket's late copy
  assert.deepEqual(retired, [1]);
  const all = await lines();
  const data = all.filter((l) => l.data).map((l) => l.data.U);
  assert.deepEqual(data, [10, 20, 30, 40, 50, 60, 70]);
  const rotated = all.filter((l) => l.event === "rotated");
  assert.equal(rotated.length, 1);
  assert.equal(rotated[0].from_socket, 1);
  assert.equal(rotated[0].to_socket, 2);
  assert.ok(!all.some((l) => l.event === "gap"));
});

Deno.test("recorder retires the old socket once its live streams moved: a stopped stream does not hold it", () => {
  const retired: number[] = [];
  const recorder = new Recorder({
    batcher: new Batcher({ batchMs: 60_000, maxLines: 10_000, planKey: (s) => s }),
    submit: () => {},
    ruleFor: () => "spot-diff",
    monotonicMs: () => 0,
  });
  const ETH_DIFF = "ethusdt@depth@100ms";
  const group = { conn: 1, names: [DIFF, ETH_DIFF], retire: (id: number) => retired.push(id) };
  const eth = (first: number, last: number) => diff(first, last).replace(DIFF, ETH_DIFF);
  recorder.frame(group, diff(10, 19), 1, 1);
  recorder.frame(group, eth(10, 19), 2, 1);
  recorder.stop([ETH_DIFF], 3, { reason: "no longer listed" }); // ETH delisted
  recorder.frame(group, diff(20, 29), 4, 1);
  recorder.frame(group, diff(20, 29), 5, 2); // the successor joins: BTC moves to it
  recorder.frame(group, diff(30, 39), 6, 2);
  assert.deepEqual(retired, [1]);
});

Deno.test("recorder holds a successor that is ahead until the old socket catches up", async () => {
  const { recorder, group, retired, lines } = chainSetup();
  recorder.frame(group, diff(10, 19), 1, 1);
  recorder.frame(group, diff(30, 39), 2, 2); // ahead: 20..29 not stored yet
  assert.deepEqual(retired, []);
  recorder.frame(group, diff(20, 29), 3, 1); // old catches up: the successor now follows on
  assert.deepEqual(retired, [1]);
  recorder.frame(group, diff(40, 49), 4, 2);
  const data = (await lines()).filter((l) => l.data).map((l) => l.data.U);
  assert.deepEqual(data, [10, 20, 30, 40]);
});

Deno.test("recorder writes a frame held back during a rotation with no earlier receive time than the line before it", async () => {
  const { recorder, group, lines } = chainSetup();
  recorder.frame(group, diff(10, 19), 1, 1);
  recorder.frame(group, diff(30, 39), 2, 2); // received at 2, held: 20..29 not stored yet
  recorder.frame(group, diff(20, 29), 3, 1); // received at 3, written first (the chain's order)
  recorder.frame(group, diff(40, 49), 4, 2);
  const all = await lines();
  assert.deepEqual(all.map((l) => [l.data?.U ?? l.event, l.recv_ts]), [
    [10, 1],
    [20, 3],
    ["rotated", 3],
    [30, 3],
    [40, 4],
  ]);
});

Deno.test("recorder marks a break with a gap event and asks for a new chain start", async () => {
  const { recorder, group, chainStarts, lines } = chainSetup();
  recorder.frame(group, diff(10, 19), 1, 1);
  recorder.frame(group, diff(20, 29), 2, 1);
  recorder.frame(group, diff(40, 49), 3, 1);
  const all = await lines();
  const gap = all.find((l) => l.event === "gap");
  assert.deepEqual({ expected: gap.expected, received: gap.received }, {
    expected: 30,
    received: 40,
  });
  assert.equal(
    all.indexOf(gap),
    all.findIndex((l) => l.data?.U === 40) - 1,
    "gap line precedes the message",
  );
  assert.deepEqual(chainStarts, [DIFF, DIFF]);
});

Deno.test("recorder drops repeats a new socket delivers after a disconnect", async () => {
  const { recorder, group, lines } = chainSetup();
  recorder.frame(group, diff(10, 19), 1, 1);
  recorder.frame(group, diff(20, 29), 2, 1);
  recorder.closed(group, 1, { recvTs: 3, details: { cause: "server" } });
  recorder.frame(group, diff(20, 29), 4, 2);
  recorder.frame(group, diff(30, 39), 5, 2);
  const all = await lines();
  assert.deepEqual(all.filter((l) => l.data).map((l) => l.data.U), [10, 20, 30]);
  assert.ok(all.some((l) => l.event === "disconnected"));
  assert.ok(!all.some((l) => l.event === "gap"));
});

Deno.test("recorder moves unswitched streams to the successor when the old socket is retired anyway", async () => {
  const { recorder, group, lines } = chainSetup();
  recorder.frame(group, diff(10, 19), 1, 1);
  recorder.frame(group, diff(40, 49), 2, 2); // ahead, and the old socket never catches up
  recorder.closed(group, 1, { replaced: true, recvTs: 3, details: { cause: "rotated" } });
  const all = await lines();
  const rotated = all.find((l) => l.event === "rotated");
  assert.equal(rotated.confirmed, false);
  const gap = all.find((l) => l.event === "gap");
  assert.deepEqual({ expected: gap.expected, received: gap.received }, {
    expected: 20,
    received: 40,
  });
  assert.deepEqual(all.filter((l) => l.data).map((l) => l.data.U), [10, 40]);
});

Deno.test("recorder goes back to the old socket, losing nothing, when the new one dies mid-handover", async () => {
  const { recorder, group, lines } = chainSetup();
  recorder.frame(group, diff(10, 19), 1, 1);
  recorder.frame(group, diff(10, 19), 2, 2); // a repeat: the stream switches to socket 2
  recorder.frame(group, diff(20, 29), 3, 1); // the old socket runs on (frame kept aside)
  recorder.closed(group, 2, { recvTs: 4, details: { cause: "server" } }); // the new one dies
  recorder.frame(group, diff(30, 39), 5, 1);
  const all = await lines();
  assert.deepEqual(all.filter((l) => l.data).map((l) => l.data.U), [10, 20, 30]);
  assert.ok(!all.some((l) => l.event === "gap" || l.event === "disconnected"));
});
