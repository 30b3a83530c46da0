/**
 * `l2-uploader run`: the supervisor. It starts the stages (cli/stages/) in
 * order and stops them in order; each stage owns its resources and is
 * disposed (`await using`) in reverse order of its start, also when the
 * start fails half-way. docs/DESIGN.md "Architecture" draws them.
 *
 * Start-up: DATA_DIR writable and locked → ops (restart history, power
 * assertion) → storage (sink reachable: a wrong bucket or credentials stop
 * here, an unreachable S3 does not → spool opened → batches left in the
 * crash journal recovered and submitted → drainer) → feeds (symbols checked
 * against exchangeInfo) → ops running (receive clock, status server, health)
 * → recording starts.
 * Shutdown: close the connections (frames in flight still arrive) → seal
 * every batch → store within the budget, spool the rest → drainer stopped →
 * journal closed → report; then ops stop.
 */

import { getLogger } from "@logtape/logtape";
import { Beat } from "../beat.ts";
import { KEPT_FILES_PROBE, keptFilesBudget, spareDescriptors } from "../batch/file_appends.ts";
import type { Config } from "../config_types.ts";
import type { WebSocketFactory } from "../feed/connection.ts";
import { type DataDirLock, describeHolder, lockDataDir } from "../ops/data_dir_lock.ts";
import { Metrics } from "../ops/metrics.ts";
import { probeWritable } from "../ops/writable.ts";
import { readLastReceive } from "../ops/receive_state.ts";
import { Feeds } from "./stages/feeds.ts";
import { Ops } from "./stages/ops.ts";
import { StartupError, startupStep } from "./stages/startup.ts";
import { Storage } from "./stages/storage.ts";

export { StartupError };

const log = getLogger(["l2", "run"]);

export interface RunOptions {
  /** Aborted by the first SIGTERM/SIGINT. */
  readonly shutdown: AbortSignal;
  readonly webSocket?: WebSocketFactory;
  readonly fetch?: typeof fetch;
  readonly nowMicros?: () => number;
  /** Clocks the receive clock reads (tests step the wall clock); default Date.now, performance.now. */
  readonly wallMs?: () => number;
  readonly monotonicMs?: () => number;
  readonly metrics?: Metrics;
  /** Total time allowed from the shutdown signal to return, ms. */
  readonly shutdownBudgetMs?: number;
  /** Called once recording has started (tests wait on it). */
  readonly onStarted?: () => void;
  /** Shown by /status; main passes VERSION. */
  readonly version?: string;
  /** Wall-clock ms for health, restart history and alerts. */
  readonly now?: () => number;
}

export async function run(config: Config, options: RunOptions): Promise<void> {
  await ensureWritable(config.dataDir);
  // Before the journal, the spool or the restart history is touched.
  using _lock = await holdDataDir(config.dataDir);
  const noteCleanStop = await record(config, options);
  // Once every stage is disposed: an error while disposing is not a clean stop.
  await noteCleanStop();
}

/** Records until the shutdown; returns what notes the clean stop in the restart history. */
async function record(config: Config, options: RunOptions): Promise<() => Promise<void>> {
  const metrics = options.metrics ??
    new Metrics({ market: config.market, perStream: config.metricsPerStream ?? false });
  const now = options.now ?? Date.now;
  const { fetch, webSocket } = options;
  // Aborted once uploads are flushed: the drainer, then the status server and the health loop.
  const background = new AbortController();
  // Aborted first at shutdown: connections, snapshots, the exchangeInfo refresh.
  const feedStop = new AbortController();
  const signal = background.signal;
  const { wallMs, monotonicMs, version } = options;
  // Counted before anything else holds descriptors.
  const keepFiles = keptFilesAtStart();
  // The seal tick, the journal's flush and the receive clock share one timer (beat.ts).
  using beat = new Beat(250);
  await using ops = await Ops.open(config, {
    signal,
    metrics,
    now,
    wallMs,
    monotonicMs,
    version,
  });
  // A SIGTERM during start-up stops the waits for S3 and Binance, and nothing is recorded.
  const interrupt = options.shutdown;
  await using storage = await Storage.open(config, {
    previousRecvTs: await readLastReceive(config.dataDir),
    interrupt,
    signal,
    metrics,
    telemetry: ops.telemetry,
    now,
    nowMicros: options.nowMicros,
    ticker: beat,
    keepFiles,
  });
  await using feeds = await Feeds.open(config, {
    interrupt,
    signal: feedStop.signal,
    store: storage,
    metrics,
    telemetry: ops.telemetry,
    now,
    webSocket,
    fetch,
    ticker: beat,
  });
  if (!interrupt.aborted) startRecording(ops, storage, feeds, options);
  await aborted(options.shutdown);

  const deadline = Date.now() + (options.shutdownBudgetMs ?? 9000);
  log.info("Shutting down: closing connections, then sealing and storing open batches");
  feedStop.abort();
  await feeds.stopped();
  feeds.sealAll();
  const left = await storage.flush(deadline);
  background.abort();
  await storage.close(left);
  return ops.noteCleanStop;
}

/** Every stage is open: the status server and the receive clock start, then the feeds. */
function startRecording(ops: Ops, storage: Storage, feeds: Feeds, options: RunOptions): void {
  const clock = ops.start(storage, feeds);
  const nowMicros = options.nowMicros ?? clock.nowMicros;
  storage.stampWith(nowMicros);
  feeds.record({ nowMicros, tick: () => clock.tick() });
  ops.recordingStarted();
  options.onStarted?.();
}

/** How many batch files the gzip worker may keep open, from the descriptors free now; logged. */
function keptFilesAtStart(): number {
  const spare = spareDescriptors(KEPT_FILES_PROBE);
  const keepFiles = keptFilesBudget(spare);
  log.info("Journal: up to {keepFiles} batch files kept open ({spare} descriptors free at start)", {
    keepFiles,
    spare: spare < KEPT_FILES_PROBE ? String(spare) : `${spare} or more`,
  });
  return keepFiles;
}

function aborted(signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal.aborted) resolve();
    signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

/** The DATA_DIR lock, or a start-up error naming who holds it. */
async function holdDataDir(dataDir: string): Promise<DataDirLock> {
  const result = await startupStep("lock DATA_DIR", () => lockDataDir(dataDir));
  if ("lock" in result) return result.lock;
  throw new StartupError(
    `DATA_DIR "${dataDir}" is in use by another l2-uploader (${
      describeHolder(result.holder)
    }); two instances need two DATA_DIRs and two INSTANCE_IDs`,
  );
}

/** DATA_DIR must exist (or be creatable) and take a write and a rename. */
async function ensureWritable(dataDir: string): Promise<void> {
  try {
    await probeWritable(dataDir);
  } catch (error) {
    throw new StartupError(
      `DATA_DIR "${dataDir}" is not writable: ${(error as Error).message}`,
    );
  }
}
