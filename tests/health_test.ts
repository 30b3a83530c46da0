/**
 * Health thresholds (src/ops/health.ts) on both sides of every boundary with
 * an injected clock, the last-hour window, the tracker that turns counters
 * into windows, and the restart history (src/ops/restarts.ts) behind the
 * restarts check.
 */

import assert from "node:assert/strict";
import {
  evaluateHealth,
  type HealthInputs,
  type HealthLevel,
  HealthTracker,
  HourWindow,
  type MetricsSample,
  RECONNECTS_WARNING_PER_HOUR,
  RESIDENT_MEMORY_CRITICAL_BYTES,
  RESTARTS_CRITICAL_PER_HOUR,
  SPOOL_FULL_FRACTION,
  spoolIsFull,
  UPLOAD_FAILURE_RATIO_WARNING,
  UPLOAD_STALL_CRITICAL_MS,
  ZERO_SAMPLE,
} from "../src/ops/health.ts";
import {
  countRestarts,
  pruneStarts,
  recordCleanStop,
  recordStart,
  restartsFile,
} from "../src/ops/restarts.ts";
import { tempDir } from "./support/temp.ts";

const NOW = Date.UTC(2024, 7, 8, 12, 0, 0);
const MIN = 60_000;
const HOUR = 60 * MIN;

const healthy: HealthInputs = {
  reconnectsLastHour: 0,
  uploadAttemptsLastHour: 100,
  uploadFailuresLastHour: 0,
  lastSuccessfulUploadAt: NOW - 10_000,
  batchesDueSince: undefined,
  restartsLastHour: 0,
  residentBytes: 200 * 1024 ** 2,
  spoolFull: false,
  droppedMessagesLastHour: 0,
};

/** The status of one named check, and the overall status, for `changes` applied to a healthy snapshot. */
function check(name: string, changes: Partial<HealthInputs>): [HealthLevel, HealthLevel] {
  const health = evaluateHealth({ ...healthy, ...changes }, NOW);
  const found = health.checks.find((c) => c.name === name);
  assert.ok(found, `no check named ${name}`);
  return [found.status, health.status];
}

Deno.test("a healthy snapshot is ok with every check present", () => {
  const health = evaluateHealth(healthy, NOW);
  assert.equal(health.status, "ok");
  assert.deepEqual(health.checks.map((c) => c.name), [
    "reconnects",
    "upload_failures",
    "upload_stall",
    "restarts",
    "memory",
    "spool",
    "dropped",
  ]);
  assert.ok(health.checks.every((c) => c.status === "ok" && c.message.length > 0));
});

Deno.test("more than 5 reconnects in the last hour is a warning, 5 is not", () => {
  assert.equal(RECONNECTS_WARNING_PER_HOUR, 5);
  assert.deepEqual(check("reconnects", { reconnectsLastHour: 5 }), ["ok", "ok"]);
  assert.deepEqual(check("reconnects", { reconnectsLastHour: 6 }), ["warning", "warning"]);
});

Deno.test("more than 10 % failed upload attempts is a warning, exactly 10 % is not", () => {
  assert.equal(UPLOAD_FAILURE_RATIO_WARNING, 0.1);
  const ratio = (failures: number, attempts: number) =>
    check("upload_failures", {
      uploadFailuresLastHour: failures,
      uploadAttemptsLastHour: attempts,
    });
  assert.deepEqual(ratio(10, 100), ["ok", "ok"]);
  assert.deepEqual(ratio(11, 100), ["warning", "warning"]);
  assert.deepEqual(ratio(1, 9), ["warning", "warning"]);
  assert.deepEqual(ratio(0, 0), ["ok", "ok"]);
  const health = evaluateHealth(
    { ...healthy, uploadFailuresLastHour: 3, uploadAttemptsLastHour: 20 },
    NOW,
  );
  assert.match(health.checks[1].message, /3 of 20 .*15 %/);
});

