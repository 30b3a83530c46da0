/**
 * The ops endpoint (src/ops/http.ts) through its handler, without a port:
 * /metrics exposition, /healthz levels and status codes, /status fields,
 * 404 and 405; plus `serveOps` refusing a port that is taken.
 */

import assert from "node:assert/strict";
import { EMPTY_TELEMETRY_STATE, type TelemetryState } from "../src/ops/events.ts";
import { HealthTracker } from "../src/ops/health.ts";
import { handler, type OpsDeps, serveOps } from "../src/ops/http.ts";
import { Metrics } from "../src/ops/metrics.ts";
import { REQUIRED_METRICS } from "./support/metrics.ts";

const STARTED = Date.UTC(2024, 7, 8, 12, 0, 0);
const BTC = "btcusdt@depth20@100ms";

/** What the named events (src/ops/events.ts) would have left; tests set it directly. */
type State = { -readonly [K in keyof TelemetryState]: TelemetryState[K] };

function deps(changes: Partial<OpsDeps> = {}): OpsDeps & { state: State } {
  const state: State = { ...EMPTY_TELEMETRY_STATE };
  return {
    state,
    telemetry: { state },
    metrics: new Metrics(),
    tracker: new HealthTracker(STARTED),
    version: "9.9.9",
    instanceId: "test-box",
    now: () => STARTED + 120_000,
    residentBytes: () => 123_456_789,
    messageAges: () => new Map([[BTC, 1.5]]),
    openBatches: () => ({ bytes: 4096, textBytes: 20_000 }),
    backlog: () => 0,
    spoolMaxBytes: 1000,
    restartsLastHour: () => 1,
    ...changes,
  };
}

const get = (handle: (req: Request) => Promise<Response>, path: string, method = "GET") =>
  handle(new Request(`http://ops.test${path}`, { method }));

Deno.test("/metrics serves every metric the issue names in Prometheus text format", async () => {
  const d = deps();
  d.metrics.messagesReceived.inc({ stream: BTC }, 3);
  d.metrics.batchesStored.inc({ sink: "local" });
  const response = await get(handler(d), "/metrics");
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  const text = await response.text();
  for (const name of REQUIRED_METRICS) {
    assert.match(text, new RegExp(`^# TYPE ${name} (counter|gauge)$`, "m"), name);
  }
  assert.match(text, /^l2_messages_received_total\{stream="btcusdt@depth20@100ms"\} 3$/m);
  assert.match(text, /^l2_batches_stored_total\{sink="local"\} 1$/m);
  // Set at scrape time: the default collector would report 0 under Deno.
  assert.match(text, /^process_resident_memory_bytes 123456789$/m);
  assert.match(text, /^l2_last_message_age_seconds\{stream="btcusdt@depth20@100ms"\} 1\.5$/m);
  assert.match(text, /^l2_open_batch_bytes 4096$/m);
  assert.match(text, /^l2_open_batch_text_bytes 20000$/m);
});

Deno.test("/metrics reports the real resident memory when none is injected", async () => {
  const text = await (await get(handler(deps({ residentBytes: undefined })), "/metrics")).text();
  const rss = Number(/^process_resident_memory_bytes (\d+)$/m.exec(text)?.[1]);
  assert.ok(rss > 1024 ** 2, `resident memory ${rss}`);
});

Deno.test("/healthz answers 200 with every check while ok", async () => {
  const response = await get(handler(deps()), "/healthz");
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
  const body = await response.json();
  assert.equal(body.status, "ok");
  assert.equal(body.checks.length, 7);
  assert.deepEqual(Object.keys(body.checks[0]).sort(), ["message", "name", "status", "value"]);
});

Deno.test("/healthz answers 200 with a warning after 6 reconnects", async () => {
  const d = deps();
  d.state.reconnects = 6;
  const response = await get(handler(d), "/healthz");
  assert.equal(response.status, 200);
  const body = await response.json();
  assert.equal(body.status, "warning");
  assert.equal(body.checks.find((c: { name: string }) => c.name === "reconnects").value, 6);
});

Deno.test("/healthz answers 503 when critical: a message dropped", async () => {
  const d = deps();
  d.state.droppedMessages = 10;
  const response = await get(handler(d), "/healthz");
  assert.equal(response.status, 503);
  assert.equal((await response.json()).status, "critical");
});

