/**
 * `l2-uploader status` (src/cli/status.ts) against a real ops endpoint
 * (`serveOps` on a random loopback port): exit 0/1/2 by health, 3 when
 * nothing (or something else) answers or METRICS_ADDR is off.
 */

import assert from "node:assert/strict";
import { status } from "../src/cli/status.ts";
import { EMPTY_TELEMETRY_STATE, type TelemetryState } from "../src/ops/events.ts";
import { HealthTracker } from "../src/ops/health.ts";
import { handler, type OpsServer, serveOps } from "../src/ops/http.ts";
import { Metrics } from "../src/ops/metrics.ts";
import { runCollector } from "./support/collector.ts";
import { tempDir } from "./support/temp.ts";

/** What the named events (src/ops/events.ts) would have left; tests set it directly. */
type State = { -readonly [K in keyof TelemetryState]: TelemetryState[K] };

interface Running extends AsyncDisposable {
  readonly metrics: Metrics;
  readonly state: State;
  readonly server: OpsServer;
}

function startInstance(
  recording?: () => { symbols: number; streams: number; awaitingFirstSnapshot: string[] },
): Running {
  const metrics = new Metrics();
  const state: State = { ...EMPTY_TELEMETRY_STATE };
  const stop = new AbortController();
  const server = serveOps(
    { hostname: "127.0.0.1", port: 0 },
    handler({
      metrics,
      telemetry: { state },
      tracker: new HealthTracker(Date.now() - 3_723_000),
      version: "1.2.3",
      instanceId: "box-7",
      residentBytes: () => 90 * 1024 ** 2,
      backlog: () => 0,
      recording,
    }),
    stop.signal,
  );
  return {
    metrics,
    state,
    server,
    async [Symbol.asyncDispose]() {
      stop.abort();
      await server.finished;
    },
  };
}

async function runStatus(addr: Parameters<typeof status>[0]): Promise<[number, string]> {
  let printed = "";
  const code = await status(addr, { print: (text) => printed += text });
  return [code, printed];
}

Deno.test("status exits 0 and prints a summary while the instance is healthy", async () => {
  await using instance = startInstance();
  instance.state.webSockets = 2;
  const [code, printed] = await runStatus(instance.server.addr);
  assert.equal(code, 0);
  const lines = printed.trimEnd().split("\n");
  assert.equal(lines[0], `l2-uploader 1.2.3 (box-7) on 127.0.0.1:${instance.server.addr.port}: OK`);
  assert.match(lines[1], /^ {2}up 1 h 2 min since .*; 2 WebSocket connection\(s\); /);
  assert.match(printed, /last upload none yet; 0 batch\(es\) waiting; spool 0 batch\(es\), 0 B/);
  assert.match(printed, /memory 90\.0 MB resident/);
  assert.match(printed, /all 7 checks ok/);
});

Deno.test("status names the diff streams still waiting for their first snapshot", async () => {
  const waiting = ["a", "b", "c", "d", "e", "f"].map((s) => `${s}usdt@depth@100ms`);
  await using instance = startInstance(() => ({
    symbols: 40,
    streams: 40,
    awaitingFirstSnapshot: waiting,
  }));
  const [code, printed] = await runStatus(instance.server.addr);
  assert.equal(code, 0);
  assert.match(
    printed,
    /\n {2}recording 40 symbol\(s\), 40 stream\(s\); 6 wait for their first snapshot \(ausdt@depth@100ms, busdt@depth@100ms, cusdt@depth@100ms, dusdt@depth@100ms, eusdt@depth@100ms, …\)\n/,
  );
  const body = await (await fetch(`http://127.0.0.1:${instance.server.addr.port}/status`)).json();
  assert.deepEqual(body.recording.awaitingFirstSnapshot, waiting);
});

Deno.test("status exits 1 on a warning and names the check", async () => {
  await using instance = startInstance();
  instance.state.reconnects = 6;
  const [code, printed] = await runStatus(instance.server.addr);
  assert.equal(code, 1);
  assert.match(printed, /: WARNING\n/);
  assert.match(printed, /warning +reconnects: 6 reconnects in the last hour \(more than 5\)/);
});

Deno.test("status exits 2 when the instance is critical", async () => {
  await using instance = startInstance();
  instance.state.droppedMessages = 50;
  const [code, printed] = await runStatus(instance.server.addr);
  assert.equal(code, 2);
  assert.match(printed, /: CRITICAL\n/);
  assert.match(printed, /critical +dropped: 50 messages dropped/);
});

Deno.test("status exits 3 once the instance has stopped", async () => {
  const instance = startInstance();
  const addr = instance.server.addr;
  await instance[Symbol.asyncDispose]();
  const [code, printed] = await runStatus(addr);
  assert.equal(code, 3);
  assert.equal(
    printed,
    `l2-uploader is not running on 127.0.0.1:${addr.port}: connection refused\n`,
  );
});

Deno.test("status exits 3 when METRICS_ADDR is off", async () => {
  const [code, printed] = await runStatus(undefined);
  assert.equal(code, 3);
  assert.match(printed, /METRICS_ADDR is off/);
});

Deno.test("status exits 3 when something else answers on METRICS_ADDR", async () => {
  const stop = new AbortController();
  const other = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: stop.signal, onListen: () => {} },
    () => new Response("<html>hello</html>"),
  );
  try {
    const [code, printed] = await runStatus({ hostname: "127.0.0.1", port: other.addr.port });
    assert.equal(code, 3);
    assert.match(printed, /something else answers there/);
  } finally {
    stop.abort();
    await other.finished;
  }
});

Deno.test("status with a bad option elsewhere still asks the instance at METRICS_ADDR (its exit is its health, not 2)", async () => {
  await using instance = startInstance();
  await using tmp = await tempDir();
  const result = await runCollector({
    DATA_DIR: tmp.path,
    METRICS_ADDR: `127.0.0.1:${instance.server.addr.port}`,
    GZIP_LEVEL: "11", // wrong: the running instance may use an earlier, valid configuration
  }, { args: ["status"] });
  assert.equal(result.code, 0, result.stdout + result.stderr);
  assert.match(result.stderr, /configuration error \(asking the running instance anyway\)/);
  assert.match(result.stderr, /GZIP_LEVEL="11"/);
  // A METRICS_ADDR that is wrong itself leaves nothing to ask: not running, as far as status can tell.
  const bad = await runCollector({ DATA_DIR: tmp.path, METRICS_ADDR: "nowhere" }, {
    args: ["status"],
  });
  assert.equal(bad.code, 3, bad.stdout + bad.stderr);
  assert.match(bad.stderr, /METRICS_ADDR: /);
});
