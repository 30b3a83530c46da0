/**
 * Turns the measurements into the Markdown the benchmark prints and writes
 * to bench/results.md: the machine, one table of loads (collector and bare
 * client side by side), the targets with a verdict each, gzip per level,
 * `verify` over a day, and (with --profile) where the CPU time goes.
 */

import type { GzipResult } from "./gzip_bench.ts";
import type { LoadResult } from "./load_run.ts";
import { HEAVY_LOAD, type Load, LOADS } from "./loads.ts";
import type { Machine } from "./proc.ts";
import type { ProfileSummary } from "./profile.ts";
import type { BookBenchResult } from "./book_bench.ts";
import type { VerifyResult } from "./verify_bench.ts";
import { peerFactors } from "./rounds.ts";

export interface BenchReport {
  readonly machine: Machine;
  readonly startedAt: Date;
  readonly quick: boolean;
  readonly windowSeconds: number;
  readonly batchSeconds: number;
  readonly queueMaxBytes: number;
  readonly loads: readonly LoadResult[];
  readonly verify?: VerifyResult;
  readonly book?: BookBenchResult;
  readonly gzip?: GzipResult;
  readonly profile?: { readonly summary: ProfileSummary; readonly path: string };
}

const int = (n: number) => Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "–";
const fixed = (n: number | undefined, digits: number) =>
  n !== undefined && Number.isFinite(n) ? n.toFixed(digits) : "–";
const mib = (bytes: number) => `${int(bytes / 1024 / 1024)} MiB`;
const pass = (ok: boolean) => (ok ? "✅" : "❌");

export function renderReport(report: BenchReport): string {
  const out: string[] = [];
  const m = report.machine;
  out.push(
    `Machine: ${m.cores} cores (${m.cpuModel}), ${m.memoryGiB} GiB, ${m.os}; Deno ${m.deno}. ` +
      `Run ${report.startedAt.toISOString().slice(0, 16)}Z, ${
        report.quick ? "`--quick`" : "full"
      }: ` +
      `${report.windowSeconds} s measured per load after a warm-up, BATCH_SECONDS=${report.batchSeconds}, ` +
      `local sink, fake exchange in its own process.`,
    "",
  );
  const busiest = Math.max(0, ...report.loads.map((r) => r.otherCores));
  if (busiest >= 0.25) {
    out.push(
      `⚠️ The machine was shared: other processes used up to ${fixed(busiest, 2)} of its ` +
        `${m.cores} cores during a measured window (see _notes_). CPU seconds per message ` +
        "rise under sharing too (cores and caches are contended): compare clients within one run; " +
        "kept msg/s, drain and latency suffer most.",
      "",
    );
  }
  if (report.loads.length > 0) out.push(loadsTable(report.loads, report.batchSeconds), "");
  out.push(...targets(report), "");
  out.push(
    "How to read it: _offered_ is what the exchange wrote per second during the window; _kept_ " +
      "is what the client received (collector: received and stored) with a receive time in the " +
      "window; _every message kept_ compares, per stream, every frame the exchange wrote to the " +
      "client over the whole run with the data lines stored (duplicates count as failures). CPU " +
      "is user+system of all the client's threads over the window, from /proc; _vs bare_ is the " +
      "collector's CPU per message over the bare client's. Latency is receive-to-stored: object " +
      `file mtime minus each line's recv_ts. It is dominated by BATCH_SECONDS=${report.batchSeconds} ` +
      "(a line waits for its batch to seal, up to BATCH_SECONDS plus the 250 ms seal tick), not by " +
      "processing; with the default 60 s expect p50 ≈ 30 s. It starts at receipt, so a client " +
      "that falls behind shows it in _kept msg/s_ and _drain_, not here. _Objects span_: from " +
      "an object's first receive time to its last, for every object but each stream's last one " +
      "(the shutdown seals it early).",
  );
  const rounds = report.loads.find((r) => (r.roundCpu?.length ?? 0) > 1)?.roundCpu?.length;
  if (rounds) {
    out.push(
      "",
      `At ${HEAVY_LOAD.label} the clients ran in ${rounds} interleaved rounds, each round ` +
        "starting one client later than the last, because one run of a client moves from run to " +
        "run by more than the margins compared here. Each client's row is its median round by " +
        "CPU per message (with an even count, the lower of the middle two), with the messages of " +
        "all rounds summed and the highest peak RSS; the notes list every round. The peer target " +
        "pairs each round's collector with that round's best peer and takes the median of those " +
        "factors.",
    );
  }
  if (report.gzip) out.push("", ...gzipSection(report.gzip, report.loads));
  if (report.verify) out.push("", verifyLine(report.verify));
  if (report.book) out.push("", bookLine(report.book));
  if (report.profile) out.push("", ...profileSection(report.profile.summary));
  return out.join("\n") + "\n";
}

