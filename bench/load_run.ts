/**
 * One load against one client: the exchange in its own process, then either
 * the real collector (local sink, or an S3 that is down) or the bare
 * counting client. Measures over a steady window after a warm-up, then stops
 * the feeds, lets the client drain, stops it, and compares what it kept with
 * what the exchange wrote to it.
 *
 * Exactness: the exchange counts only frames it wrote to a socket, and only
 * this one client is connected, so "sent" is exactly what this client was
 * given. Feeds stop before the client is stopped, so nothing is sent after.
 * A collector that could not store everything within its shutdown budget
 * leaves the rest in its crash journal; it is then started once more on the
 * same DATA_DIR (as launchd would) and what that recovers is counted too,
 * with a note.
 */

import { join } from "node:path";
import { type ArchiveCount, countArchive, percentile } from "./archive_count.ts";
import { ChildChannel } from "./child.ts";
import { type CollectorChild, spawnCollector } from "./collector_process.ts";
import { combinedUrls, connectionsOf, type Load, symbolsFor } from "./loads.ts";
import { TestS3 } from "../tests/support/s3.ts";
import { countPeerOutput, type PeerKind, preparePeer } from "./peers.ts";
import {
  cpuSeconds,
  exactCores,
  type IoCounters,
  ioCounters,
  latestRunTimes,
  machineBusySeconds,
  ProcessWatch,
  sleep,
  threadRunTimes,
  threadsCpuSeconds,
  waitForIdle,
} from "./proc.ts";

export type ClientKind =
  | "collector"
  | "bare"
  | PeerKind
  | "collector, S3 up"
  | "collector, S3 down";

export interface RunSettings {
  readonly warmupMs: number;
  readonly windowMs: number;
  /** BATCH_SECONDS of the collector. */
  readonly batchSeconds: number;
  /** S3 down: UPLOAD_QUEUE_MAX_BYTES in bytes. */
  readonly queueMaxBytes?: number;
  /** More environment for the collector (it wins over the benchmark's own settings). */
  readonly collectorEnv?: Readonly<Record<string, string>>;
  /** Run the collector under V8's CPU profiler, writing into this directory. */
  readonly cpuProfDir?: string;
  readonly log?: (text: string) => void;
}

export interface LoadResult {
  readonly load: Load;
  readonly client: ClientKind;
  readonly batchSeconds?: number;
  /** Seconds from start to the measured window. */
  readonly warmupS?: number;
  /** Frames the exchange wrote per second during the window. */
  readonly offeredPerSec: number;
  /** Messages the client received (collector: received and stored) per second in the window. */
  readonly keptPerSec: number;
  /** Frame text kept per second in the window, MB (10^6 bytes). */
  readonly mbPerSec: number;
  /** Frames written to the client over the whole run, and what it kept of them. */
  readonly sent: number;
  readonly kept: number;
  /** Per stream, sent − kept where positive, summed: messages lost. */
  readonly missing: number;
  /** Kept beyond sent, plus repeated update ids: messages stored twice. */
  readonly extra: number;
  /** Cores used in the window (1 = one core busy all the time). */
  readonly cpuCores: number;
  /**
   * The same from the client's threads' exact run times (`schedstat`), where
   * `cpuCores` is sampled at clock ticks; absent when /proc could not be read.
   */
  readonly exactCpuCores?: number;
  readonly cpuSecPerMillion: number;
  /** Share of the client's CPU spent on its main thread (one core at most). */
  readonly mainThreadShare: number;
  /** Share of the client's CPU spent on Worker threads (the collector's gzip). */
  readonly workerShare: number;
  /** Cores the exchange process used in the window (it shares the machine). */
  readonly exchangeCores: number;
  /** Cores used by everything else on the machine in the window (other people's tests…). */
  readonly otherCores: number;
  readonly peakRssBytes: number;
  readonly latencyP50Ms?: number;
  readonly latencyP99Ms?: number;
  /** From stopping the feeds until the client went quiet. */
  readonly drainMs: number;
  /** Objects (local archive) or spool files (S3 down) per second over the run. */
  readonly objectsPerSec?: number;
  readonly spooledBatches?: number;
  /**
   * Collector: bytes it caused to be written to disk per message in the
   * window (/proc/<pid>/io write_bytes), and the archive's gzip bytes per
   * message stored; their ratio is the disk-write target.
   */
  readonly diskBytesPerMessage?: number;
  readonly archiveBytesPerMessage?: number;
  /**
   * The local archive's objects and sidecars in whole disk blocks, per line:
   * what the archive itself costs the disk, however it is written.
   */
  readonly storedBlockBytesPerMessage?: number;
  /** Of the disk bytes, those cancelled before writeback (files deleted first), per message. */
  readonly cancelledBytesPerMessage?: number;
  /** Seconds from first to last receive time per object: median, and the 10th percentile. */
  readonly objectSpanP50S?: number;
  readonly objectSpanP10S?: number;
  /** Run in rounds (bench/rounds.ts): CPU seconds per million messages of each round. */
  readonly roundCpu?: readonly number[];
  readonly notes: readonly string[];
}