Deno.test("batches waiting 5 minutes with no successful upload is critical, a millisecond less is not", () => {
  assert.equal(UPLOAD_STALL_CRITICAL_MS, 5 * MIN);
  const stall = (dueSince: number, lastOk?: number) =>
    check("upload_stall", { batchesDueSince: dueSince, lastSuccessfulUploadAt: lastOk });
  assert.deepEqual(stall(NOW - 5 * MIN + 1), ["ok", "ok"]);
  assert.deepEqual(stall(NOW - 5 * MIN), ["critical", "critical"]);
  assert.deepEqual(stall(NOW - 5 * MIN, undefined), ["critical", "critical"]);
  // A success after the batches became due restarts the count.
  assert.deepEqual(stall(NOW - 20 * MIN, NOW - 5 * MIN + 1), ["ok", "ok"]);
  assert.deepEqual(stall(NOW - 20 * MIN, NOW - 5 * MIN), ["critical", "critical"]);
});

Deno.test("an old last upload is fine while no batch is waiting", () => {
  assert.deepEqual(
    check("upload_stall", { batchesDueSince: undefined, lastSuccessfulUploadAt: NOW - HOUR }),
    ["ok", "ok"],
  );
  assert.deepEqual(check("upload_stall", { lastSuccessfulUploadAt: undefined }), ["ok", "ok"]);
});

Deno.test("more than 3 restarts in the last hour is critical, 3 is not", () => {
  assert.equal(RESTARTS_CRITICAL_PER_HOUR, 3);
  assert.deepEqual(check("restarts", { restartsLastHour: 3 }), ["ok", "ok"]);
  assert.deepEqual(check("restarts", { restartsLastHour: 4 }), ["critical", "critical"]);
});

Deno.test("resident memory above 1.5 GB is critical, exactly 1.5 GB is not", () => {
  assert.equal(RESIDENT_MEMORY_CRITICAL_BYTES, 1.5 * 1024 ** 3);
  const memory = (bytes: number) => check("memory", { residentBytes: bytes });
  assert.deepEqual(memory(RESIDENT_MEMORY_CRITICAL_BYTES), ["ok", "ok"]);
  assert.deepEqual(memory(RESIDENT_MEMORY_CRITICAL_BYTES + 1), ["critical", "critical"]);
});

Deno.test("a full spool is critical", () => {
  assert.deepEqual(check("spool", { spoolFull: false }), ["ok", "ok"]);
  assert.deepEqual(check("spool", { spoolFull: true }), ["critical", "critical"]);
});

Deno.test("the spool counts as full from 95 % of SPOOL_MAX_BYTES; no spool is never full", () => {
  assert.equal(SPOOL_FULL_FRACTION, 0.95);
  assert.equal(spoolIsFull(949, 1000), false);
  assert.equal(spoolIsFull(950, 1000), true);
  assert.equal(spoolIsFull(10 ** 12, undefined), false);
});

Deno.test("one dropped message in the last hour is critical", () => {
  assert.deepEqual(check("dropped", { droppedMessagesLastHour: 0 }), ["ok", "ok"]);
  assert.deepEqual(check("dropped", { droppedMessagesLastHour: 1 }), ["critical", "critical"]);
});

Deno.test("the overall status is the worst check", () => {
  const health = evaluateHealth(
    { ...healthy, reconnectsLastHour: 9, residentBytes: 2 * 1024 ** 3 },
    NOW,
  );
  assert.equal(health.status, "critical");
  assert.deepEqual(
    health.checks.filter((c) => c.status !== "ok").map((c) => [c.name, c.status]),
    [["reconnects", "warning"], ["memory", "critical"]],
  );
});

Deno.test("an hour window counts an event until its minute bucket is an hour old, then forgets it", () => {
  const window = new HourWindow();
  const t0 = NOW + 15_000; // 15 s into a minute
  window.add(t0);
  window.add(t0 + 1000, 4);
  assert.equal(window.total(t0), 5);
  assert.equal(window.total(t0 + 59 * MIN + 44_999), 5); // still in the 60th bucket
  assert.equal(window.total(t0 + 59 * MIN + 45_000), 0); // the minute rolled over
  assert.equal(window.total(t0 - MIN), 0); // earlier than the event
});

Deno.test("an hour window reuses a bucket after wrapping around and ignores times older than the ring", () => {
  const window = new HourWindow();
  window.add(NOW, 3);
  window.add(NOW + 30 * MIN, 2);
  window.add(NOW + HOUR, 7); // same slot as NOW, one hour later
  assert.equal(window.total(NOW + HOUR), 9);
  window.add(NOW, 100); // older than the ring: ignored, does not reset the newer bucket
  assert.equal(window.total(NOW + HOUR), 9);
  assert.equal(window.total(NOW + HOUR + 31 * MIN), 7);
  assert.equal(window.total(NOW + 3 * HOUR), 0);
});