function clientLabel(r: LoadResult, usual: number): string {
  return r.batchSeconds !== undefined && r.batchSeconds !== usual
    ? `${r.client}, **BATCH_SECONDS=${r.batchSeconds}**`
    : r.client;
}

function loadsTable(results: readonly LoadResult[], batchSeconds: number): string {
  const rows = [
    "| load | client | offered msg/s | kept msg/s | MB/s | every message kept | CPU (cores) | CPU s / M msgs | vs bare | peak RSS | latency p50 / p99 | notes |",
    "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
  ];
  for (const r of results) {
    const bare = results.find((b) => b.client === "bare" && b.load === r.load);
    const ratio = r.client !== "bare" && bare ? r.cpuSecPerMillion / bare.cpuSecPerMillion : NaN;
    const kept = r.missing === 0 && r.extra === 0
      ? `✅ ${int(r.kept)} / ${int(r.sent)}`
      : `❌ ${int(r.kept)} / ${int(r.sent)} (${int(r.missing)} lost, ${int(r.extra)} extra)`;
    const notes = [
      ...(r.client === "bare"
        ? []
        : [`${fixed(r.objectsPerSec, (r.objectsPerSec ?? 0) < 10 ? 1 : 0)} objects/s`]),
      `main thread ${int(Math.min(1, r.mainThreadShare) * 100)} % of CPU`,
      ...(r.workerShare > 0 ? [`gzip worker ${int(r.workerShare * 100)} %`] : []),
      `exchange ${fixed(r.exchangeCores, 2)} cores`,
      ...(r.otherCores >= 0.1 ? [`**other processes ${fixed(r.otherCores, 2)} cores**`] : []),
      `drain ${fixed(r.drainMs / 1000, 1)} s`,
      ...(r.spooledBatches ? [`${int(r.spooledBatches)} batches spooled`] : []),
      ...(r.diskBytesPerMessage !== undefined && r.archiveBytesPerMessage
        ? [
          `disk writes ${int(r.diskBytesPerMessage)} B/msg = ${
            fixed(r.diskBytesPerMessage / r.archiveBytesPerMessage, 1)
          }× the archive's ${int(r.archiveBytesPerMessage)} B/msg` +
          (r.cancelledBytesPerMessage
            ? ` (${int(r.cancelledBytesPerMessage)} B/msg cancelled before writeback)`
            : "") +
          (r.storedBlockBytesPerMessage
            ? `; the archive's files in whole disk blocks ${
              int(r.storedBlockBytesPerMessage)
            } B/msg`
            : ""),
        ]
        : []),
      ...(r.objectSpanP50S !== undefined && Number.isFinite(r.objectSpanP50S)
        ? [
          `objects span ${fixed(r.objectSpanP50S, 1)} s (p50), ${
            fixed(r.objectSpanP10S, 1)
          } s (p10)`,
        ]
        : []),
      ...r.notes,
    ].join("; ");
    const latency = r.latencyP50Ms === undefined
      ? "–"
      : `${fixed(r.latencyP50Ms / 1000, 2)} / ${fixed(r.latencyP99Ms! / 1000, 2)} s`;
    rows.push(
      `| ${r.load.label} | ${clientLabel(r, batchSeconds)} | ${int(r.offeredPerSec)} | ${
        int(r.keptPerSec)
      } | ` +
        `${fixed(r.mbPerSec, 1)} | ${kept} | ${fixed(r.cpuCores, 3)} | ` +
        `${fixed(r.cpuSecPerMillion, 1)} | ${
          Number.isFinite(ratio) ? `${fixed(ratio, 1)}×` : ""
        } | ` +
        `${mib(r.peakRssBytes)} | ${latency} | ${notes} |`,
    );
  }
  return rows.join("\n");
}

