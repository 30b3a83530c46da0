/**
 * The whole market on one machine (issue 16): 1,500 symbols × diff depth at
 * 100 ms (15,000 msg/s) from a fake exchange in its own process, recorded
 * with `SYMBOL=ALL` and `DEPTH_LEVEL=full`. Reports how long the initial
 * snapshots took and the most request weight they used in any minute (the
 * limiter keeps to half of Binance's limit), the collector's peak RSS and
 * CPU, and whether every message was kept exactly once.
 *
 *   deno run -A bench/whole_market.ts [--symbols 1500] [--rate 10] [--snapshot-limit 100]
 *     [--steady-seconds 30]
 *
 * Prints a Markdown summary on stdout (progress on stderr).
 */

import { join } from "node:path";
import { parseArgs } from "node:util";
import { lineKindOf } from "../src/archive/meta.ts";
import { depthWeight, WEIGHT_LIMIT } from "../src/binance/rest.ts";
import { countArchive } from "./archive_count.ts";
import { ChildChannel } from "./child.ts";
import { spawnCollector } from "./collector_process.ts";
import { cpuSeconds, machine, ProcessWatch, sleep, waitForIdle } from "./proc.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    symbols: { type: "string" },
    rate: { type: "string" },
    "snapshot-limit": { type: "string" },
    "steady-seconds": { type: "string" },
  },
});
const symbols = Number(values.symbols ?? 1500);
const rate = Number(values.rate ?? 10);
const snapshotLimit = Number(values["snapshot-limit"] ?? 100);
const steadyMs = Number(values["steady-seconds"] ?? 30) * 1000;

const encoder = new TextEncoder();
const log = (text: string) => Deno.stderr.writeSync(encoder.encode(text + "\n"));

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

await using exchange = ChildChannel.spawn("./exchange_server.ts", [
  "--streams",
  String(symbols),
  "--rate",
  String(rate),
  "--kind",
  "diff",
]);
const urls = await exchange.read<{ wsUrl: string; restUrl: string }>();
const dataDir = await Deno.makeTempDir({ prefix: "l2-bench-market-" });
const metricsAddr = `127.0.0.1:${freePort()}`;
const collector = spawnCollector({
  DATA_DIR: dataDir,
  BINANCE_WS_URL: urls.wsUrl,
  BINANCE_REST_URL: urls.restUrl,
  // The fake lists three symbols of its own besides the benchmark's.
  SYMBOL: "ALL",
  SYMBOL_EXCLUDE: "BTCUSDT,ETHUSDT,BNBUSDT",
  MARKET: "spot",
  DEPTH_LEVEL: "full",
  UPDATE_SPEED_MS: "100",
  SNAPSHOT_LIMIT: String(snapshotLimit),
  BATCH_SECONDS: "10",
  METRICS_ADDR: metricsAddr,
  INSTANCE_ID: "bench",
});
const watch = new ProcessWatch(collector.pid);
const startedAt = Date.now();
const cpuAtStart = (await cpuSeconds(collector.pid)) ?? 0;

async function awaiting(): Promise<number | undefined> {
  try {
    const response = await fetch(`http://${metricsAddr}/status`);
    const status = (await response.json()) as {
      recording?: { streams: number; awaitingFirstSnapshot: string[] };
    };
    return status.recording && status.recording.streams === symbols
      ? status.recording.awaitingFirstSnapshot.length
      : undefined;
  } catch {
    return undefined;
  }
}

// Initial snapshots: poll /status until no diff stream waits.
let snapshotsDoneMs: number | undefined;
const progress: string[] = [];
while (Date.now() - startedAt < 20 * 60_000) {
  await sleep(5000);
  if (collector.hasExited) throw new Error(`collector exited: ${collector.stderr()}`);
  const waiting = await awaiting();
  const at = Math.round((Date.now() - startedAt) / 1000);
  log(`  ${at} s: ${waiting ?? "?"} streams wait for their first snapshot`);
  if (waiting !== undefined && at % 30 < 5) progress.push(`${at} s: ${waiting}`);
  if (waiting === 0) {
    snapshotsDoneMs = Date.now() - startedAt;
    break;
  }
}
const cpuAfterSnapshots = (await cpuSeconds(collector.pid)) ?? 0;

