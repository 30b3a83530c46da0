/**
 * `l2-uploader status`: asks the running recorder's ops endpoint
 * (METRICS_ADDR) for /healthz and /status and prints a short summary.
 * Exit code: 0 ok, 1 warning, 2 critical, 3 not running (nothing answers,
 * something else answers, or METRICS_ADDR=off so there is nothing to ask).
 */

import type { Health, HealthLevel } from "../ops/health.ts";
import { formatAddr, type OpsAddress, type StatusReport } from "../ops/http.ts";

export const STATUS_EXIT: Readonly<Record<HealthLevel | "notRunning", number>> = {
  ok: 0,
  warning: 1,
  critical: 2,
  notRunning: 3,
};

const LEVELS: readonly HealthLevel[] = ["ok", "warning", "critical"];

export interface StatusCommandOptions {
  readonly print: (text: string) => void;
  readonly fetch?: typeof fetch;
  /** Time allowed per request, ms (default 3 s). */
  readonly timeoutMs?: number;
}

export async function status(
  addr: OpsAddress | undefined,
  options: StatusCommandOptions,
): Promise<number> {
  const { print } = options;
  if (!addr) {
    print("l2-uploader status: METRICS_ADDR is off, so there is no endpoint to ask\n");
    return STATUS_EXIT.notRunning;
  }
  const target = formatAddr(connectable(addr));
  let health: Health;
  let report: StatusReport;
  try {
    health = await getJson(`http://${target}/healthz`, options) as Health;
    report = await getJson(`http://${target}/status`, options) as StatusReport;
  } catch (error) {
    print(`l2-uploader is not running on ${target}: ${(error as Error).message}\n`);
    return STATUS_EXIT.notRunning;
  }
  if (!LEVELS.includes(health?.status) || typeof report?.rates !== "object") {
    print(`l2-uploader is not running on ${target}: something else answers there\n`);
    return STATUS_EXIT.notRunning;
  }
  print(summary(target, health, report));
  return STATUS_EXIT[health.status];
}

/** A wildcard bind address is reached through loopback. */
function connectable(addr: OpsAddress): OpsAddress {
  if (addr.hostname === "0.0.0.0") return { ...addr, hostname: "127.0.0.1" };
  if (addr.hostname === "::") return { ...addr, hostname: "::1" };
  return addr;
}

async function getJson(url: string, options: StatusCommandOptions): Promise<unknown> {
  const timeoutMs = options.timeoutMs ?? 3000;
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    // /healthz answers 503 when critical: the body is what counts.
    const response = await (options.fetch ?? fetch)(url, { signal: abort.signal });
    const text = await response.text();
    try {
      return JSON.parse(text);
    } catch {
      throw new Error(`something else answers there (HTTP ${response.status}, not JSON)`);
    }
  } catch (error) {
    if (abort.signal.aborted) throw new Error(`no answer within ${timeoutMs} ms`);
    const cause = (error as Error).cause;
    const refused = cause instanceof Error && /refused/i.test(cause.message);
    throw refused ? new Error("connection refused") : error;
  } finally {
    clearTimeout(timer);
  }
}

/** The printed report: a headline, four lines of numbers, then every check that is not ok. */
export function summary(target: string, health: Health, report: StatusReport): string {
  const r = report.rates;
  const last = report.lastUpload;
  const lines = [
    `l2-uploader ${report.version}${report.instanceId ? ` (${report.instanceId})` : ""} ` +
    `on ${target}: ${health.status.toUpperCase()}`,
    `  up ${duration(report.uptimeSeconds)} since ${report.startedAt}; ` +
    `${report.connections.webSockets} WebSocket connection(s); ` +
    `${r.messagesPerSecond} messages/s, ${bytes(r.bytesPerSecond)}/s`,
    `  last upload ${
      last.ageSeconds === null ? "none yet" : `${duration(last.ageSeconds)} ago`
    }; ` +
    `${last.backlog} batch(es) waiting; spool ${report.spool.batches} batch(es), ` +
    `${bytes(report.spool.bytes)}${report.spool.full ? " (FULL)" : ""}`,
    `  last hour: ${r.reconnectsLastHour} reconnects, ${r.uploadFailuresLastHour} of ` +
    `${r.uploadAttemptsLastHour} upload attempts failed, ${r.batchesStoredLastHour} batches ` +
    `stored, ${r.restartsLastHour} restarts, ${r.droppedMessagesLastHour} messages dropped`,
    `  memory ${bytes(report.memory.residentBytes)} resident`,
  ];
  if (report.exchange) lines.push(`  ${exchangeLine(report.exchange)}`);
  if (report.recording) lines.push(`  ${recordingLine(report.recording)}`);
  const problems = health.checks.filter((c) => c.status !== "ok");
  if (problems.length === 0) lines.push(`  all ${health.checks.length} checks ok`);
  for (const c of problems) lines.push(`  ${c.status.padEnd(8)} ${c.name}: ${c.message}`);
  return lines.join("\n") + "\n";
}

function recordingLine(recording: NonNullable<StatusReport["recording"]>): string {
  const waiting = recording.awaitingFirstSnapshot;
  const shown = waiting.slice(0, 5).join(", ") + (waiting.length > 5 ? ", …" : "");
  return `recording ${recording.symbols} symbol(s), ${recording.streams} stream(s)` +
    (waiting.length === 0 ? "" : `; ${waiting.length} wait for their first snapshot (${shown})`);
}

function exchangeLine(timing: NonNullable<StatusReport["exchange"]>): string {
  const offset = timing.clockOffsetSeconds;
  const clock = offset === null
    ? "clock offset not measured yet"
    : `clock ${offset >= 0 ? "+" : ""}${offset} s vs Binance${
      Math.abs(offset) > 1 ? " (OFF BY MORE THAN 1 s)" : ""
    }`;
  const lag = Object.entries(timing.lag).map(([market, l]) =>
    `${market} lag ${l.meanSeconds} s (mean of ${l.samples})`
  );
  return [clock, ...lag].join("; ");
}

function duration(seconds: number): string {
  if (seconds < 60) return `${seconds} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  return h < 48 ? `${h} h ${m % 60} min` : `${Math.floor(h / 24)} d ${h % 24} h`;
}

function bytes(n: number): string {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  for (; n >= 1024 && i < units.length - 1; i++) n /= 1024;
  return `${i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}