function find(results: readonly LoadResult[], load: Load, client: LoadResult["client"]) {
  return results.find((r) => r.load === load && r.client === client);
}

/** The loads with a working sink run at the default UPLOAD_QUEUE_MAX_BYTES (64MB). */
const DEFAULT_QUEUE_BYTES = 64 * 1024 * 1024;

function targets(report: BenchReport): string[] {
  const results = report.loads;
  const lines = ["Targets:", ""];
  const heavy = find(results, HEAVY_LOAD, "collector");
  const heavyBare = find(results, HEAVY_LOAD, "bare");
  if (heavy) {
    lines.push(
      `- ${pass(heavy.missing === 0 && heavy.extra === 0)} at ${int(heavy.offeredPerSec)} msg/s ` +
        `every message kept: ${int(heavy.kept)} of ${int(heavy.sent)} stored` +
        (heavy.missing || heavy.extra
          ? ` (${int(heavy.missing)} lost, ${int(heavy.extra)} extra)`
          : ""),
    );
  }
  if (heavy) {
    lines.push(
      `- ${pass(heavy.cpuSecPerMillion <= 12)} at ${int(heavy.offeredPerSec)} msg/s CPU ≤ 12 ` +
        `CPU s per million messages: ${fixed(heavy.cpuSecPerMillion, 1)}`,
    );
  }
  const peers = results.filter((r) =>
    r.load === HEAVY_LOAD && (r.client === "python peer" || r.client === "node peer")
  );
  if (heavy && peers.length > 0) {
    const best = peers.reduce((a, b) => (a.cpuSecPerMillion <= b.cpuSecPerMillion ? a : b));
    const rounds = peerFactors(heavy, peers);
    const factor = rounds?.median ?? best.cpuSecPerMillion / heavy.cpuSecPerMillion;
    const how = rounds
      ? `in the median of ${rounds.perRound.length} rounds the best peer needs ` +
        `${fixed(factor, 2)}× the collector's CPU (round by round ${
          rounds.perRound.map((f) => `${fixed(f, 2)}×`).join(", ")
        }; medians: `
      : `the best peer (${best.client}) needs ${fixed(factor, 2)}× the collector's CPU (`;
    lines.push(
      `- ${pass(factor >= 2)} ≥ 2× less CPU per message than any peer: ${how}` +
        peers.map((p) =>
          `${p.client} ${fixed(p.cpuSecPerMillion, 1)} CPU s/M, ${mib(p.peakRssBytes)}` +
          (p.keptPerSec < 0.95 * p.offeredPerSec
            ? `, fell behind: received ${int(p.keptPerSec)} of ${int(p.offeredPerSec)} msg/s`
            : "")
        ).join("; ") +
        `; collector ${fixed(heavy.cpuSecPerMillion, 1)})`,
    );
  }
  for (const r of results.filter((r) => r.client === "collector" && r.diskBytesPerMessage)) {
    const ratio = r.diskBytesPerMessage! / r.archiveBytesPerMessage!;
    lines.push(
      `- ${pass(ratio <= 1.5)} ${r.load.label} at BATCH_SECONDS=${r.batchSeconds}: disk ` +
        `writes ≤ 1.5× the archive: ${fixed(ratio, 1)}× (${int(r.diskBytesPerMessage!)} bytes ` +
        `written per message, /proc/<pid>/io write_bytes, against ${
          int(r.archiveBytesPerMessage!)
        } archive bytes per line)` + storedBlocksNote(r),
    );
  }
  if (heavy && heavyBare) {
    const ratio = heavy.cpuSecPerMillion / heavyBare.cpuSecPerMillion;
    const verdict = ratio <= 2 ? "✅" : ratio <= 3 ? "⚠️ acceptable" : "❌";
    lines.push(
      `- ${verdict} (the earlier yardstick) collector CPU ≤ 2× the bare client's (≤ 3× acceptable): ${
        fixed(ratio, 1)
      }× ` +
        `(${fixed(heavy.cpuSecPerMillion, 1)} vs ${
          fixed(heavyBare.cpuSecPerMillion, 1)
        } CPU s per ` +
        `million messages; ${fixed(heavy.cpuCores, 2)} vs ${fixed(heavyBare.cpuCores, 2)} cores)`,
    );
    if (heavy.workerShare > 0) {
      const rest = heavy.cpuSecPerMillion * (1 - heavy.workerShare);
      lines.push(
        `  - of which gzip (its worker thread) ${fixed(heavy.cpuSecPerMillion - rest, 1)} CPU s ` +
          `per million messages; everything else ${fixed(rest, 1)}, ` +
          `${fixed(rest / heavyBare.cpuSecPerMillion, 1)}× the bare client`,
      );
    }
  }
  if (heavy) {
    lines.push(
      `- ${pass(heavy.peakRssBytes <= 200 * 1024 * 1024)} at ${int(heavy.offeredPerSec)} msg/s ` +
        `peak RSS ≤ 200 MiB: ${mib(heavy.peakRssBytes)} at BATCH_SECONDS=${
          heavy.batchSeconds ?? report.batchSeconds
        }`,
    );
  }
  // Memory at many streams is set by how long batches stay open: judge it at the default.
  const manyRuns = results.filter((r) => r.load === LOADS[2] && r.client === "collector");
  const many = manyRuns.find((r) => r.batchSeconds === 60) ?? manyRuns[0];
  if (many) {
    const openText = LOADS[2].streams * LOADS[2].rate * (many.batchSeconds ?? 0) * 1.15e3;
    const fullSpan = many.batchSeconds !== undefined && many.objectSpanP50S !== undefined &&
      many.objectSpanP50S >= many.batchSeconds - 2;
    lines.push(
      `- ${pass(many.peakRssBytes <= 250 * 1024 * 1024 && fullSpan)} ${
        LOADS[2].streams.toLocaleString("en-US")
      } ` +
        `streams in ≤ 250 MiB RSS with objects spanning the whole batch: objects span ${
          fixed(many.objectSpanP50S, 1)
        } s (p50), peak ${mib(many.peakRssBytes)} at BATCH_SECONDS=${many.batchSeconds}` +
        ` (spans of the objects sealed by age, each stream's last object, sealed by the shutdown, ` +
        `left out; open batches may hold 4 × the default UPLOAD_QUEUE_MAX_BYTES = ` +
        `${mib(4 * DEFAULT_QUEUE_BYTES)} in memory, while their text would be ~${mib(openText)})` +
        (many.missing || many.extra ? `; ${int(many.missing)} messages lost` : "") +
        (many.batchSeconds !== 60
          ? "; not measured at the default BATCH_SECONDS=60 (full run only)"
          : ""),
    );
  }
  const idleRuns = results.filter((r) => r.load === LOADS[0] && r.client === "collector");
  const idle = idleRuns.find((r) => r.batchSeconds === 60) ?? idleRuns[0];
  if (idle) {
    lines.push(
      `- ${pass(idle.cpuCores < 0.01)} ${LOADS[0].label} below 1 % of a core: ` +
        `${fixed(idle.cpuCores * 100, 2)} % at BATCH_SECONDS=${idle.batchSeconds}` +
        (idle.batchSeconds !== 60 ? " (not measured at the default 60 s: full run only)" : "") +
        `, measured from ${fixed(idle.warmupS, 0)} s after start` +
        ((idle.warmupS ?? 0) > (idle.batchSeconds ?? 0)
          ? " (steady state: start-up and the first batch left out)"
          : "") +
        (idle.exactCpuCores === undefined
          ? " (utime + stime, charged a clock tick at a time)"
          : ` (utime + stime, charged a clock tick at a time; from its threads' exact run ` +
            `times, schedstat: ${fixed(idle.exactCpuCores * 100, 2)} %)`),
    );
  }
  const down = find(results, HEAVY_LOAD, "collector, S3 down");
  const up = find(results, HEAVY_LOAD, "collector, S3 up");
  if (down) {
    // The fixed overhead: the same load with the same sink and queue while S3 answers.
    const baseline = up?.peakRssBytes;
    const bound = baseline === undefined ? undefined : baseline + report.queueMaxBytes;
    lines.push(
      `- ${bound === undefined ? "?" : pass(down.peakRssBytes <= bound)} S3 down at ` +
        `${int(down.offeredPerSec)} msg/s with UPLOAD_QUEUE_MAX_BYTES=${
          mib(report.queueMaxBytes)
        }: ` +
        `peak RSS ${mib(down.peakRssBytes)}; bound = the same load's peak with S3 up ` +
        `(the fixed overhead, ${
          baseline === undefined ? "not measured" : mib(baseline)
        }) + the queue` +
        `${bound === undefined ? "" : ` = ${mib(bound)}`}; ` +
        `${
          down.missing === 0 && down.extra === 0
            ? "every message is in the spool"
            : `${int(down.missing)} messages lost`
        }`,
    );
  }
  return lines;
}

