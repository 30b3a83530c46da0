/**
 * The named telemetry events (src/ops/events.ts): each moves its metrics
 * and the state health reads, and writes its log line; the connection glue
 * (src/ops/connection_events.ts) tells the recorder and the events. Also
 * the metric label sets: `{market, type}` by default, `{stream}` only when
 * asked (METRICS_PER_STREAM).
 */

import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { connectionHandlers } from "../src/ops/connection_events.ts";
import { Telemetry } from "../src/ops/events.ts";
import { HealthTracker } from "../src/ops/health.ts";
import { handler } from "../src/ops/http.ts";
import { Metrics } from "../src/ops/metrics.ts";

const NOW = Date.UTC(2024, 7, 8, 12, 0, 0);

async function withLogs(body: (records: LogRecord[]) => Promise<void> | void): Promise<void> {
  const records: LogRecord[] = [];
  await configure({
    sinks: { memory: (r) => records.push(r) },
    loggers: [
      { category: ["l2"], lowestLevel: "debug", sinks: ["memory"] },
      { category: ["logtape", "meta"], lowestLevel: "error", sinks: [] },
    ],
    reset: true,
  });
  try {
    await body(records);
  } finally {
    await reset();
  }
}

const value = async (metrics: Metrics, name: string, labels: Record<string, string> = {}) => {
  const metric = metrics.registry.getSingleMetric(name);
  assert.ok(metric, name);
  return (await metric.get()).values
    .filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))
    .reduce((sum, v) => sum + v.value, 0);
};

Deno.test("upload events move their counters and the state, with the time of the last store", async () => {
  const metrics = new Metrics();
  let now = NOW;
  const telemetry = new Telemetry({ metrics, now: () => now });
  telemetry.uploadFailed();
  now += 5_000;
  telemetry.batchStored("s3", 1234);
  telemetry.batchDropped(7);
  telemetry.spoolChanged({ bytes: 900, count: 3 });
  telemetry.uploadQueueChanged(4096);
  telemetry.diskWriteFailed("spool");
  assert.deepEqual(
    { ...telemetry.state, exchangeLag: undefined },
    {
      reconnects: 0,
      uploadAttempts: 2,
      uploadFailures: 1,
      batchesStored: 1,
      droppedMessages: 7,
      sequenceGaps: 0,
      lastStoredAt: NOW + 5_000,
      spoolBytes: 900,
      spoolBatches: 3,
      uploadQueueBytes: 4096,
      webSockets: 0,
      exchangeLag: undefined,
    },
  );
  assert.equal(await value(metrics, "l2_upload_attempts_total"), 2);
  assert.equal(await value(metrics, "l2_upload_failures_total"), 1);
  assert.equal(await value(metrics, "l2_batches_stored_total", { sink: "s3" }), 1);
  assert.equal(await value(metrics, "l2_bytes_stored_total", { sink: "s3" }), 1234);
  assert.equal(await value(metrics, "l2_dropped_messages_total"), 7);
  assert.equal(await value(metrics, "l2_spool_bytes"), 900);
  assert.equal(await value(metrics, "l2_upload_queue_bytes"), 4096);
  assert.equal(await value(metrics, "l2_last_upload_timestamp_seconds"), (NOW + 5_000) / 1000);
  assert.equal(await value(metrics, "l2_disk_write_failures_total", { target: "spool" }), 1);
});

Deno.test("health reads the last store from the event, not from when a sample saw it", async () => {
  const metrics = new Metrics();
  let now = NOW;
  const telemetry = new Telemetry({ metrics, now: () => now });
  const handle = handler({
    metrics,
    telemetry,
    tracker: new HealthTracker(NOW - 60_000),
    version: "t",
    now: () => now,
    residentBytes: () => 1,
  });
  telemetry.batchStored("local", 10);
  now += 42_000;
  const status = await (await handle(new Request("http://ops.test/status"))).json();
  assert.equal(status.lastUpload.at, new Date(NOW).toISOString());
  assert.equal(status.lastUpload.ageSeconds, 42);
  assert.equal(status.totals.batchesStored, 1);
});

