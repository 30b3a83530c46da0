/**
 * `verify --html FILE`: the audit report as one self-contained HTML page (no
 * script, no external resource) with a timeline per stream: what was
 * recorded, the holes (explained ones with the event that explains them),
 * and the sequence breaks and duplicates as marks. Hover a mark for its
 * detail (SVG <title>). Pure: the report in, the page out.
 */

import { esc } from "../ops/page.ts";
import { isoMicros, type Problem, type Report, type StreamReport } from "./audit.ts";

const WIDTH = 900;
const LABEL = 220;
const BAR = 18;
const ROW = 34;

const COLOURS = {
  recorded: "#2da44e",
  missing: "#d0d7de",
  hole: "#cf222e",
  explainedHole: "#d4a72c",
  mark: "#8250df",
};

export function renderAuditHtml(report: Report, location: string): string {
  const span = rangeOf(report);
  const byStream = new Map<string, Problem[]>();
  for (const p of report.problems) {
    if (!p.stream) continue;
    const id = `${p.market}/${p.stream}`;
    const list = byStream.get(id) ?? [];
    list.push(p);
    byStream.set(id, list);
  }
  const verdict = report.ok
    ? "No unexplained break or hole, no duplicate, unreadable object, malformed line or bad key."
    : "Problems found: see the timeline and the list below.";
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>l2-uploader verify: ${report.ok ? "ok" : "problems"} · ${esc(location)}</title>
<style>${CSS}</style>
</head>
<body>
<h1>Archive audit <span class="muted">${esc(location)}</span></h1>
<p class="muted">${
    span ? `${esc(isoMicros(span.from))} to ${esc(isoMicros(span.to))}` : "no line in the range"
  } · ${report.objects.toLocaleString("en-US")} objects · ${
    report.lines.toLocaleString("en-US")
  } lines</p>
<p class="verdict ${report.ok ? "ok" : "bad"}">${verdict}</p>
<h2>Coverage timeline</h2>
<p class="legend">${legend("recorded", COLOURS.recorded)}${
    legend("not recorded", COLOURS.missing)
  }${legend("hole", COLOURS.hole)}${legend("explained hole", COLOURS.explainedHole)}${
    legend("break or duplicate", COLOURS.mark)
  }</p>
${
    span && report.streams.length > 0
      ? timeline(report.streams, byStream, span)
      : '<p class="muted">Nothing to draw.</p>'
  }
<h2>Streams</h2>
${streamsTable(report.streams)}
<h2>Problems</h2>
${problemsTable(report)}
</body>
</html>
`;
}

interface Span {
  readonly from: number;
  readonly to: number;
}

/** The asked range, or the span of every stream's lines. */
function rangeOf(report: Report): Span | undefined {
  const firsts = report.streams.map((s) => s.firstRecvTs).filter((t) => t !== undefined);
  const lasts = report.streams.map((s) => s.lastRecvTs).filter((t) => t !== undefined);
  const from = report.range.fromRecvTs ?? (firsts.length ? Math.min(...firsts) : undefined);
  const to = report.range.toRecvTs ?? (lasts.length ? Math.max(...lasts) : undefined);
  if (from === undefined || to === undefined || to <= from) return undefined;
  return { from, to };
}

function timeline(
  streams: readonly StreamReport[],
  problems: ReadonlyMap<string, Problem[]>,
  span: Span,
): string {
  const w = WIDTH - LABEL - 10;
  const x = (ts: number) =>
    LABEL + Math.min(1, Math.max(0, (ts - span.from) / (span.to - span.from))) * w;
  const height = streams.length * ROW + 30;
  const rows = streams.map((s, i) => {
    const y = 8 + i * ROW;
    const parts = [
      `<text x="${LABEL - 8}" y="${y + BAR - 4}" text-anchor="end">${esc(s.stream)}</text>`,
      rect(LABEL, y, w, COLOURS.missing, "not recorded"),
    ];
    if (s.firstRecvTs !== undefined && s.lastRecvTs !== undefined) {
      parts.push(rect(
        x(s.firstRecvTs),
        y,
        Math.max(1, x(s.lastRecvTs) - x(s.firstRecvTs)),
        COLOURS.recorded,
        `recorded ${isoMicros(s.firstRecvTs)} to ${isoMicros(s.lastRecvTs)}: ` +
          `${s.messages.toLocaleString("en-US")} messages, ${s.coveragePercent} % covered`,
      ));
    }
    for (const p of problems.get(`${s.market}/${s.stream}`) ?? []) {
      if (p.recvTs === undefined) continue;
      if (p.kind === "hole" && p.untilRecvTs !== undefined) {
        const label = p.explained ? `explained hole (${p.cause ?? "event line"})` : "hole";
        parts.push(rect(
          x(p.recvTs),
          y,
          Math.max(2, x(p.untilRecvTs) - x(p.recvTs)),
          p.explained ? COLOURS.explainedHole : COLOURS.hole,
          `${label}: ${p.detail}`,
        ));
      } else if (p.kind === "break" || p.kind === "duplicate") {
        const at = x(p.recvTs);
        parts.push(
          `<line x1="${at.toFixed(1)}" x2="${at.toFixed(1)}" y1="${y - 3}" y2="${y + BAR + 3}" ` +
            `stroke="${COLOURS.mark}" stroke-width="2"><title>${
              esc(`${p.explained ? "explained " : ""}${p.kind} at ${p.time}: ${p.detail}`)
            }</title></line>`,
        );
      }
    }
    return parts.join("");
  });
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const ts = span.from + f * (span.to - span.from);
    const anchor = f === 0 ? "start" : f === 1 ? "end" : "middle";
    return `<text x="${(LABEL + f * w).toFixed(1)}" y="${height - 6}" text-anchor="${anchor}">${
      esc(isoMicros(Math.round(ts)).slice(0, 19).replace("T", " "))
    }</text>`;
  });
  return `<svg class="timeline" viewBox="0 0 ${WIDTH} ${height}" role="img" ` +
    `aria-label="coverage per stream">${rows.join("")}${ticks.join("")}</svg>`;
}

function rect(x: number, y: number, w: number, fill: string, title: string): string {
  return `<rect x="${x.toFixed(1)}" y="${y}" width="${w.toFixed(1)}" height="${BAR}" ` +
    `fill="${fill}"><title>${esc(title)}</title></rect>`;
}

function legend(label: string, colour: string): string {
  return `<span><i style="background:${colour}"></i>${esc(label)}</span>`;
}

function streamsTable(streams: readonly StreamReport[]): string {
  if (streams.length === 0) return '<p class="muted">No stream.</p>';
  const head = [
    "Stream",
    "Objects",
    "Messages",
    "Snapshots",
    "Dups",
    "Breaks",
    "Holes",
    "Unreadable",
    "Malformed",
    "Meta",
    "Coverage",
  ];
  return `<table><thead><tr>${head.map((h) => `<th>${h}</th>`).join("")}</tr></thead><tbody>${
    streams.map((s) => {
      const bad = s.duplicates + s.unexplainedBreaks + s.unexplainedHoles + s.unreadableObjects +
          s.malformedLines + s.metaMismatches > 0;
      const cells = [
        s.objects,
        s.messages,
        s.snapshots,
        s.duplicates,
        `${s.unexplainedBreaks}/${s.breaks}`,
        `${s.unexplainedHoles}/${s.holes}`,
        s.unreadableObjects,
        s.malformedLines,
        s.metaMismatches,
        `${s.coveragePercent} %`,
      ].map((v) =>
        `<td class="num">${esc(typeof v === "number" ? v.toLocaleString("en-US") : v)}</td>`
      );
      return `<tr${bad ? ' class="bad"' : ""}><td>${esc(s.stream)}</td>${cells.join("")}</tr>`;
    }).join("")
  }</tbody></table>`;
}

function problemsTable(report: Report): string {
  if (report.problems.length === 0) return '<p class="muted">None.</p>';
  const omitted = report.problemsOmitted > 0
    ? `<p class="muted">${report.problemsOmitted} more not listed.</p>`
    : "";
  return `<table><thead><tr><th>Kind</th><th>Stream</th><th>Time (UTC)</th><th>Explained</th>` +
    `<th>Detail</th><th>Object</th></tr></thead><tbody>${
      report.problems.map((p) =>
        `<tr${p.explained ? "" : ' class="bad"'}><td>${esc(p.kind)}</td><td>${
          esc(p.stream ? `${p.market}/${p.stream}` : "")
        }</td><td>${esc(p.time ?? "")}</td><td>${
          p.explained ? esc(p.cause ? `yes (${p.cause})` : "yes") : "no"
        }</td><td class="detail">${esc(p.detail)}</td><td class="key">${
          esc(p.key ? `${p.key}${p.line ? `:${p.line}` : ""}` : "")
        }</td></tr>`
      ).join("")
    }</tbody></table>${omitted}`;
}

const CSS = `
:root { color-scheme: light; font: 14px/1.4 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
body { margin: 0 auto; max-width: 1100px; padding: 16px 20px; color: #1f2328; background: #f6f8fa; }
h1 { font-size: 20px; margin: 0; } h2 { font-size: 15px; margin: 18px 0 8px; }
.muted { color: #656d76; font-weight: normal; }
.verdict { padding: 8px 14px; border-radius: 8px; color: #fff; }
.verdict.ok { background: #1a7f37; } .verdict.bad { background: #cf222e; }
.legend span { margin-right: 14px; } .legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -1px; }
.timeline { width: 100%; height: auto; background: #fff; border: 1px solid #d0d7de; border-radius: 8px; }
.timeline text { font-size: 11px; fill: #1f2328; }
table { width: 100%; border-collapse: collapse; background: #fff; border: 1px solid #d0d7de; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eaeef2; font-variant-numeric: tabular-nums; vertical-align: top; }
.detail { overflow-wrap: anywhere; min-width: 240px; } td.key { overflow-wrap: anywhere; }
th { background: #f6f8fa; } .num { text-align: right; } .key { font-family: ui-monospace, monospace; font-size: 12px; }
tr.bad td { background: #ffebe9; }
`;