/**
 * How much of a disk-write ratio the archive's own files account for: in the
 * whole blocks a disk writes, small objects and their sidecars take more than
 * their bytes whatever writes them, and only the rest is the journal's.
 */
function storedBlocksNote(r: LoadResult): string {
  const stored = r.storedBlockBytesPerMessage;
  if (!stored || !r.archiveBytesPerMessage || r.diskBytesPerMessage === undefined) return "";
  const rest = r.diskBytesPerMessage - stored;
  return `; the archive's own files (objects and their .meta.json) take ${int(stored)} B/msg ` +
    `in whole disk blocks, ${fixed(stored / r.archiveBytesPerMessage, 1)}× by themselves, ` +
    `so the crash journal and everything else wrote ${
      rest >= 0
        ? `${int(rest)} B/msg (${fixed(rest / r.archiveBytesPerMessage, 1)}×)`
        : "nothing measurable beyond them"
    }`;
}

function gzipSection(gzip: GzipResult, results: readonly LoadResult[]): string[] {
  const heavy = find(results, HEAVY_LOAD, "collector");
  // Archive lines are the frames plus ~28 bytes of recv_ts: use the measured rate when there is one.
  const mbPerSec = heavy ? heavy.mbPerSec * 1.025 : HEAVY_LOAD.streams * HEAVY_LOAD.rate * 1.14e-3;
  const [synthetic, real] = gzip.corpora;
  const rows = [
    `gzip (node:zlib, best of the repetitions, one thread). Synthetic: ${
      int(synthetic.lines)
    } lines, ` +
    `${fixed(synthetic.bytes / 1e6, 1)} MB; real: ${int(real.lines)} lines, ${
      fixed(real.bytes / 1e6, 1)
    } MB. ` +
    `_Cores at ${int(HEAVY_LOAD.streams * HEAVY_LOAD.rate)} msg/s_ is what gzip alone costs at ` +
    `${fixed(mbPerSec, 1)} MB/s of lines (real data's speed).`,
    "",
    "| level | synthetic MB/s | synthetic ratio | real MB/s | real ratio | cores at 20k msg/s |",
    "| ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (let i = 0; i < 9; i++) {
    const s = synthetic.levels[i];
    const r = real.levels[i];
    const mark = s.level === gzip.sweetSpot ? " **←**" : "";
    rows.push(
      `| ${s.level}${mark} | ${int(s.mbPerSec)} | ${fixed(s.ratio, 2)} | ${int(r.mbPerSec)} | ` +
        `${fixed(r.ratio, 2)} | ${fixed(mbPerSec / r.mbPerSec, 2)} |`,
    );
  }
  rows.push("", `Sweet spot: GZIP_LEVEL=${gzip.sweetSpot}: ${gzip.reason}.`);
  return rows;
}

