/**
 * The local ops endpoint on METRICS_ADDR: `/metrics` (Prometheus text),
 * `/healthz` (docs/DESIGN.md's thresholds; 503 when critical), `/status`
 * (rates, spool, last upload, connections, uptime, version) and `/`, the
 * same as a self-contained HTML page (page.ts). GET only.
 *
 * `handler(deps)` is a plain `(Request) => Promise<Response>` so tests call
 * it without a port; `serveOps` only binds it. `observe` is the thin shell
 * around the pure health code: it reads the metrics, feeds the tracker and
 * evaluates; the health loop (alerts.ts) calls it too.
 */

import { getLogger } from "@logtape/logtape";
import {
  evaluateHealth,
  type Health,
  type HealthLevel,
  type HealthTracker,
  type HourRates,
  type MetricsSample,
  spoolIsFull,
} from "./health.ts";
import type { Metrics } from "./metrics.ts";
import type { Activity, ActivityEvent } from "./activity.ts";
import { renderStatusPage } from "./page.ts";

const log = getLogger(["l2", "http"]);

export interface OpsDeps {
  readonly metrics: Metrics;
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
  /** Local clock minus Binance's, seconds; undefined until measured. */
  readonly clockOffset?: () => number | undefined;
  /** The recorded set: symbols, streams, and diff streams still waiting for their first snapshot. */
  readonly recording?: () => RecordingState;
  /** Resident set size; prom-client's default collector reports 0 under Deno. */
  readonly residentBytes?: () => number;
  /** Wall-clock ms. */
  readonly now?: () => number;
  /** Chart history, per-stream rates and recent events for `/` and /status. */
  readonly activity?: Activity;
}

export interface StatusReport {
  readonly version: string;
  readonly instanceId: string | null;
  readonly startedAt: string;
  readonly uptimeSeconds: number;
  readonly health: HealthLevel;
  readonly rates: HourRates & { readonly restartsLastHour: number };
  readonly totals: {
    readonly messages: number;
    readonly bytes: number;
    readonly batchesStored: number;
    readonly uploadFailures: number;
    readonly droppedMessages: number;
    readonly sequenceGaps: number;
  };
  readonly spool: {
    readonly bytes: number;
    readonly batches: number;
    readonly maxBytes: number | null;
    readonly full: boolean;
  };
  readonly lastUpload: {
    readonly at: string | null;
    readonly ageSeconds: number | null;
    /** Sealed batches waiting to be stored (uploader and spool). */
    readonly backlog: number;
  };
  /** Sealed batches' bytes waiting in memory, and memory held by open batches. */
  readonly queue: { readonly uploadQueueBytes: number; readonly openBatchBytes: number };
  readonly connections: { readonly webSockets: number };
  readonly memory: { readonly residentBytes: number };
  readonly streams: Readonly<
    Record<string, {
      readonly lastMessageAgeSeconds: number;
      /** Messages/s over about the last minute; absent until two samples exist. */
      readonly messagesPerSecond?: number;
    }>
  >;
  /** The latest gaps and disconnects, newest first. */
  readonly recentEvents: readonly (Omit<ActivityEvent, "at"> & { readonly at: string })[];
  /** Clock and lag against Binance (l2_clock_offset_seconds, l2_exchange_lag_seconds). */
  readonly exchange?: ExchangeTiming;
  /** What is recorded now (it follows the exchange's listings). */
  readonly recording?: RecordingState;
}

export interface RecordingState {
  readonly symbols: number;
  readonly streams: number;
  /** DEPTH_LEVEL=full: diff streams whose first REST snapshot is not stored yet, in queue order. */
  readonly awaitingFirstSnapshot: readonly string[];
}

export interface ExchangeTiming {
  /** Local clock minus Binance's, seconds; null until measured. */
  readonly clockOffsetSeconds: number | null;
  /** Per market: sampled messages and their mean receive lag behind `E`, seconds. */
  readonly lag: Readonly<
    Record<string, { readonly samples: number; readonly meanSeconds: number }>
  >;
}

export interface OpsSnapshot {
  readonly health: Health;
  readonly status: StatusReport;
}