// A steady window after the snapshots.
const steadyFrom = Date.now();
const cpuSteadyFrom = (await cpuSeconds(collector.pid)) ?? 0;
const sentFrom = (await exchange.ask<{ sent: number }>("stats")).sent;
await sleep(steadyMs);
const cpuSteadyTo = (await cpuSeconds(collector.pid)) ?? 0;
const sentTo = (await exchange.ask<{ sent: number }>("stats")).sent;
const steadySeconds = (Date.now() - steadyFrom) / 1000;

// Stop the feeds, let the collector drain and store, then count.
await exchange.ask("stop");
await waitForIdle(collector.pid, { minMs: 2000, maxMs: 30_000 });
const stopped = await collector.stop(20_000);
watch.stop();
const counts = await exchange.ask<{ sent: number; perStream: Record<string, number> }>("counts");
const rest = await exchange.ask<{ depth: number[] }>("rest");
const archive = await countArchive(dataDir, { fromUs: 0, toUs: Number.MAX_SAFE_INTEGER });

let missing = 0;
let extra = 0;
// Frames of the streams only: `counts.sent` also holds the answers to live SUBSCRIBEs.
const dataSent = Object.values(counts.perStream).reduce((n, c) => n + c, 0);
for (const [stream, sent] of Object.entries(counts.perStream)) {
  const kept = archive.perStream.get(stream) ?? 0;
  missing += Math.max(0, sent - kept);
  extra += Math.max(0, kept - sent);
}
const snapshotLines = [...archive.perStream]
  .filter(([stream]) => lineKindOf(stream, false) === "snapshot")
  .reduce((n, [, c]) => n + c, 0);
// The most request weight the snapshots used in any 60 s window.
const weight = depthWeight("spot", snapshotLimit);
const times = [...rest.depth].sort((a, b) => a - b);
let busiest = 0;
for (let i = 0, j = 0; i < times.length; i++) {
  while (times[i] - times[j] >= 60_000) j++;
  busiest = Math.max(busiest, (i - j + 1) * weight);
}
const firstSnapshotsSpanS = times.length >= symbols
  ? (times[symbols - 1] - times[0]) / 1000
  : undefined;

const host = await machine();
const lines = [
  `### Whole market: ${symbols.toLocaleString("en")} symbols × diff @100 ms (${
    (symbols * rate).toLocaleString("en")
  } msg/s), SYMBOL=ALL, DEPTH_LEVEL=full, SNAPSHOT_LIMIT=${snapshotLimit}`,
  "",
  `Machine: ${host.cores} × ${host.cpuModel}, ${host.os}; Deno ${Deno.version.deno}; ${
    new Date().toISOString().slice(0, 16)
  }Z.`,
  "",
  "| measure | value |",
  "| --- | --- |",
  `| first snapshots of all ${symbols} streams | ${
    snapshotsDoneMs === undefined ? "not within 20 min" : `${Math.round(snapshotsDoneMs / 1000)} s`
  } after start (REST: ${times.length} depth requests over ${
    firstSnapshotsSpanS?.toFixed(0) ?? "?"
  } s for the first ${symbols}) |`,
  `| busiest minute of snapshot weight | ${busiest} (limiter budget: half of ${WEIGHT_LIMIT.spot} = ${
    WEIGHT_LIMIT.spot / 2
  }) |`,
  `| waiting for a first snapshot, every 30 s | ${progress.join("; ")} |`,
  `| messages sent / kept | ${dataSent.toLocaleString("en")} / ${
    (archive.dataLines - snapshotLines).toLocaleString("en")
  } (missing ${missing}, extra ${extra}, repeated ids ${archive.duplicates}) |`,
  `| snapshot lines stored | ${snapshotLines} |`,
  `| collector CPU, steady (after the snapshots) | ${
    ((cpuSteadyTo - cpuSteadyFrom) / steadySeconds).toFixed(2)
  } cores at ${Math.round((sentTo - sentFrom) / steadySeconds).toLocaleString("en")} msg/s |`,
  `| collector CPU, start to snapshots done | ${
    ((cpuAfterSnapshots - cpuAtStart) / ((snapshotsDoneMs ?? 1) / 1000)).toFixed(2)
  } cores |`,
  `| collector peak RSS | ${Math.round(watch.peakBytes / 1024 / 1024)} MiB |`,
  `| shutdown | exit ${stopped.code}${stopped.killed ? " (killed)" : ""} |`,
];
// deno-lint-ignore no-console -- the report is the output
console.log(lines.join("\n"));
await exchange.ask("close").catch(() => {});
await Deno.remove(join(dataDir), { recursive: true }).catch(() => {});