function verifyLine(v: VerifyResult): string {
  const rate = v.messages / v.wallSeconds;
  const counted = v.reportedMessages === undefined
    ? "no report parsed"
    : `reported ${int(v.reportedMessages)} messages, ${v.reportedOk ? "ok" : "NOT ok"}`;
  return `\`verify\` over one day of one diff stream (${
    int(v.messages)
  } messages + 24 snapshots, ` +
    `${int(v.objects)} objects, ${fixed(v.archiveBytes / 1e6, 0)} MB gzip, local archive): ` +
    `${fixed(v.wallSeconds, 1)} s wall, ${fixed(v.cpuSeconds, 1)} CPU s, ${int(rate)} msg/s, ` +
    `peak RSS ${mib(v.peakRssBytes)}, exit ${v.exitCode} (${counted})` +
    (v.generatedNow
      ? `; generating the day took ${fixed(v.generateSeconds, 1)} s (cached now)`
      : "") +
    ".";
}

function bookLine(b: BookBenchResult): string {
  const met = b.exitCode === 0 && b.wallSeconds < 30 && b.peakRssBytes < 200 * 1024 * 1024;
  return `${met ? "✅" : "❌"} \`book --levels 10 --every 1s\` over one day of one diff stream (${
    int(b.messages)
  } diffs + 24 true snapshots, ${int(b.objects)} objects, local archive): ` +
    `${fixed(b.wallSeconds, 1)} s wall (target < 30 s), ${fixed(b.cpuSeconds, 1)} CPU s, ` +
    `${int(b.messages / b.wallSeconds)} diffs/s, peak RSS ${mib(b.peakRssBytes)} ` +
    `(target < 200 MiB), ${int(b.rows)} rows, exit ${b.exitCode} (${b.summary})` +
    (b.generatedNow
      ? `; generating the day took ${fixed(b.generateSeconds, 1)} s (cached now)`
      : "") +
    ".";
}

function profileSection(p: ProfileSummary): string[] {
  const rows = [
    `CPU profile of the collector's main thread at ${HEAVY_LOAD.label} ` +
    `(\`--cpu-prof\`; ${fixed(p.busyMs / 1000, 1)} s busy, ${fixed(p.idleMs / 1000, 1)} s idle). ` +
    `Top self time:`,
    "",
    "| function | self ms | share of busy |",
    "| --- | ---: | ---: |",
    ...p.functions.map((f) =>
      `| \`${cell(f.name)}\` | ${int(f.ms)} | ${fixed(f.share * 100, 1)} % |`
    ),
    "",
    "By file:",
    "",
    "| file | self ms | share of busy |",
    "| --- | ---: | ---: |",
    ...p.files.map((f) => `| \`${cell(f.name)}\` | ${int(f.ms)} | ${fixed(f.share * 100, 1)} % |`),
  ];
  return rows;
}

/** A `|` splits a Markdown table cell even inside a code span. */
function cell(text: string): string {
  return text.replaceAll("|", "\\|");
}
