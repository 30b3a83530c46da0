/**
 * The local ops endpoint on METRICS_ADDR: `/metrics` (Prometheus text),
 * `/healthz` (docs/DESIGN.md's thresholds; 503 when critical), `/status`
 * (rates, spool, last upload, connections, uptime, version) and `/`, the
 * same as a self-contained HTML page (page.ts). GET only.
 *
 * `handler(deps)` is a plain `(Request) => Promise<Response>` so tests call
 * it without a port; `serveOps` only binds it. `observe` is the thin shell
 * around the pure health code: it reads the named events' state
 * (events.ts), feeds the tracker and evaluates; the health loop (alerts.ts)
 * calls it too.
 */

import { getLogger } from "@logtape/logtape";
import {
  evaluateHealth,
  type Health,
  type HealthTracker,
  type MetricsSample,
  spoolIsFull,
} from "./health.ts";
import type { Metrics } from "./metrics.ts";
import type { Activity } from "./activity.ts";
import { EMPTY_TELEMETRY_STATE, type TelemetryState } from "./events.ts";
import { renderStatusPage } from "./page.ts";
import type { ExchangeTiming, RecordingState, StatusReport } from "./status_report.ts";

export type { ExchangeTiming, RecordingState, StatusReport } from "./status_report.ts";

const log = getLogger(["l2", "http"]);

export interface OpsDeps {
  readonly metrics: Metrics;
  /**
   * The named events' state (totals, last store, spool, connections): a
   * Telemetry (events.ts), or any object that holds such a state. Without
   * it every total is zero.
   */
  readonly telemetry?: { readonly state: TelemetryState };
  readonly tracker: HealthTracker;
  readonly version: string;
  readonly instanceId?: string;
  /** Sealed batches not yet stored: the uploader's pending ones plus the spool's. */
  readonly backlog?: () => number;
  /** SPOOL_MAX_BYTES when there is a spool (S3 sink); without one the spool is never full. */
  readonly spoolMaxBytes?: number;
  readonly restartsLastHour?: (now: number) => number;
  /** Seconds since each stream's last data message (Recorder.messageAges). */
  readonly messageAges?: () => ReadonlyMap<string, number>;
  /** Memory and text held by open batches (Batcher.openBytes, openTextBytes). */
  readonly openBatches?: () => { readonly bytes: number; readonly textBytes: number };
  /** The recorded set: symbols, streams, and diff streams still waiting for their first snapshot. */
  readonly recording?: () => RecordingState;
  /** Resident set size; prom-client's default collector reports 0 under Deno. */
  readonly residentBytes?: () => number;
  /** Wall-clock ms. */
  readonly now?: () => number;
  /** Chart history, per-stream rates and recent events for `/` and /status. */
  readonly activity?: Activity;
}

export interface OpsSnapshot {
  readonly health: Health;
  readonly status: StatusReport;
}

/** Reads the telemetry state at `now`, feeds the tracker, evaluates health and builds the status. */
export function observe(deps: OpsDeps, now: number): Promise<OpsSnapshot> {
  const { tracker } = deps;
  const state = deps.telemetry?.state ?? EMPTY_TELEMETRY_STATE;
  refreshGauges(deps, now);
  const received = deps.metrics.received();
  const sample: MetricsSample = {
    messages: received.messages,
    bytes: received.bytes,
    reconnects: state.reconnects,
    uploadAttempts: state.uploadAttempts,
    uploadFailures: state.uploadFailures,
    batchesStored: state.batchesStored,
    droppedMessages: state.droppedMessages,
    backlog: deps.backlog?.() ?? 0,
    lastStoredAt: state.lastStoredAt,
    streamsRecorded: deps.recording?.().streams,
  };
  tracker.observe(sample, now);
  deps.activity?.sample(now, received.byStream);
  const facts = {
    restartsLastHour: deps.restartsLastHour?.(now) ?? 0,
    residentBytes: residentBytes(deps),
    spoolFull: spoolIsFull(state.spoolBytes, deps.spoolMaxBytes),
  };
  const health = evaluateHealth(tracker.inputs(now, facts), now);
  return Promise.resolve({
    health,
    status: statusReport(deps, { now, health, state, sample, facts }),
  });
}

