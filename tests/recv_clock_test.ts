/**
 * The receive clock (src/feed/clock.ts) with injected wall and monotonic
 * clocks: anchoring, steps, drift, suspensions; and a whole in-process run
 * whose wall clock is stepped back and forth.
 */

import assert from "node:assert/strict";
import { run } from "../src/cli/run.ts";
import { verify } from "../src/cli/verify.ts";
import type { Report } from "../src/verify/audit.ts";
import { startClock, suspendedDetails, suspensionReason } from "../src/cli/suspension.ts";
import { Batcher, type SealedBatch } from "../src/batch/batcher.ts";
import { Recorder, type StreamGroup } from "../src/feed/recorder.ts";
import { parseConfig } from "../src/config.ts";
import { type ClockStep, ReceiveClock, type Suspension } from "../src/feed/clock.ts";
import { Metrics } from "../src/ops/metrics.ts";
import {
  continueFrom,
  readLastReceive,
  receiveStateFile,
  writeLastReceive,
} from "../src/ops/receive_state.ts";
import { FakeExchange, partialDepthFeed } from "./support/fake_exchange.ts";
import { readArchive } from "./support/collector.ts";
import { tempDir } from "./support/temp.ts";
import { delay, waitFor } from "./support/wait.ts";

const EPOCH = 1_795_830_000_000;

/** Wall and monotonic clocks the test moves by hand. */
function fakeClocks() {
  const t = { wall: EPOCH, mono: 5_000 };
  const steps: ClockStep[] = [];
  const suspensions: Suspension[] = [];
  const clock = new ReceiveClock({
    wallMs: () => t.wall,
    monotonicMs: () => t.mono,
    suspendThresholdMs: 3000,
    onStep: (s) => steps.push(s),
    onSuspend: (s) => suspensions.push(s),
  });
  /** Time passes for both clocks. */
  const pass = (ms: number) => {
    t.wall += ms;
    t.mono += ms;
  };
  return { t, clock, steps, suspensions, pass };
}

function nonDecreasing(values: readonly number[]): boolean {
  return values.every((v, i) => i === 0 || v >= values[i - 1]);
}

Deno.test("receive times follow the monotonic clock from the wall-clock anchor, in µs", () => {
  const { clock, pass } = fakeClocks();
  assert.equal(clock.nowMicros(), EPOCH * 1000);
  pass(1.5);
  assert.equal(clock.nowMicros(), EPOCH * 1000 + 1500);
});

Deno.test("wall-clock steps of -3 s and +3 s: receive times never decrease, each step reported once", () => {
  const { t, clock, steps, suspensions, pass } = fakeClocks();
  const stamps: number[] = [];
  const stampFor = (ms: number) => {
    for (let i = 0; i < ms / 10; i++) {
      pass(10);
      stamps.push(clock.nowMicros());
      if (t.mono % 1000 === 0) clock.tick();
    }
  };
  clock.tick();
  stampFor(2000);
  t.wall -= 3000;
  const beforeBack = stamps.at(-1)!;
  stampFor(5000);
  t.wall += 3000;
  const beforeForward = stamps.at(-1)!;
  stampFor(2000);

  assert.ok(nonDecreasing(stamps), "receive times went backwards");
  assert.deepEqual(steps.map((s) => [s.direction, s.stepMs]), [["backward", -3000], [
    "forward",
    3000,
  ]]);
  assert.deepEqual(suspensions, []);
  // The backward step re-anchors: lines hold the last time until the clock passes it.
  const back = steps[0];
  assert.equal(back.atUs, beforeBack);
  const afterBack = stamps.filter((s) => s > beforeBack);
  assert.ok(afterBack.length > 0);
  // The forward step shows at once: the next line is 3 s (and a tick) later.
  assert.equal(steps[1].atUs, beforeForward + 3_010_000);
  // After re-anchoring the receive clock is the wall clock again.
  assert.ok(Math.abs(clock.nowMicros() - t.wall * 1000) <= 1000);
});

