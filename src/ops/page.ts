/**
 * The status page served at `/` on METRICS_ADDR: one self-contained HTML
 * document (inline CSS and SVG, no script, no external resource), so it
 * works on an offline Mac reached through an SSH tunnel. It reloads itself
 * every 10 s. Pure: everything shown is passed in.
 */

import type { Health, HealthLevel } from "./health.ts";
import type { StatusReport } from "./status_report.ts";
import type { RatePoint } from "./activity.ts";

export interface StatusPageData {
  readonly health: Health;
  readonly status: StatusReport;
  /** Messages/s over the last hour, oldest first. */
  readonly series: readonly RatePoint[];
  /** Wall-clock ms the page is rendered at. */
  readonly now: number;
}

/** Seconds without a message after which a stream's age is shown as a problem. */
const STALE_STREAM_SECONDS = 30;

export function renderStatusPage(data: StatusPageData): string {
  const { health, status } = data;
  const title = `l2-uploader ${health.status}` +
    (status.instanceId ? ` · ${status.instanceId}` : "");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="10">
<link rel="icon" href="data:,">
<title>${esc(title)}</title>
<style>${CSS}</style>
</head>
<body>
${pageHeader(status, data.now)}
${healthSection(health)}
<section class="cards">
  ${cards(status).join("\n  ")}
</section>
<section>
  <h2>Messages/s, last hour</h2>
  ${chart(data.series, data.now)}
</section>
<section>
  <h2>Streams</h2>
  ${streamsTable(status)}
</section>
<section>
  <h2>Recent gaps and disconnects</h2>
  ${eventsTable(status)}
</section>
<footer class="muted">Machine-readable: <a href="/metrics">/metrics</a> · <a href="/healthz">/healthz</a> · <a href="/status">/status</a></footer>
</body>
</html>
`;
}

/** Version, instance, uptime and the time of the page. */
function pageHeader(status: StatusReport, now: number): string {
  return `<header>
  <h1>l2-uploader <span class="muted">${esc(status.version)}${
    status.instanceId ? ` · ${esc(status.instanceId)}` : ""
  }</span></h1>
  <p class="muted">up ${duration(status.uptimeSeconds)} since ${esc(utc(status.startedAt))} · ${
    esc(utc(new Date(now).toISOString()))
  }</p>
</header>`;
}

/** The health level and, when not ok, each check that is not, with its reason. */
function healthSection(health: Health): string {
  const problems = health.checks.filter((c) => c.status !== "ok");
  const reasons = problems.length === 0
    ? `<p class="reason">All ${health.checks.length} checks pass.</p>`
    : `<ul class="reason">${
      problems.map((c) => `<li class="${c.status}">${esc(c.name)}: ${esc(c.message)}</li>`)
        .join("")
    }</ul>`;
  return `<section class="health ${health.status}" id="health">
  <h2>Health: <strong>${health.status}</strong></h2>
  ${reasons}
</section>`;
}

/** The row of figures: rate, sockets, last upload, spool, queue, memory, the last hour. */
function cards(status: StatusReport): string[] {
  const { rates, lastUpload, spool } = status;
  return [
    card("Messages/s", number(rates.messagesPerSecond), "last hour"),
    card("WebSockets", String(status.connections.webSockets), "open"),
    card(
      "Last upload",
      lastUpload.ageSeconds === null ? "none yet" : `${duration(lastUpload.ageSeconds)} ago`,
      `${lastUpload.backlog} batches waiting`,
    ),
    card(
      "Spool",
      bytes(spool.bytes),
      `${spool.batches} batches` +
        (spool.maxBytes === null ? " · no spool (local sink)" : ` of ${bytes(spool.maxBytes)}`),
      spool.full ? "critical" : "",
    ),
    card(
      "Queue",
      bytes(status.queue.uploadQueueBytes),
      `sealed, in memory · open batches ${bytes(status.queue.openBatchBytes)}`,
    ),
    card("Memory", bytes(status.memory.residentBytes), "resident"),
    card(
      "Last hour",
      `${rates.reconnectsLastHour} reconnects`,
      `${rates.uploadFailuresLastHour} of ${rates.uploadAttemptsLastHour} uploads failed · ` +
        `${rates.restartsLastHour} restarts`,
    ),
  ];
}

function card(label: string, value: string, note: string, level = ""): string {
  return `<div class="card ${level}"><div class="label">${esc(label)}</div>` +
    `<div class="value">${esc(value)}</div><div class="note">${esc(note)}</div></div>`;
}

function streamsTable(status: StatusReport): string {
  const rows = Object.entries(status.streams).sort(([a], [b]) => a.localeCompare(b));
  if (rows.length === 0) return `<p class="muted">No stream has delivered a message yet.</p>`;
  return `<table><thead><tr><th>Stream</th><th class="num">Messages/s</th>` +
    `<th class="num">Last message</th></tr></thead><tbody>${
      rows.map(([name, s]) => {
        const stale = s.lastMessageAgeSeconds > STALE_STREAM_SECONDS;
        return `<tr${stale ? ' class="warning"' : ""}><td>${esc(name)}</td><td class="num">${
          s.messagesPerSecond === undefined ? "…" : number(s.messagesPerSecond)
        }</td><td class="num">${esc(ageText(s.lastMessageAgeSeconds))}</td></tr>`;
      }).join("")
    }</tbody></table>`;
}

function eventsTable(status: StatusReport): string {
  if (status.recentEvents.length === 0) {
    return `<p class="muted">None since the start.</p>`;
  }
  return `<table><thead><tr><th>Time (UTC)</th><th>What</th><th>Where</th><th>Details</th>` +
    `</tr></thead><tbody>${
      status.recentEvents.map((e) =>
        `<tr${e.kind === "gap" ? ' class="warning"' : ""}><td>${esc(utc(e.at).slice(0, -4))}</td>` +
        `<td>${esc(e.kind)}</td><td>${esc(e.subject)}</td><td>${esc(e.detail)}</td></tr>`
      ).join("")
    }</tbody></table>`;
}

const WIDTH = 720;
const HEIGHT = 160;
const PAD = { left: 56, right: 8, top: 8, bottom: 22 };

/** An inline SVG line of messages/s over the hour ending at `now`. */
function chart(series: readonly RatePoint[], now: number): string {
  if (series.length < 2) {
    return `<p class="muted">The chart starts after the first minute (one point every 10 s).</p>`;
  }
  const from = now - 3_600_000;
  const max = niceCeiling(Math.max(...series.map((p) => p.perSecond), 1));
  const w = WIDTH - PAD.left - PAD.right;
  const h = HEIGHT - PAD.top - PAD.bottom;
  const x = (at: number) => PAD.left + Math.max(0, (at - from) / 3_600_000) * w;
  const y = (v: number) => PAD.top + h - (v / max) * h;
  const points = series.map((p) => `${x(p.at).toFixed(1)},${y(p.perSecond).toFixed(1)}`).join(" ");
  const grid = [0, 0.5, 1].map((f) =>
    `<line x1="${PAD.left}" x2="${WIDTH - PAD.right}" y1="${y(max * f)}" y2="${
      y(max * f)
    }" class="grid"/>` +
    `<text x="${PAD.left - 6}" y="${y(max * f) + 4}" text-anchor="end">${number(max * f)}</text>`
  ).join("");
  const ticks = [60, 45, 30, 15, 0].map((minutes) =>
    `<text x="${x(now - minutes * 60_000)}" y="${HEIGHT - 6}" text-anchor="${
      minutes === 60 ? "start" : minutes === 0 ? "end" : "middle"
    }">${minutes === 0 ? "now" : `−${minutes} min`}</text>`
  ).join("");
  const last = series[series.length - 1];
  return `<svg class="chart" viewBox="0 0 ${WIDTH} ${HEIGHT}" role="img" ` +
    `aria-label="messages per second over the last hour, latest ${number(last.perSecond)}">` +
    `${grid}${ticks}<polyline points="${points}" class="line"/></svg>`;
}