Deno.test("connection events log as before, count reconnects by cause and note disconnects", async () => {
  await withLogs((records) => {
    const metrics = new Metrics();
    const telemetry = new Telemetry({ metrics, now: () => NOW });
    const calls: string[] = [];
    const group = { conn: 3, names: ["btcusdt@depth@100ms", "ethusdt@depth@100ms"] };
    const handlers = connectionHandlers({
      group,
      inUrl: group.names,
      telemetry,
      nowMicros: () => NOW * 1000,
      recorder: {
        frame: (_g, text) => calls.push(`frame ${text}`),
        opened: (_g, socketId, role, _ts, streams) =>
          calls.push(`opened ${socketId} ${role} ${streams.length}`),
        closed: (_g, socketId, close) =>
          calls.push(`closed ${socketId} ${close.details.cause} ${close.replaced ?? false}`),
      },
    });
    handlers.onOpen({ url: "ws://x", opened: NOW, socketId: 1, role: "initial" });
    handlers.onFrame("{}", NOW * 1000, 1);
    assert.equal(telemetry.state.webSockets, 1);
    handlers.onClose({
      cause: "stale",
      code: 1006,
      reason: "",
      uptimeMs: 5,
      socketId: 1,
      retryInMs: 0,
    });
    handlers.onConnectFailed?.({
      cause: "error",
      code: 0,
      reason: "refused",
      uptimeMs: 0,
      retryInMs: 500,
    });
    assert.deepEqual(calls, ["opened 1 initial 2", "frame {}", "closed 1 stale false"]);
    assert.equal(telemetry.state.webSockets, 0);
    assert.equal(telemetry.state.reconnects, 2);
    assert.deepEqual(
      telemetry.activity.events().map((e) => [e.kind, e.subject, e.detail]),
      [
        ["connect-failed", "conn 3", "error: refused; retrying in 500 ms"],
        ["disconnect", "conn 3", "stale, code 1006; reconnecting in 0 ms"],
      ],
    );
    const lines = records.map((r) => [r.level, r.rawMessage]);
    assert.deepEqual(lines, [
      ["info", "Connection {conn} open ({streams} streams, socket {socketId}, {role})"],
      [
        "warning",
        "Connection {conn} socket {socketId} closed ({cause}, code {code}){replacedNote}",
      ],
      ["warning", "Connection {conn} could not open ({reason}); retrying in {retryInMs} ms"],
    ]);
    assert.deepEqual(records.map((r) => r.category.join(".")), ["l2.run", "l2.run", "l2.run"]);
  });
});

Deno.test("a rotation's close is logged at info and counts no reconnect", async () => {
  await withLogs(async (records) => {
    const metrics = new Metrics();
    const telemetry = new Telemetry({ metrics });
    telemetry.connectionClosed({ conn: 1, streams: 1 }, {
      cause: "rotated",
      code: 1000,
      reason: "",
      uptimeMs: 1,
      socketId: 4,
    });
    assert.equal(telemetry.state.reconnects, 0);
    assert.equal(await value(metrics, "l2_reconnects_total"), 0);
    assert.deepEqual(records.map((r) => r.level), ["info"]);
  });
});