Deno.test("continuing from a run before whose last time is 3 s ahead: times stay just after it, one backward step", () => {
  const { t, clock, steps, pass } = fakeClocks();
  const previous = (EPOCH + 3000) * 1000;
  const step = clock.continueFrom(previous);
  assert.deepEqual(step, {
    atUs: previous + 1,
    stepMs: -3000,
    direction: "backward",
    sincePreviousRun: true,
  });
  assert.deepEqual(steps, [], "reported by the caller, once the streams are known");
  assert.equal(clock.nowMicros(), previous + 1);
  pass(2000);
  assert.equal(clock.nowMicros(), previous + 1);
  pass(1500);
  assert.equal(clock.nowMicros(), t.wall * 1000);
  assert.deepEqual(steps, []);
});

Deno.test("continuing from a run before whose last time is behind the clock, or within 100 ms: no step", () => {
  for (const aheadMs of [-60_000, 0, 80]) {
    const { t, clock, steps } = fakeClocks();
    const previous = (EPOCH + aheadMs) * 1000;
    assert.equal(clock.continueFrom(previous), undefined);
    assert.equal(clock.nowMicros(), Math.max(t.wall * 1000, previous + 1));
    assert.deepEqual(steps, []);
  }
});

Deno.test("the last receive time is stored and read back; a damaged file, or a time over 10 minutes ahead, is not continued from", async () => {
  await using tmp = await tempDir();
  const wall = Date.now();
  assert.equal(await readLastReceive(tmp.path), undefined, "a first start");
  await writeLastReceive(tmp.path, wall * 1000 + 123);
  assert.equal(await readLastReceive(tmp.path), wall * 1000 + 123);
  for (const text of ["{", '{"lastRecvTs":"1"}', '{"lastRecvTs":1.5}', "null", ""]) {
    await Deno.writeTextFile(receiveStateFile(tmp.path), text);
    assert.equal(await readLastReceive(tmp.path), undefined, text);
  }
  const maxUs = 10 * 60_000 * 1000;
  assert.equal(continueFrom([undefined, 5, 9, undefined], wall), 9);
  assert.equal(continueFrom([undefined], wall), undefined);
  assert.equal(continueFrom([wall * 1000 + maxUs], wall), wall * 1000 + maxUs);
  assert.equal(continueFrom([wall * 1000 + maxUs + 1000], wall), undefined);
  // Only the time too far ahead is left out: a good one beside it still counts.
  assert.equal(continueFrom([5, wall * 1000 + maxUs + 1000, 9], wall), 9);
});

Deno.test("drift under 100 ms is followed silently at each tick", () => {
  const { t, clock, steps, pass } = fakeClocks();
  clock.tick();
  for (let i = 0; i < 300; i++) {
    pass(1000);
    t.wall += 0.5; // 500 ppm: NTP's fastest slew
    clock.tick();
  }
  assert.deepEqual(steps, []);
  // Behind by a steady lag (drift / gain: 5 ms), not by the 150 ms drifted.
  assert.ok(
    Math.abs(clock.nowMicros() / 1000 - t.wall) <= 6,
    `${clock.nowMicros() / 1000 - t.wall}`,
  );
});

Deno.test("Date.now()'s whole milliseconds do not jitter receive times at ticks", () => {
  const { t, clock } = fakeClocks();
  const real = () => EPOCH + (t.mono - 5_000);
  const stamps: number[] = [];
  clock.tick();
  for (let i = 0; i < 100; i++) {
    t.mono += 1000.37;
    t.wall = Math.floor(real()); // a wall clock that ticks in whole ms
    clock.tick();
    stamps.push(clock.nowMicros());
  }
  const gaps = stamps.slice(1).map((s, i) => s - stamps[i]);
  // One second and 0.37 ms each, to within 0.1 ms.
  assert.ok(gaps.every((g) => Math.abs(g - 1_000_370) <= 100), JSON.stringify(gaps));
});