/** 1, 2 or 5 times a power of ten, at least `v`. */
function niceCeiling(v: number): number {
  const power = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * power >= v) return m * power;
  return 10 * power;
}

/** An ISO time as `2024-08-08 12:00:00 UTC`. */
function utc(iso: string): string {
  return iso.replace("T", " ").replace(/(\.\d+)?Z$/, " UTC");
}

function number(v: number): string {
  if (v >= 100) return Math.round(v).toLocaleString("en-US");
  return String(Math.round(v * 10) / 10);
}

function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

function duration(seconds: number): string {
  if (seconds < 60) return `${Math.floor(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.floor(seconds % 60)} s`;
  const hours = Math.floor(seconds / 3600);
  if (hours < 48) return `${hours} h ${Math.floor((seconds % 3600) / 60)} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

function ageText(seconds: number): string {
  return seconds < 60 ? `${seconds.toFixed(1)} s ago` : `${duration(seconds)} ago`;
}

const levelColour: Record<HealthLevel, string> = {
  ok: "#1a7f37",
  warning: "#9a6700",
  critical: "#cf222e",
};

/** Escapes text for HTML content and attribute values. */
export function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const CSS = `
:root { color-scheme: light; font: 14px/1.4 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
body { margin: 0 auto; max-width: 980px; padding: 16px 20px; color: #1f2328; background: #f6f8fa; }
h1 { font-size: 20px; margin: 0; } h2 { font-size: 15px; margin: 18px 0 8px; }
.muted { color: #656d76; font-weight: normal; }
header p { margin: 2px 0 10px; }
.health { border-radius: 8px; padding: 4px 14px; color: #fff; }
.health h2 { margin: 8px 0 4px; } .health .reason { margin: 0 0 8px; }
.health.ok { background: ${levelColour.ok}; } .health.warning { background: ${levelColour.warning}; }
.health.critical { background: ${levelColour.critical}; }
.health li.ok { display: none; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 10px; margin-top: 12px; }
.card { background: #fff; border: 1px solid #d0d7de; border-radius: 8px; padding: 8px 12px; }
.card.critical { border-color: ${levelColour.critical}; }
.card .label { color: #656d76; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 20px; font-weight: 600; margin: 2px 0; }
.card .note { color: #656d76; font-size: 12px; }
.chart { width: 100%; height: auto; background: #fff; border: 1px solid #d0d7de; border-radius: 8px; }
.chart text { font-size: 11px; fill: #656d76; }
.chart .grid { stroke: #eaeef2; } .chart .line { fill: none; stroke: #0969da; stroke-width: 2; }
table { width: 100%; border-collapse: collapse; background: #fff; border: 1px solid #d0d7de; }
th, td { text-align: left; padding: 4px 10px; border-bottom: 1px solid #eaeef2; font-variant-numeric: tabular-nums; }
th { background: #f6f8fa; font-weight: 600; } .num { text-align: right; }
tr.warning td { background: #fff8c5; }
footer { margin: 18px 0 6px; } a { color: #0969da; }
`;