/** The /status answer from the state `observe` read. */
function statusReport(deps: OpsDeps, read: {
  now: number;
  health: Health;
  state: TelemetryState;
  sample: MetricsSample;
  facts: { restartsLastHour: number; residentBytes: number; spoolFull: boolean };
}): StatusReport {
  const { tracker } = deps;
  const { now, state, sample, facts } = read;
  const lastOk = tracker.lastSuccessAt;
  return {
    version: deps.version,
    instanceId: deps.instanceId ?? null,
    startedAt: new Date(tracker.startedAt).toISOString(),
    uptimeSeconds: Math.max(0, Math.floor((now - tracker.startedAt) / 1000)),
    health: read.health.status,
    rates: { ...tracker.rates(now), restartsLastHour: facts.restartsLastHour },
    totals: {
      messages: sample.messages,
      bytes: sample.bytes,
      batchesStored: state.batchesStored,
      uploadFailures: state.uploadFailures,
      droppedMessages: state.droppedMessages,
      sequenceGaps: state.sequenceGaps,
    },
    spool: {
      bytes: state.spoolBytes,
      batches: state.spoolBatches,
      maxBytes: deps.spoolMaxBytes ?? null,
      full: facts.spoolFull,
    },
    lastUpload: {
      at: lastOk === undefined ? null : new Date(lastOk).toISOString(),
      ageSeconds: lastOk === undefined ? null : Math.max(0, Math.floor((now - lastOk) / 1000)),
      backlog: sample.backlog,
    },
    queue: {
      uploadQueueBytes: state.uploadQueueBytes,
      openBatchBytes: deps.openBatches?.().bytes ?? 0,
    },
    connections: { webSockets: state.webSockets },
    memory: { residentBytes: facts.residentBytes },
    streams: streamsReport(deps),
    exchange: exchangeTiming(state),
    recentEvents: (deps.activity?.events() ?? []).map((e) => ({
      ...e,
      at: new Date(e.at).toISOString(),
    })),
    ...(deps.recording ? { recording: deps.recording() } : {}),
  };
}

/** Each stream's last message age and recent rate. */
function streamsReport(deps: OpsDeps): StatusReport["streams"] {
  const rates = deps.activity?.streamRates() ?? new Map<string, number>();
  return Object.fromEntries(
    [...deps.messageAges?.() ?? []].map(([stream, age]) => {
      const rate = rates.get(stream);
      return [stream, {
        lastMessageAgeSeconds: Math.round(age * 10) / 10,
        ...(rate === undefined ? {} : { messagesPerSecond: Math.round(rate * 100) / 100 }),
      }];
    }),
  );
}

function residentBytes(deps: OpsDeps): number {
  return (deps.residentBytes ?? (() => Deno.memoryUsage().rss))();
}

/** Sets the gauges that are only known when asked: memory, message ages, backlog, restarts. */
function refreshGauges(deps: OpsDeps, now: number): void {
  deps.metrics.uploadBacklog.set(deps.backlog?.() ?? 0);
  deps.metrics.restartsLastHour.set(deps.restartsLastHour?.(now) ?? 0);
  deps.metrics.residentMemory.set(residentBytes(deps));
  const open = deps.openBatches?.();
  if (open) {
    deps.metrics.openBatchBytes.set(open.bytes);
    deps.metrics.openBatchTextBytes.set(open.textBytes);
  }
  deps.metrics.setMessageAges(deps.messageAges?.() ?? []);
}

/** The clock offset and, per market, the sampled lags' count and mean. */
function exchangeTiming(state: TelemetryState): ExchangeTiming {
  const offset = state.clockOffsetSeconds;
  return {
    clockOffsetSeconds: offset === undefined ? null : Math.round(offset * 1000) / 1000,
    lag: Object.fromEntries(
      [...state.exchangeLag].filter(([, e]) => e.count > 0).map(([market, e]) => [
        market,
        { samples: e.count, meanSeconds: Math.round((e.sum / e.count) * 1000) / 1000 },
      ]),
    ),
  };
}