Deno.test("a tick late by more than the threshold on the monotonic clock is a suspension", () => {
  const { clock, steps, suspensions, pass } = fakeClocks();
  clock.tick();
  pass(1000);
  clock.tick();
  pass(400);
  const last = clock.nowMicros();
  pass(8000); // SIGSTOP: both clocks run, the process does not
  const first = clock.nowMicros(); // a frame read before the ticker's next turn
  assert.equal(suspensions.length, 1);
  const s = suspensions[0];
  assert.equal(s.measuredBy, "monotonic");
  assert.equal(s.fromUs, last);
  assert.equal(s.toUs, first);
  assert.equal(s.durationMs, 8000);
  clock.tick();
  pass(1000);
  clock.tick();
  assert.equal(suspensions.length, 1, "reported once");
  assert.deepEqual(steps, []);
});

Deno.test("a suspension while times are held after a step back (a restart behind the run before) still has its length", () => {
  const { clock, suspensions, pass } = fakeClocks();
  // The run before ended 60 s ahead of this clock: times are held just after it.
  const held = (EPOCH + 60_000) * 1000 + 1;
  clock.continueFrom(held - 1);
  clock.tick();
  assert.equal(clock.nowMicros(), held);
  pass(8000); // SIGSTOP
  assert.equal(clock.nowMicros(), held);
  assert.equal(suspensions.length, 1);
  assert.deepEqual([suspensions[0].fromUs, suspensions[0].toUs], [held, held]);
  assert.equal(suspensions[0].durationMs, 8000);
});

Deno.test("a tick late by less than the threshold is not a suspension", () => {
  const { clock, suspensions, pass } = fakeClocks();
  clock.tick();
  pass(3900);
  clock.tick();
  clock.nowMicros();
  assert.deepEqual(suspensions, []);
});

Deno.test("a Mac sleep (wall runs, monotonic stops) is a suspension, not a clock step", () => {
  const { t, clock, steps, suspensions, pass } = fakeClocks();
  clock.tick();
  pass(1000);
  clock.tick();
  const last = clock.nowMicros();
  t.wall += 43_000; // asleep: the monotonic clock stands still
  pass(1);
  const first = clock.nowMicros();
  assert.deepEqual(steps, []);
  assert.equal(suspensions.length, 1);
  assert.equal(suspensions[0].measuredBy, "wall");
  assert.equal(suspensions[0].fromUs, last);
  assert.equal(suspensions[0].toUs, first);
  assert.equal(suspensions[0].durationMs, 43_001);
  // Stamped with the wall clock after the sleep, not the stopped monotonic one.
  assert.equal(first, t.wall * 1000);
});

Deno.test("without ticks a large forward wall jump is a step (nothing to tell a sleep by)", () => {
  const { t, clock, steps, suspensions } = fakeClocks();
  clock.nowMicros();
  t.wall += 10_000;
  clock.nowMicros();
  assert.deepEqual(suspensions, []);
  assert.deepEqual(steps.map((s) => s.stepMs), [10_000]);
});

const BTC = "btcusdt@depth20@100ms";
const ETH = "ethusdt@depth20@100ms";

/** The fake exchange with BTC's and ETH's partial books at 50 a second. */
async function twoPartialBooks(): Promise<FakeExchange> {
  const exchange = await FakeExchange.start();
  exchange.setFeed(BTC, partialDepthFeed({ rate: 50, startId: 1_000 }));
  exchange.setFeed(ETH, partialDepthFeed({ rate: 50, startId: 9_000 }));
  return exchange;
}

/** Records both into `dataDir`, in 1 s batches. */
function twoSymbolConfig(wsUrl: string, dataDir: string) {
  return parseConfig({
    SYMBOL: "BTCUSDT,ETHUSDT",
    BINANCE_WS_URL: wsUrl,
    DATA_DIR: dataDir,
    METRICS_ADDR: "off",
    BATCH_SECONDS: "1",
    PREVENT_SLEEP: "false",
  });
}