interface ExchangeStats {
  sent: number;
  open: number;
}

interface BareStats {
  frames: number;
  bytes: number;
  open: number;
}

export async function runLoad(
  load: Load,
  client: ClientKind,
  settings: RunSettings,
): Promise<LoadResult> {
  const log = settings.log ?? (() => {});
  await using exchange = ChildChannel.spawn("./exchange_server.ts", [
    "--streams",
    String(load.streams),
    "--rate",
    String(load.rate),
  ]);
  const urls = await exchange.read<{ wsUrl: string; restUrl: string }>();
  log(`  exchange at ${urls.wsUrl}`);
  if (client === "bare") return await runBare(load, exchange, urls.wsUrl, settings);
  if (client === "python peer" || client === "node peer") {
    return await runPeer(load, client, exchange, urls.wsUrl, settings);
  }
  return await runCollector(load, client, exchange, urls, settings);
}

/**
 * A client that answers "stats" with the frames and bytes it received: the
 * window measured, then the exchange stopped and the client left to drain.
 */
async function measureCounting(
  load: Load,
  client: ChildChannel,
  exchange: ChildChannel,
  settings: RunSettings,
  drain: { minMs: number; maxMs: number },
) {
  await client.read<{ open: number }>();
  await waitForConnections(exchange, connectionsOf(load));
  const window = await measureWindow(settings, [client.pid, exchange.pid], async () => ({
    exchange: await exchange.ask<ExchangeStats>("stats"),
    client: await client.ask<BareStats>("stats"),
  }));
  const frames = window.after.client.frames - window.before.client.frames;
  const bytes = window.after.client.bytes - window.before.client.bytes;
  await exchange.ask("stop");
  const drainMs = await waitForIdle(client.pid, drain);
  return {
    offeredPerSec: (window.after.exchange.sent - window.before.exchange.sent) / window.seconds,
    keptPerSec: frames / window.seconds,
    mbPerSec: bytes / window.seconds / 1e6,
    ...cpuFigures(window, frames),
    drainMs,
  };
}

async function runBare(
  load: Load,
  exchange: ChildChannel,
  wsUrl: string,
  settings: RunSettings,
): Promise<LoadResult> {
  await using bare = ChildChannel.spawn("./bare_client.ts", combinedUrls(wsUrl, load));
  const watch = new ProcessWatch(bare.pid);
  try {
    const measured = await measureCounting(load, bare, exchange, settings, {
      minMs: 500,
      maxMs: 30_000,
    });
    await watch.sample();
    const { sent } = await exchange.ask<{ sent: number }>("counts");
    const final = await bare.ask<BareStats>("close");
    await exchange.ask("close");
    return {
      load,
      client: "bare",
      ...measured,
      sent,
      kept: final.frames,
      missing: Math.max(0, sent - final.frames),
      extra: Math.max(0, final.frames - sent),
      peakRssBytes: watch.peakBytes,
      notes: [],
    };
  } finally {
    watch.stop();
  }
}

async function runPeer(
  load: Load,
  client: PeerKind,
  exchange: ChildChannel,
  wsUrl: string,
  settings: RunSettings,
): Promise<LoadResult> {
  const log = settings.log ?? (() => {});
  const how = await preparePeer(client, log);
  if (typeof how === "string") throw new Error(`${client} cannot run: ${how}`);
  const outDir = await Deno.makeTempDir({ prefix: "l2-bench-peer-" });
  await using peer = ChildChannel.spawnProgram(how.command, [
    ...how.args,
    outDir,
    String(settings.batchSeconds),
    ...combinedUrls(wsUrl, load),
  ], how.env);
  const watch = new ProcessWatch(peer.pid);
  try {
    const measured = await measureCounting(load, peer, exchange, settings, {
      minMs: 1000,
      maxMs: 60_000,
    });
    await watch.sample();
    const counts = await exchange.ask<{ sent: number; perStream: Record<string, number> }>(
      "counts",
    );
    await peer.ask<BareStats>("close", 120_000);
    await exchange.ask("close");
    const stored = await countPeerOutput(outDir);
    let missing = 0;
    let extra = 0;
    for (const [stream, n] of Object.entries(counts.sent === 0 ? {} : counts.perStream)) {
      const kept = stored.perStream.get(stream) ?? 0;
      if (kept < n) missing += n - kept;
      else extra += kept - n;
    }
    return {
      load,
      client,
      batchSeconds: settings.batchSeconds,
      warmupS: settings.warmupMs / 1000,
      ...measured,
      sent: counts.sent,
      kept: stored.lines,
      missing,
      extra,
      peakRssBytes: watch.peakBytes,
      notes: [],
    };
  } finally {
    watch.stop();
    await Deno.remove(outDir, { recursive: true }).catch(() => {});
  }
}