Deno.test("an hour window's span is 59 minutes plus the current minute's part", () => {
  const window = new HourWindow();
  assert.equal(window.spanMs(NOW), 59 * MIN);
  assert.equal(window.spanMs(NOW + 30_000), 59 * MIN + 30_000);
});

function sample(changes: Partial<MetricsSample> = {}): MetricsSample {
  return { ...ZERO_SAMPLE, ...changes };
}

const facts = { restartsLastHour: 0, residentBytes: 1, spoolFull: false };

Deno.test("the tracker turns counter growth into last-hour counts", () => {
  const tracker = new HealthTracker(NOW);
  tracker.observe(sample({ reconnects: 2, uploadAttempts: 10, uploadFailures: 1 }), NOW + MIN);
  tracker.observe(sample({ reconnects: 7, uploadAttempts: 30, uploadFailures: 4 }), NOW + 2 * MIN);
  let inputs = tracker.inputs(NOW + 2 * MIN, facts);
  assert.equal(inputs.reconnectsLastHour, 7);
  assert.equal(inputs.uploadAttemptsLastHour, 30);
  assert.equal(inputs.uploadFailuresLastHour, 4);
  // An hour after the first minute, only the second minute's growth is left.
  inputs = tracker.inputs(NOW + HOUR + MIN, facts);
  assert.equal(inputs.reconnectsLastHour, 5);
  assert.equal(inputs.uploadAttemptsLastHour, 20);
  assert.equal(
    evaluateHealth(tracker.inputs(NOW + 2 * MIN, facts), NOW + 2 * MIN).status,
    "warning",
  );
});

Deno.test("a sample read before the previous one does not count growth twice", () => {
  const tracker = new HealthTracker(NOW);
  tracker.observe(sample({ reconnects: 4 }), NOW);
  tracker.observe(sample({ reconnects: 3 }), NOW); // an interleaved, older read
  tracker.observe(sample({ reconnects: 5 }), NOW);
  assert.equal(tracker.inputs(NOW, facts).reconnectsLastHour, 5);
});

Deno.test("the tracker dates the last success and how long batches have waited", () => {
  const tracker = new HealthTracker(NOW);
  tracker.observe(sample({ batchesStored: 1 }), NOW + 10_000);
  assert.equal(tracker.lastSuccessAt, NOW + 10_000);
  tracker.observe(sample({ batchesStored: 1, backlog: 2 }), NOW + 20_000);
  tracker.observe(sample({ batchesStored: 1, backlog: 3 }), NOW + 30_000);
  let inputs = tracker.inputs(NOW + 30_000, facts);
  assert.equal(inputs.batchesDueSince, NOW + 20_000);
  assert.equal(inputs.lastSuccessfulUploadAt, NOW + 10_000);
  const stalledAt = NOW + 20_000 + UPLOAD_STALL_CRITICAL_MS;
  assert.equal(evaluateHealth(tracker.inputs(stalledAt - 1, facts), stalledAt - 1).status, "ok");
  assert.equal(evaluateHealth(tracker.inputs(stalledAt, facts), stalledAt).status, "critical");
  // Stored again: ok; backlog gone: nothing waits.
  tracker.observe(sample({ batchesStored: 2, backlog: 1 }), stalledAt);
  assert.equal(evaluateHealth(tracker.inputs(stalledAt, facts), stalledAt).status, "ok");
  tracker.observe(sample({ batchesStored: 3 }), stalledAt + 1000);
  inputs = tracker.inputs(stalledAt + 1000, facts);
  assert.equal(inputs.batchesDueSince, undefined);
});