Deno.test({
  name:
    "run with the wall clock stepped -3 s then +3 s: recv_ts never decreases, each step one clock_step line",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await twoPartialBooks();
    await using tmp = await tempDir();
    const config = twoSymbolConfig(exchange.wsUrl, tmp.path);
    let offsetMs = 0;
    const metrics = new Metrics();
    const shutdown = new AbortController();
    let started = false;
    const running = run(config, {
      shutdown: shutdown.signal,
      metrics,
      wallMs: () => Date.now() + offsetMs,
      onStarted: () => started = true,
    });
    try {
      await waitFor(() => started, 5000, "run to start");
      await waitFor(() => exchange.sentCountFor(ETH) >= 25, 5000, "25 messages");
      offsetMs = -3000;
      await delay(1500);
      offsetMs = 0;
      await delay(1200);
    } finally {
      shutdown.abort();
      await running;
    }
    const lines = await readArchive(`${tmp.path}/archive`);
    for (const stream of [BTC, ETH]) {
      const ofStream = lines.filter((l) => l.value.stream === stream).map((l) => l.value);
      const stamps = ofStream.map((v) => v.recv_ts);
      assert.ok(nonDecreasing(stamps), `${stream}: recv_ts went backwards`);
      const steps = ofStream.filter((v) => v.event === "clock_step");
      assert.deepEqual(steps.map((v) => v.direction), ["backward", "forward"], stream);
      for (const [step, size] of [[steps[0], -3000], [steps[1], 3000]] as const) {
        const stepMs = step.step_ms as number;
        assert.ok(Math.abs(stepMs - size) < 100, `${stream}: step of ${stepMs} ms`);
      }
      // Data on both sides of each step.
      const at = (v: unknown) => ofStream.indexOf(v as (typeof ofStream)[number]);
      assert.ok(ofStream.slice(at(steps[0]), at(steps[1])).some((v) => v.data !== undefined));
      assert.ok(ofStream.slice(at(steps[1])).some((v) => v.data !== undefined));
    }
    const counted = await metrics.registry.getSingleMetricAsString("l2_clock_steps_total");
    assert.match(counted, /^l2_clock_steps_total 2$/m);
  },
});

Deno.test("a suspension's reason and event details: the Mac slept, or the process was stopped", () => {
  const slept: Suspension = {
    fromUs: 1_000_000,
    toUs: 44_000_000,
    durationMs: 43_000,
    measuredBy: "wall",
  };
  assert.equal(suspensionReason(slept, "darwin"), "the Mac slept");
  assert.equal(suspensionReason(slept, "linux"), "the machine slept");
  assert.equal(
    suspensionReason({ ...slept, measuredBy: "monotonic" }, "darwin"),
    "the process was suspended",
  );
  assert.deepEqual(suspendedDetails(slept), {
    from: 1_000_000,
    to: 44_000_000,
    duration_ms: 43_000,
    buffered_until: 47_000_000,
    measured_by: "wall",
  });
});