async function runCollector(
  load: Load,
  client: ClientKind,
  exchange: ChildChannel,
  urls: { wsUrl: string; restUrl: string },
  settings: RunSettings,
): Promise<LoadResult> {
  const log = settings.log ?? (() => {});
  const dataDir = await Deno.makeTempDir({ prefix: "l2-bench-" });
  const notes: string[] = [];
  // S3 up: a real S3 server (s3rver, its own process), on loopback.
  await using s3 = client === "collector, S3 up" ? await TestS3.start() : undefined;
  const env = {
    ...collectorEnv(load, client, settings, { dataDir, ...urls }),
    ...s3?.env(),
  };
  const startedAt = performance.now();
  const collector = spawnCollector(env, { cpuProfDir: settings.cpuProfDir });
  const watch = new ProcessWatch(collector.pid);
  try {
    await Promise.race([
      waitForConnections(exchange, connectionsOf(load)),
      collector.exited.then((code) => {
        throw new Error(`collector exited with ${code} before connecting:\n${collector.stderr()}`);
      }),
    ]);
    const window = await measureWindow(
      settings,
      [collector.pid, exchange.pid],
      async () => ({
        ...await exchange.ask<ExchangeStats>("stats"),
        io: await ioCounters(collector.pid),
      }),
    );
    await exchange.ask("stop");
    const drainMs = await waitForIdle(collector.pid, { minMs: 1000, maxMs: 60_000 });
    await watch.sample();
    const { code, killed } = await stopCollector(collector, notes);
    watch.stop();
    const runSeconds = (performance.now() - startedAt) / 1000;
    if (killed) notes.push("did not exit within 60 s of SIGTERM (killed)");
    if (code !== 0) notes.push(`exit code ${code}`);
    noteLogProblems(collector.stderr(), notes);
    if (await journalLeft(dataDir)) {
      log("  batches left in the crash journal: starting the collector again to recover them");
      notes.push(
        "shutdown left batches in the crash journal; counted after a second start recovered them",
      );
      await recoverWith(env, exchange, load, notes);
    }
    const counts = await exchange.ask<{ sent: number; perStream: Record<string, number> }>(
      "counts",
    );
    await exchange.ask("close");
    log(`  counting what was stored in ${dataDir}`);
    const archive = await countArchive(dataDir, window.range, s3?.directory);
    return {
      load,
      client,
      batchSeconds: settings.batchSeconds,
      warmupS: settings.warmupMs / 1000,
      offeredPerSec: (window.after.sent - window.before.sent) / window.seconds,
      keptPerSec: archive.windowLines / window.seconds,
      mbPerSec: archive.windowFrameBytes / window.seconds / 1e6,
      sent: counts.sent,
      kept: archive.dataLines,
      ...compare(counts.perStream, archive),
      ...cpuFigures(window, archive.windowLines),
      peakRssBytes: watch.peakBytes,
      latencyP50Ms: percentile(archive.latenciesMs, 0.5),
      latencyP99Ms: percentile(archive.latenciesMs, 0.99),
      drainMs,
      objectsPerSec: (archive.objects + archive.spooled) / runSeconds,
      spooledBatches: archive.spooled,
      ...diskFigures(window.before.io, window.after.io, archive),
      objectSpanP50S: percentile(archive.objectSpansS, 0.5),
      objectSpanP10S: percentile(archive.objectSpansS, 0.1),
      notes,
    };
  } finally {
    watch.stop();
    collector.signal("SIGKILL");
    await collector.exited;
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
}

/** Disk bytes per message in the window against the archive's bytes per message. */
function diskFigures(
  before: IoCounters | undefined,
  after: IoCounters | undefined,
  archive: ArchiveCount,
) {
  if (!before || !after || archive.windowLines === 0 || archive.dataLines === 0) return {};
  return {
    diskBytesPerMessage: (after.writeBytes - before.writeBytes) / archive.windowLines,
    cancelledBytesPerMessage: (after.cancelledWriteBytes - before.cancelledWriteBytes) /
      archive.windowLines,
    archiveBytesPerMessage: archive.gzipBytes / (archive.dataLines + archive.eventLines),
    ...(archive.storedBlockBytes > 0
      ? {
        storedBlockBytesPerMessage: archive.storedBlockBytes /
          (archive.dataLines + archive.eventLines),
      }
      : {}),
  };
}

function collectorEnv(
  load: Load,
  client: ClientKind,
  settings: RunSettings,
  where: { dataDir: string; wsUrl: string; restUrl: string },
): Record<string, string> {
  const env: Record<string, string> = {
    DATA_DIR: where.dataDir,
    BINANCE_WS_URL: where.wsUrl,
    BINANCE_REST_URL: where.restUrl,
    SYMBOL: symbolsFor(load.streams).join(","),
    MARKET: "spot",
    DEPTH_LEVEL: "20",
    UPDATE_SPEED_MS: "100",
    BATCH_SECONDS: String(settings.batchSeconds),
    STREAMS_PER_CONNECTION: String(load.perConnection),
    METRICS_ADDR: "off",
    INSTANCE_ID: "bench",
  };
  if (client === "collector, S3 up") {
    // The S3 down run's baseline: the same sink, queue and load with S3 answering.
    env.UPLOAD_QUEUE_MAX_BYTES = String(settings.queueMaxBytes ?? 32 * 1024 * 1024);
  }
  if (client === "collector, S3 down") {
    Object.assign(env, {
      S3_BUCKET_NAME: "l2-bench",
      S3_ENDPOINT: `http://127.0.0.1:${closedPort()}`,
      S3_FORCE_PATH_STYLE: "true",
      AWS_REGION: "us-east-1",
      AWS_ACCESS_KEY_ID: "bench",
      AWS_SECRET_ACCESS_KEY: "bench",
      AWS_EC2_METADATA_DISABLED: "true",
      UPLOAD_QUEUE_MAX_BYTES: String(settings.queueMaxBytes ?? 32 * 1024 * 1024),
    });
  }
  return { ...env, ...settings.collectorEnv };
}

async function stopCollector(
  collector: CollectorChild,
  notes: string[],
): Promise<{ code: number; killed: boolean }> {
  if (collector.hasExited) notes.push(`exited before SIGTERM: ${lastLine(collector.stderr())}`);
  return await collector.stop(60_000);
}

/** Runs the collector once more on the same DATA_DIR; its start-up stores what the journal kept. */
async function recoverWith(
  env: Record<string, string>,
  exchange: ChildChannel,
  load: Load,
  notes: string[],
): Promise<void> {
  const again = spawnCollector(env);
  try {
    await Promise.race([waitForConnections(exchange, connectionsOf(load)), again.exited]);
    await waitForIdle(again.pid, { minMs: 1000, maxMs: 60_000 });
    const { code } = await again.stop(60_000);
    if (code !== 0) notes.push(`the recovering start exited with ${code}`);
  } finally {
    again.signal("SIGKILL");
    await again.exited;
  }
}

async function journalLeft(dataDir: string): Promise<boolean> {
  try {
    for await (const entry of Deno.readDir(join(dataDir, "journal"))) {
      if (
        entry.name.endsWith(".jnl") &&
        (await Deno.stat(join(dataDir, "journal", entry.name))).size > 0
      ) {
        return true;
      }
    }
  } catch {
    // no journal directory: nothing left
  }
  return false;
}

/** Per stream: what was sent and not stored (missing), what was stored beyond that (extra). */
function compare(
  sent: Record<string, number>,
  archive: ArchiveCount,
): { missing: number; extra: number } {
  let missing = 0;
  let extra = archive.duplicates;
  for (const [stream, n] of Object.entries(sent)) {
    const kept = archive.perStream.get(stream) ?? 0;
    if (kept < n) missing += n - kept;
    else extra += kept - n;
  }
  for (const [stream, kept] of archive.perStream) if (!(stream in sent)) extra += kept;
  return { missing, extra };
}

function lastLine(text: string): string {
  return text.trim().split("\n").at(-1)?.slice(0, 300) ?? "";
}

/** Errors the collector logged, so the table can say why a run went wrong. */
function noteLogProblems(stderr: string, notes: string[]): void {
  const lines = stderr.split("\n");
  const errors = lines.filter((l) => /\[(ERR|FTL)\]/.test(l));
  const warnings = lines.filter((l) => /\[WRN\]/.test(l));
  if (errors.length > 0) {
    notes.push(
      `${errors.length} ERROR log lines, e.g. "${errors[0].replace(/^\S+ /, "").slice(0, 160)}"`,
    );
  }
  if (warnings.length > 0) notes.push(`${warnings.length} WARN log lines`);
}

interface CpuSample {
  readonly client: number;
  readonly exchange: number;
  readonly clientMain: number;
  readonly clientWorkers: number;
  readonly machine: number;
  readonly bench: number;
}

interface Window<T> {
  /**
   * The client's threads' run times at the start (`threadRunTimes`), and the
   * latest of each thread read every second over the window (`latestRunTimes`).
   */
  readonly runTimes0: ReadonlyMap<number, number> | undefined;
  readonly runTimes1: ReadonlyMap<number, number> | undefined;
  readonly before: T;
  readonly after: T;
  readonly cpu0: CpuSample;
  readonly cpu1: CpuSample;
  readonly seconds: number;
  /** The window in µs since the epoch, to pick stored lines by receive time. */
  readonly range: { fromUs: number; toUs: number };
}

/** Warm-up, then CPU times and `stats()` at both ends of the measured window. */
async function measureWindow<T>(
  settings: RunSettings,
  [client, exchange]: readonly [number, number],
  stats: () => Promise<T>,
): Promise<Window<T>> {
  await sleep(settings.warmupMs);
  const snap = async () => {
    const orNaN = async (value: Promise<number | undefined>) => (await value) ?? NaN;
    const [runTimes, c, e, m, w, all, self] = await Promise.all([
      threadRunTimes(client),
      orNaN(cpuSeconds(client)),
      orNaN(cpuSeconds(exchange)),
      // The client's main thread: where JavaScript runs.
      orNaN(cpuSeconds(client, client)),
      // The collector's gzip worker.
      orNaN(threadsCpuSeconds(client, "worker-")),
      machineBusySeconds(),
      orNaN(cpuSeconds(Deno.pid)),
    ]);
    const at = performance.now();
    const wall = Date.now();
    const cpu: CpuSample = {
      client: c,
      exchange: e,
      clientMain: m,
      clientWorkers: w,
      machine: all,
      bench: self,
    };
    return { cpu, runTimes, at, wall, stats: await stats() };
  };
  const start = await snap();
  // Threads are read every second too, so one that exits in the window keeps what it ran.
  const readings = [start.runTimes];
  const until = performance.now() + settings.windowMs;
  for (let left = settings.windowMs; left > 0; left = until - performance.now()) {
    await sleep(Math.min(1000, left));
    if (performance.now() < until) readings.push(await threadRunTimes(client));
  }
  const end = await snap();
  return {
    before: start.stats,
    after: end.stats,
    cpu0: start.cpu,
    cpu1: end.cpu,
    runTimes0: start.runTimes,
    runTimes1: latestRunTimes([...readings, end.runTimes]),
    seconds: (end.at - start.at) / 1000,
    range: { fromUs: start.wall * 1000, toUs: end.wall * 1000 },
  };
}

function cpuFigures(window: Window<unknown>, messages: number) {
  const d = (key: keyof CpuSample) => window.cpu1[key] - window.cpu0[key];
  const client = d("client");
  return {
    cpuCores: client / window.seconds,
    exactCpuCores: exactCores(window.runTimes0, window.runTimes1, window.seconds),
    cpuSecPerMillion: messages > 0 ? client / messages * 1e6 : NaN,
    mainThreadShare: client > 0 ? d("clientMain") / client : NaN,
    workerShare: client > 0 ? d("clientWorkers") / client : NaN,
    exchangeCores: d("exchange") / window.seconds,
    otherCores: Math.max(0, d("machine") - client - d("exchange") - d("bench")) / window.seconds,
  };
}

async function waitForConnections(exchange: ChildChannel, expected: number): Promise<void> {
  const deadline = performance.now() + 60_000;
  while (performance.now() < deadline) {
    const { open } = await exchange.ask<ExchangeStats>("stats");
    if (open >= expected) return;
    await sleep(200);
  }
  throw new Error(`fewer than ${expected} connections opened within 60 s`);
}

/** A loopback port nothing listens on: S3 "down" answers every connect with a refusal. */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}