Deno.test("a wall clock stepped back an hour does not hide an upload stall", () => {
  const tracker = new HealthTracker(NOW);
  // Stored at NOW + 2 h by the clock of then; NTP steps it back to NOW; S3 goes down.
  tracker.observe(sample({ batchesStored: 1, lastStoredAt: NOW + 2 * HOUR }), NOW + 2 * HOUR);
  tracker.observe(sample({ batchesStored: 1, lastStoredAt: NOW + 2 * HOUR, backlog: 4 }), NOW);
  const stalledAt = NOW + UPLOAD_STALL_CRITICAL_MS;
  tracker.observe(
    sample({ batchesStored: 1, lastStoredAt: NOW + 2 * HOUR, backlog: 9 }),
    stalledAt,
  );
  assert.equal(evaluateHealth(tracker.inputs(stalledAt, facts), stalledAt).status, "critical");
});

Deno.test("dropped messages stay critical for the hour after they were seen", () => {
  const tracker = new HealthTracker(NOW);
  tracker.observe(sample({ droppedMessages: 120 }), NOW);
  assert.equal(tracker.inputs(NOW + 59 * MIN, facts).droppedMessagesLastHour, 120);
  assert.equal(tracker.inputs(NOW + HOUR, facts).droppedMessagesLastHour, 0);
});

Deno.test("rates average over the time since the start when that is shorter than an hour", () => {
  const tracker = new HealthTracker(NOW);
  tracker.observe(sample({ messages: 1000, bytes: 50_000 }), NOW + 100_000);
  const rates = tracker.rates(NOW + 100_000);
  assert.equal(rates.messagesPerSecond, 10);
  assert.equal(rates.bytesPerSecond, 500);
  // Two hours later those messages have left the window.
  assert.equal(tracker.rates(NOW + 2 * HOUR).messagesPerSecond, 0);
});

Deno.test("the first start in a fresh DATA_DIR is not a restart; later starts in the hour are", async () => {
  await using tmp = await tempDir();
  assert.equal((await recordStart(tmp.path, NOW)).restartsLastHour, 0);
  assert.equal((await recordStart(tmp.path, NOW + MIN)).restartsLastHour, 1);
  assert.equal((await recordStart(tmp.path, NOW + 2 * MIN)).restartsLastHour, 2);
  assert.equal((await recordStart(tmp.path, NOW + 3 * MIN)).restartsLastHour, 3);
  const fifth = await recordStart(tmp.path, NOW + 4 * MIN);
  assert.equal(fifth.restartsLastHour, 4); // "more than 3": critical
  const saved = JSON.parse(await Deno.readTextFile(restartsFile(tmp.path)));
  assert.deepEqual(saved.starts, [NOW, NOW + MIN, NOW + 2 * MIN, NOW + 3 * MIN, NOW + 4 * MIN]);
  // While running, restarts age out of the hour.
  assert.equal(countRestarts(fifth, NOW + HOUR + 2 * MIN), 2);
  const leftovers = [...Deno.readDirSync(`${tmp.path}/state`)].map((e) => e.name);
  assert.deepEqual(leftovers, ["restarts.json"]);
});

Deno.test("a start after a run that stopped cleanly is not a restart; one after a crash is", async () => {
  await using tmp = await tempDir();
  // An operator restarts five times in a few minutes, each run stopped by a signal.
  for (let i = 0; i < 5; i++) {
    assert.equal((await recordStart(tmp.path, NOW + i * MIN)).restartsLastHour, 0, `start ${i}`);
    await recordCleanStop(tmp.path, NOW + i * MIN);
  }
  // The sixth run crashes (no clean stop): the seventh start is a restart.
  await recordStart(tmp.path, NOW + 5 * MIN);
  const seventh = await recordStart(tmp.path, NOW + 6 * MIN);
  assert.equal(seventh.restartsLastHour, 1);
  const saved = JSON.parse(await Deno.readTextFile(restartsFile(tmp.path)));
  assert.deepEqual(saved.cleanStops, [0, 1, 2, 3, 4].map((i) => NOW + i * MIN));
  // A clean stop of a start the history no longer holds changes nothing.
  await recordCleanStop(tmp.path, NOW - 5 * HOUR);
  const again = JSON.parse(await Deno.readTextFile(restartsFile(tmp.path)));
  assert.deepEqual(again, saved);
  // A history written before clean stops were kept counts every start, as it did.
  await Deno.writeTextFile(restartsFile(tmp.path), JSON.stringify({ starts: [NOW, NOW + MIN] }));
  assert.equal((await recordStart(tmp.path, NOW + 2 * MIN)).restartsLastHour, 2);
});