export function handler(deps: OpsDeps): (req: Request) => Promise<Response> {
  const now = deps.now ?? Date.now;
  const routes: Record<string, () => Promise<Response>> = {
    "/metrics": async () => {
      refreshGauges(deps, now());
      const body = await deps.metrics.registry.metrics();
      return new Response(body, { headers: headers(deps.metrics.registry.contentType) });
    },
    "/healthz": async () => {
      const { health } = await observe(deps, now());
      return json(health, health.status === "critical" ? 503 : 200);
    },
    "/status": async () => json((await observe(deps, now())).status, 200),
    "/": async () => {
      const at = now();
      const snapshot = await observe(deps, at);
      const html = renderStatusPage({
        ...snapshot,
        now: at,
        series: deps.activity?.series() ?? [],
      });
      return new Response(html, { headers: headers("text/html; charset=utf-8") });
    },
  };
  return async (req) => {
    // A request Deno cannot make a URL of (a Host header with a space) is the client's error.
    const path = URL.parse(req.url)?.pathname;
    if (path === undefined) {
      return new Response("bad request\n", { status: 400, headers: headers() });
    }
    const route = Object.hasOwn(routes, path) ? routes[path] : undefined;
    if (!route) return new Response("not found\n", { status: 404, headers: headers() });
    if (req.method !== "GET") {
      return new Response("method not allowed\n", {
        status: 405,
        headers: { ...headers(), allow: "GET" },
      });
    }
    try {
      return await route();
    } catch (error) {
      log.error("Ops endpoint {path} failed: {error}", { path, error });
      return new Response("internal error\n", { status: 500, headers: headers() });
    }
  };
}

function headers(contentType = "text/plain; charset=utf-8"): Record<string, string> {
  return { "content-type": contentType, "cache-control": "no-store" };
}

function json(value: unknown, status: number): Response {
  return new Response(JSON.stringify(value, null, 2) + "\n", {
    status,
    headers: headers("application/json; charset=utf-8"),
  });
}

export interface OpsAddress {
  readonly hostname: string;
  readonly port: number;
}

export interface OpsServer extends AsyncDisposable {
  /** The bound address (the real port when 0 was asked for). */
  readonly addr: OpsAddress;
  /** Resolves when the server has stopped (after `signal` aborted). */
  readonly finished: Promise<void>;
}

/**
 * Binds `handle` to `addr` until `signal` aborts. Throws an Error naming
 * METRICS_ADDR when the address is taken or cannot be bound.
 */
export function serveOps(
  addr: OpsAddress,
  handle: (req: Request) => Promise<Response>,
  signal: AbortSignal,
): OpsServer {
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname: addr.hostname,
      port: addr.port,
      signal,
      onListen: () => {},
      // Through the logger (one line, redacted), not Deno's default stack on stderr.
      onError: (error) => {
        log.error("Ops endpoint failed: {error}", { error });
        return new Response("internal error\n", { status: 500 });
      },
    }, handle);
  } catch (error) {
    const shown = formatAddr(addr);
    if (error instanceof Deno.errors.AddrInUse) {
      throw new Error(
        `METRICS_ADDR ${shown} is already in use (another l2-uploader?): ` +
          "stop it, choose another port, or set METRICS_ADDR=off",
      );
    }
    throw new Error(`METRICS_ADDR ${shown} cannot be bound: ${(error as Error).message}`);
  }
  const bound = { hostname: server.addr.hostname, port: server.addr.port };
  log.info("Serving the status page, /metrics, /healthz and /status on http://{addr}/", {
    addr: formatAddr(bound),
  });
  return {
    addr: bound,
    finished: server.finished,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

/** `host:port`, with brackets around an IPv6 host. */
export function formatAddr(addr: OpsAddress): string {
  return addr.hostname.includes(":")
    ? `[${addr.hostname}]:${addr.port}`
    : `${addr.hostname}:${addr.port}`;
}