Deno.test("/healthz answers 503 when the spool is full", async () => {
  const d = deps();
  d.state.spoolBytes = 990;
  const response = await get(handler(d), "/healthz");
  assert.equal(response.status, 503);
  const body = await response.json();
  assert.equal(body.checks.find((c: { name: string }) => c.name === "spool").status, "critical");
});

Deno.test("/status reports rates, spool, last upload, connections, uptime and version", async () => {
  let now = STARTED + 60_000;
  const d = deps({ now: () => now, backlog: () => 2 });
  const handle = handler(d);
  d.metrics.countMessage(BTC, 1200);
  d.metrics.countBytes(60_000);
  Object.assign(d.state, {
    uploadAttempts: 10,
    uploadFailures: 1,
    batchesStored: 3,
    lastStoredAt: STARTED + 60_000,
    spoolBytes: 500,
    spoolBatches: 2,
    webSockets: 2,
  });
  await (await get(handle, "/healthz")).body?.cancel(); // a sample at one minute
  now = STARTED + 120_000;
  const response = await get(handle, "/status");
  assert.equal(response.status, 200);
  const status = await response.json();
  assert.equal(status.version, "9.9.9");
  assert.equal(status.instanceId, "test-box");
  assert.equal(status.startedAt, new Date(STARTED).toISOString());
  assert.equal(status.uptimeSeconds, 120);
  assert.equal(status.health, "ok");
  assert.deepEqual(status.rates, {
    messagesPerSecond: 10,
    bytesPerSecond: 500,
    reconnectsLastHour: 0,
    uploadAttemptsLastHour: 10,
    uploadFailuresLastHour: 1,
    batchesStoredLastHour: 3,
    droppedMessagesLastHour: 0,
    restartsLastHour: 1,
  });
  assert.equal(status.totals.messages, 1200);
  assert.deepEqual(status.spool, { bytes: 500, batches: 2, maxBytes: 1000, full: false });
  assert.deepEqual(status.lastUpload, {
    at: new Date(STARTED + 60_000).toISOString(),
    ageSeconds: 60,
    backlog: 2,
  });
  assert.deepEqual(status.connections, { webSockets: 2 });
  assert.deepEqual(status.memory, { residentBytes: 123_456_789 });
  assert.deepEqual(status.streams, { [BTC]: { lastMessageAgeSeconds: 1.5 } });
});

Deno.test("unknown paths are 404 and other methods than GET are 405", async () => {
  const handle = handler(deps());
  const missing = await get(handle, "/nope");
  assert.equal(missing.status, 404);
  await missing.body?.cancel();
  const posted = await get(handle, "/metrics", "POST");
  assert.equal(posted.status, 405);
  assert.equal(posted.headers.get("allow"), "GET");
  await posted.body?.cancel();
});

Deno.test("serveOps names METRICS_ADDR when the port is already taken", async () => {
  const stop = new AbortController();
  const first = serveOps({ hostname: "127.0.0.1", port: 0 }, handler(deps()), stop.signal);
  try {
    assert.throws(
      () => serveOps(first.addr, handler(deps()), stop.signal),
      (error: Error) =>
        error.message.includes(`METRICS_ADDR 127.0.0.1:${first.addr.port} is already in use`) &&
        error.message.includes("METRICS_ADDR=off"),
    );
    const response = await fetch(`http://127.0.0.1:${first.addr.port}/healthz`);
    assert.equal(response.status, 200);
    await response.body?.cancel();
  } finally {
    stop.abort();
    await first.finished;
  }
});

Deno.test("a request whose Host makes no URL gets 400, and the endpoint serves on", async () => {
  const stop = new AbortController();
  const server = serveOps({ hostname: "127.0.0.1", port: 0 }, handler(deps()), stop.signal);
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
    await conn.write(
      new TextEncoder().encode("GET /healthz HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n"),
    );
    const reply = new TextDecoder().decode(
      (await new Response(conn.readable).arrayBuffer()) as ArrayBuffer,
    );
    assert.match(reply, /^HTTP\/1\.1 400/, reply);
    const response = await fetch(`http://127.0.0.1:${server.addr.port}/healthz`);
    assert.equal(response.status, 200);
    await response.body?.cancel();
  } finally {
    stop.abort();
    await server.finished;
  }
});