/** Reads the metrics at `now`, feeds the tracker, evaluates health and builds the status. */
// deno-lint-ignore arch/max-function-lines -- issue 14: not yet split
export async function observe(deps: OpsDeps, now: number): Promise<OpsSnapshot> {
  const { metrics, tracker } = deps;
  refreshGauges(deps, now);
  const sample: MetricsSample = {
    messages: await total(metrics.messagesReceived),
    bytes: await total(metrics.bytesReceived),
    reconnects: await total(metrics.reconnects),
    uploadAttempts: await total(metrics.uploadAttempts),
    uploadFailures: await total(metrics.uploadFailures),
    batchesStored: await total(metrics.batchesStored),
    droppedMessages: await total(metrics.droppedMessages),
    backlog: deps.backlog?.() ?? 0,
  };
  tracker.observe(sample, now);
  deps.activity?.sample(now, await perStream(metrics.messagesReceived));
  const streamRates = deps.activity?.streamRates() ?? new Map<string, number>();
  const spoolBytes = await total(metrics.spoolBytes);
  const residentBytes = await total(metrics.residentMemory);
  const restartsLastHour = deps.restartsLastHour?.(now) ?? 0;
  const spoolFull = spoolIsFull(spoolBytes, deps.spoolMaxBytes);
  const health = evaluateHealth(
    tracker.inputs(now, { restartsLastHour, residentBytes, spoolFull }),
    now,
  );
  const lastOk = tracker.lastSuccessAt;
  const status: StatusReport = {
    version: deps.version,
    instanceId: deps.instanceId ?? null,
    startedAt: new Date(tracker.startedAt).toISOString(),
    uptimeSeconds: Math.max(0, Math.floor((now - tracker.startedAt) / 1000)),
    health: health.status,
    rates: { ...tracker.rates(now), restartsLastHour },
    totals: {
      messages: sample.messages,
      bytes: sample.bytes,
      batchesStored: sample.batchesStored,
      uploadFailures: sample.uploadFailures,
      droppedMessages: sample.droppedMessages,
      sequenceGaps: await total(metrics.sequenceGaps),
    },
    spool: {
      bytes: spoolBytes,
      batches: await total(metrics.spoolBatches),
      maxBytes: deps.spoolMaxBytes ?? null,
      full: spoolFull,
    },
    lastUpload: {
      at: lastOk === undefined ? null : new Date(lastOk).toISOString(),
      ageSeconds: lastOk === undefined ? null : Math.max(0, Math.floor((now - lastOk) / 1000)),
      backlog: sample.backlog,
    },
    queue: {
      uploadQueueBytes: await total(metrics.uploadQueueBytes),
      openBatchBytes: await total(metrics.openBatchBytes),
    },
    connections: { webSockets: await total(metrics.wsConnections) },
    memory: { residentBytes },
    streams: Object.fromEntries(
      [...deps.messageAges?.() ?? []].map(([stream, age]) => {
        const rate = streamRates.get(stream);
        return [stream, {
          lastMessageAgeSeconds: Math.round(age * 10) / 10,
          ...(rate === undefined ? {} : { messagesPerSecond: Math.round(rate * 100) / 100 }),
        }];
      }),
    ),
    exchange: await exchangeTiming(deps),
    recentEvents: (deps.activity?.events() ?? []).map((e) => ({
      ...e,
      at: new Date(e.at).toISOString(),
    })),
    ...(deps.recording ? { recording: deps.recording() } : {}),
  };
  return { health, status };
}

/** Sets the gauges that are only known when asked: memory, message ages, backlog, restarts. */
function refreshGauges(deps: OpsDeps, now: number): void {
  deps.metrics.uploadBacklog.set(deps.backlog?.() ?? 0);
  deps.metrics.restartsLastHour.set(deps.restartsLastHour?.(now) ?? 0);
  deps.metrics.residentMemory.set((deps.residentBytes ?? (() => Deno.memoryUsage().rss))());
  const open = deps.openBatches?.();
  if (open) {
    deps.metrics.openBatchBytes.set(open.bytes);
    deps.metrics.openBatchTextBytes.set(open.textBytes);
  }
  for (const [stream, age] of deps.messageAges?.() ?? []) {
    deps.metrics.lastMessageAge.set({ stream }, age);
  }
}

/** The clock offset and, per market, the lag histogram's count and mean. */
async function exchangeTiming(deps: OpsDeps): Promise<ExchangeTiming> {
  const offset = deps.clockOffset?.();
  const sums = new Map<string, { sum: number; count: number }>();
  for (const v of (await deps.metrics.exchangeLag.get()).values) {
    const market = String(v.labels.market ?? "");
    const entry = sums.get(market) ?? { sum: 0, count: 0 };
    if (v.metricName === "l2_exchange_lag_seconds_sum") entry.sum = v.value;
    else if (v.metricName === "l2_exchange_lag_seconds_count") entry.count = v.value;
    else continue;
    sums.set(market, entry);
  }
  return {
    clockOffsetSeconds: offset === undefined ? null : Math.round(offset * 1000) / 1000,
    lag: Object.fromEntries(
      [...sums].filter(([, e]) => e.count > 0).map(([market, e]) => [
        market,
        { samples: e.count, meanSeconds: Math.round((e.sum / e.count) * 1000) / 1000 },
      ]),
    ),
  };
}

/** A counter's value per `stream` label. */
async function perStream(
  metric: { get(): Promise<{ values: { value: number; labels: Record<string, unknown> }[] }> },
): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const v of (await metric.get()).values) {
    const stream = String(v.labels.stream ?? "");
    counts.set(stream, (counts.get(stream) ?? 0) + v.value);
  }
  return counts;
}

/** A metric's value summed over its labels. */
async function total(metric: { get(): Promise<{ values: { value: number }[] }> }): Promise<number> {
  return (await metric.get()).values.reduce((sum, v) => sum + v.value, 0);
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
    const route = routes[new URL(req.url).pathname];
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
      log.error("Ops endpoint {path} failed: {error}", { path: new URL(req.url).pathname, error });
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