Deno.test("one restart after a long run counts; the history keeps only the hour and one start before", async () => {
  await using tmp = await tempDir();
  await recordStart(tmp.path, NOW - 3 * HOUR);
  await recordStart(tmp.path, NOW - 2 * HOUR);
  const history = await recordStart(tmp.path, NOW);
  assert.equal(history.restartsLastHour, 1);
  assert.deepEqual(history.starts, [NOW - 2 * HOUR, NOW]);
  assert.deepEqual(pruneStarts([NOW + MIN, NOW - 5 * HOUR, NOW - 30 * MIN], NOW), [
    NOW - 5 * HOUR,
    NOW - 30 * MIN,
  ]);
});

Deno.test("a damaged restart history starts a new one instead of failing", async () => {
  await using tmp = await tempDir();
  await Deno.mkdir(`${tmp.path}/state`);
  await Deno.writeTextFile(restartsFile(tmp.path), "{not json");
  const history = await recordStart(tmp.path, NOW);
  assert.deepEqual(history.starts, [NOW]);
  assert.equal(history.restartsLastHour, 0);
});

Deno.test("a suspension within the last hour is a warning that says why and for how long", () => {
  const slept = { at: NOW - 10 * MIN, durationMs: 43_200, reason: "the Mac slept" };
  const health = evaluateHealth({ ...healthy, lastSuspension: slept }, NOW);
  assert.equal(health.status, "warning");
  const found = health.checks.find((c) => c.name === "suspension");
  assert.equal(found?.status, "warning");
  assert.match(found!.message, /^the Mac slept for 43 s, 10 min ago/);
  // An hour later it is history: the check is gone and health is ok again.
  const later = evaluateHealth({ ...healthy, lastSuspension: slept }, NOW + 50 * MIN);
  assert.equal(later.status, "ok");
  assert.equal(later.checks.find((c) => c.name === "suspension"), undefined);
});

Deno.test("the tracker hands the latest suspension to the health inputs", () => {
  const tracker = new HealthTracker(NOW - HOUR);
  const facts = { restartsLastHour: 0, residentBytes: 0, spoolFull: false };
  assert.equal(tracker.inputs(NOW, facts).lastSuspension, undefined);
  tracker.suspended(NOW - 5000, 8000, "the process was suspended");
  tracker.suspended(NOW - 1000, 9000, "the Mac slept");
  assert.deepEqual(tracker.inputs(NOW, facts).lastSuspension, {
    at: NOW - 1000,
    durationMs: 9000,
    reason: "the Mac slept",
  });
});

Deno.test("recording nothing for a minute is a warning; a recorded stream clears it", () => {
  const tracker = new HealthTracker(NOW);
  const facts = { restartsLastHour: 0, residentBytes: 0, spoolFull: false };
  const recording = (at: number) =>
    evaluateHealth(tracker.inputs(at, facts), at).checks.find((c) => c.name === "recording");
  // Without a recorder (no streams known) the check is absent.
  tracker.observe(sample(), NOW);
  assert.equal(recording(NOW), undefined);
  // SYMBOL=DOGE* on a market that lists none: the set is empty from the start.
  tracker.observe(sample({ streamsRecorded: 0 }), NOW + 5_000);
  assert.equal(recording(NOW + 30_000)?.status, "ok");
  tracker.observe(sample({ streamsRecorded: 0 }), NOW + 65_000);
  const found = recording(NOW + 65_000);
  assert.equal(found?.status, "warning");
  assert.match(found!.message, /^no stream recorded for 60 s: SYMBOL .*SHARD/);
  assert.equal(
    evaluateHealth(tracker.inputs(NOW + 65_000, facts), NOW + 65_000).status,
    "warning",
  );
  // A listing joins: ok at once, and a later empty set starts a new minute.
  tracker.observe(sample({ streamsRecorded: 2 }), NOW + 70_000);
  assert.deepEqual(
    { status: recording(NOW + 70_000)?.status, message: recording(NOW + 70_000)?.message },
    { status: "ok", message: "2 streams recorded" },
  );
  tracker.observe(sample({ streamsRecorded: 0 }), NOW + 80_000);
  assert.equal(recording(NOW + 100_000)?.status, "ok");
  assert.equal(recording(NOW + 140_000)?.status, "warning");
});