Deno.test("a sleep of a batch or more seals the open batches: lines after the wake go under the wake's partition", () => {
  let wall = Date.parse("2026-11-27T23:59:30Z");
  let mono = 1_000_000;
  const batcher = new Batcher({
    batchMs: 60_000,
    maxLines: 10_000,
    planKey: (_stream, firstRecvTs, seq) => `${new Date(firstRecvTs / 1000).toISOString()}#${seq}`,
  });
  const sealed: SealedBatch[] = [];
  const recorder = new Recorder({
    batcher,
    monotonicMs: () => mono,
    submit: (b) => sealed.push(b),
  });
  const stream = "btcusdt@depth20@100ms";
  const group: StreamGroup = { conn: 1, names: [stream] };
  const clock = startClock({
    config: parseConfig({ SYMBOL: "BTCUSDT", BATCH_SECONDS: "60" }),
    streams: () => [stream],
    recorder,
    telemetry: { clockStepped() {}, suspended() {} },
    wallMs: () => wall,
    monotonicMs: () => mono,
    onSuspended: () => {},
    os: "darwin",
  });
  let id = 1;
  const frame = () =>
    recorder.frame(
      group,
      `{"stream":"${stream}","data":{"lastUpdateId":${id++},"bids":[],"asks":[]}}`,
      clock.nowMicros(),
      1,
    );
  for (let i = 0; i < 10; i++) {
    wall += 1000;
    mono += 1000;
    clock.tick();
    frame();
  }
  wall += (2 * 24 + 9) * 3_600_000; // the Mac slept: the wall clock ran, the monotonic did not
  for (let i = 0; i < 5; i++) {
    wall += 1000;
    mono += 1000;
    frame();
    clock.tick();
  }
  recorder.sealAll();
  assert.deepEqual(sealed.map((b) => [b.key.slice(0, 13), b.meta.messages]), [
    ["2026-11-27T23", 10],
    ["2026-11-30T08", 5],
  ]);
});

Deno.test({
  name:
    "a wall clock set back 5 s between two runs: recv_ts and keys keep the record's order, one clock_step line, verify finds no duplicate",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await twoPartialBooks();
    await using tmp = await tempDir();
    const config = twoSymbolConfig(exchange.wsUrl, tmp.path);
    // The first run's clock is 5 s ahead; the second's is right: it starts "before" the first ended.
    for (const offsetMs of [5000, 0]) {
      const shutdown = new AbortController();
      let started = false;
      const running = run(config, {
        shutdown: shutdown.signal,
        metrics: new Metrics(),
        wallMs: () => Date.now() + offsetMs,
        onStarted: () => started = true,
      });
      try {
        await waitFor(() => started, 5000, "run to start");
        const sent = exchange.sentCountFor(ETH);
        await waitFor(() => exchange.sentCountFor(ETH) >= sent + 75, 5000, "75 messages");
      } finally {
        shutdown.abort();
        await running;
      }
    }
    const lines = await readArchive(`${tmp.path}/archive`);
    for (const stream of [BTC, ETH]) {
      const ofStream = lines.filter((l) => l.value.stream === stream);
      // Objects in key order hold the record in the order received: the second run's after the first's.
      const ids = ofStream.flatMap((l) => {
        const data = l.value.data as { lastUpdateId?: number } | undefined;
        return data?.lastUpdateId === undefined ? [] : [data.lastUpdateId];
      });
      assert.ok(ids.length > 100 && nonDecreasing(ids), `${stream}: the runs' objects interleave`);
      const stamps = ofStream.map((l) => l.value.recv_ts as number);
      assert.ok(nonDecreasing(stamps), `${stream}: recv_ts went backwards across the restart`);
      const steps = ofStream.filter((l) => l.value.event === "clock_step").map((l) => l.value);
      assert.equal(steps.length, 1, `${stream}: one clock_step line`);
      assert.equal(steps[0].direction, "backward");
      const behind = -(steps[0].step_ms as number);
      assert.ok(behind > 3000 && behind < 5100, `${stream}: ${behind} ms behind`);
    }
    // `verify` as a user runs it, a minute later (every object settled).
    let printed = "";
    const exitCode = await verify(config, { json: true }, {
      print: (text) => printed += text,
      now: () => Date.now() + 60_000,
    });
    const report = JSON.parse(printed) as Report;
    assert.deepEqual(report.streams.map((s) => [s.stream, s.duplicates]), [[BTC, 0], [ETH, 0]]);
    assert.deepEqual(report.problems.filter((p) => !p.explained), []);
    assert.equal(exitCode, 0);
  },
});