Deno.test("per-stream metrics are labelled by market and type unless per-stream labels are asked for", async () => {
  const streams = ["btcusdt@depth@100ms", "ethusdt@depth@100ms", "btcusdt@trade"];
  const byType = new Metrics({ market: "usdm", perStream: false });
  byType.declare({ streams, sink: "s3" });
  for (const s of streams) byType.countMessage(s, 2);
  byType.setMessageAges([[streams[0], 1.5], [streams[1], 7], [streams[2], 0.2]]);
  const text = await byType.registry.metrics();
  assert.match(text, /^l2_messages_received_total\{market="usdm",type="depth@100ms"\} 4$/m);
  assert.match(text, /^l2_messages_received_total\{market="usdm",type="trade"\} 2$/m);
  assert.match(text, /^l2_last_message_age_seconds\{market="usdm",type="depth@100ms"\} 7$/m);
  assert.doesNotMatch(text, /stream="/);
  // The plain totals health reads keep every stream apart.
  assert.equal(byType.received().byStream.get(streams[1]), 2);

  const perStream = new Metrics({ market: "usdm", perStream: true });
  perStream.countMessage(streams[1], 3);
  perStream.setMessageAges([[streams[1], 7]]);
  const detailed = await perStream.registry.metrics();
  assert.match(detailed, /^l2_messages_received_total\{stream="ethusdt@depth@100ms"\} 3$/m);
  assert.match(detailed, /^l2_last_message_age_seconds\{stream="ethusdt@depth@100ms"\} 7$/m);
});

Deno.test("gaps, clock offset and exchange lag reach the status through the state", async () => {
  const metrics = new Metrics();
  const telemetry = new Telemetry({ metrics, market: "spot", now: () => NOW });
  telemetry.gapDetected("btcusdt@depth@100ms", { expected: 5, received: 9 });
  telemetry.clockOffsetMeasured(0.25);
  telemetry.exchangeLagSampled(0.1);
  telemetry.exchangeLagSampled(0.3);
  const status = await (await handler({
    metrics,
    telemetry,
    activity: telemetry.activity,
    tracker: new HealthTracker(NOW),
    version: "t",
    now: () => NOW,
    residentBytes: () => 1,
  })(new Request("http://ops.test/status"))).json();
  assert.equal(status.totals.sequenceGaps, 1);
  assert.deepEqual(status.exchange, {
    clockOffsetSeconds: 0.25,
    lag: { spot: { samples: 2, meanSeconds: 0.2 } },
  });
  assert.equal(status.recentEvents[0].detail, "expected update id 5, received 9");
  assert.equal(await value(metrics, "l2_clock_offset_seconds"), 0.25);
});

Deno.test("clock events: a step and a suspension are counted and logged under l2.clock; a suspension warns health", async () => {
  await withLogs(async (records) => {
    const metrics = new Metrics();
    const tracker = new HealthTracker(NOW - 60_000);
    const telemetry = new Telemetry({ metrics, now: () => NOW, tracker });
    telemetry.clockStepped({ atUs: NOW * 1000, stepMs: 2500, direction: "forward" });
    telemetry.suspended(
      { fromUs: (NOW - 8000) * 1000, toUs: NOW * 1000, durationMs: 8000, measuredBy: "monotonic" },
      "the process was suspended",
    );
    assert.equal(await value(metrics, "l2_clock_steps_total"), 1);
    assert.equal(await value(metrics, "l2_suspensions_total"), 1);
    const lines = records.map((r) => ({
      category: r.category.join("."),
      level: r.level,
      text: r.message.join(""),
    }));
    assert.deepEqual(lines, [
      {
        category: "l2.clock",
        level: "warning",
        text: "The wall clock stepped forward by 2500 ms; receive times re-anchored to it",
      },
      {
        category: "l2.clock",
        level: "warning",
        text: "the process was suspended for 8 s (nothing was received meanwhile); " +
          "replacing every connection now",
      },
    ]);
    const inputs = tracker.inputs(NOW, { restartsLastHour: 0, residentBytes: 0, spoolFull: false });
    assert.deepEqual(inputs.lastSuspension, {
      at: NOW,
      durationMs: 8000,
      reason: "the process was suspended",
    });
  });
});

Deno.test("a gap is counted once and logged once, by the event, under l2.recorder", async () => {
  await withLogs(async (records) => {
    const metrics = new Metrics();
    const telemetry = new Telemetry({ metrics, now: () => NOW });
    telemetry.gapDetected("btcusdt@depth", { expected: 11, received: 15 });
    assert.equal(await value(metrics, "l2_sequence_gaps_total"), 1);
    assert.equal(telemetry.state.sequenceGaps, 1);
    assert.deepEqual(
      records.map((r) => [r.category.join("."), r.level, r.message.join("")]),
      [["l2.recorder", "warning", "Sequence gap on btcusdt@depth: expected 11, received 15"]],
    );
  });
});
