/**
 * The storage stage of `run`: everything between a sealed batch and the
 * archive. It selects the sink and checks the bucket, opens the spool,
 * recovers the crash journal and resubmits what it held, and runs the
 * batcher, the uploader, the spool's drainer and the hole marker.
 *
 * Start-up (`Storage.open`): sink reachable (a wrong bucket or credentials
 * stop here, an unreachable S3 does not) → spool opened → journal recovered
 * and its batches submitted → drainer running.
 * Shutdown: `flush` stores within the budget and spools the rest; after the
 * supervisor aborts the signal, `close` waits for the drainer, closes the
 * journal and reports. Disposal releases the gzip workers and the sink, also
 * after an error.
 */

import { getLogger } from "@logtape/logtape";
import { join } from "node:path";
import { Batcher, type SealedBatch } from "../../batch/batcher.ts";
import { ChunkPool } from "../../batch/chunks.ts";
import { GzipPool, workerAppender, workerDeflater } from "../../batch/compress.ts";
import { HoleMarker } from "../../batch/holes.ts";
import {
  Journal,
  type RecoveredJournal,
  recoverJournal,
  removeSettledFiles,
} from "../../store/journal.ts";
import { planKey } from "../../archive/keys.ts";
import type { Ticker } from "../../beat.ts";
import { decodeLine } from "../../archive/decode.ts";
import { parseStreamName } from "../../binance/streams.ts";
import type { Config } from "../../config_types.ts";
import type { Telemetry } from "../../ops/events.ts";
import type { Metrics } from "../../ops/metrics.ts";
import { type BatchBudget, batchBudget } from "../../store/budget.ts";
import { type Drainer, type LostReason, startDrainer } from "../../store/drainer.ts";
import { lineKindOf } from "../../archive/meta.ts";
import { checkBucket, type SelectedSink, selectSink } from "../../store/select.ts";
import type { Sink } from "../../store/sink.ts";
import { Spool, type SpooledBatch } from "../../store/spool.ts";
import { type SettledHow, Uploader } from "../../store/uploader.ts";
import { START_WAIT_MS, StartupError, startupStep } from "./startup.ts";
import { settledWithin } from "../../delay.ts";
import { continueFrom, writeLastReceive } from "../../ops/receive_state.ts";

const log = getLogger(["l2", "run"]);

export interface StorageOptions {
  /** A shutdown asked for during start-up: the bucket check stops waiting for S3. */
  readonly interrupt?: AbortSignal;
  readonly metrics: Metrics;
  /** Named events: log lines, metrics, and the state health reads. */
  readonly telemetry: Telemetry;
  /** Wall-clock ms (time of the last upload). */
  readonly now: () => number;
  /** Aborted by the supervisor once uploads are flushed: the drainer stops. */
  readonly signal: AbortSignal;
  /** Stamps `dropped` lines until `stampWith` hands over the receive clock; default the wall clock. */
  readonly nowMicros?: () => number;
  /** Runs the journal's flush (default: a timer of its own). */
  readonly ticker?: Ticker;
  /** Batch files the gzip worker may keep open (`keptFilesBudget`); default none. */
  readonly keepFiles?: number;
  /** The last receive time the run before stored at its clean stop (ops/receive_state.ts), µs. */
  readonly previousRecvTs?: number;
}

/** What the feeds need of storage: where lines go, and where sealed batches go. */
export interface BatchStore {
  readonly batcher: Batcher;
  submit(batch: SealedBatch): void;
  /** The archive, as the start-up line names it. */
  readonly sink: Pick<Sink, "kind" | "location">;
}

/** The batches recovered from the crash journal, settled one by one before their files go. */
interface Recovery {
  readonly journal: Journal;
  readonly recovered: RecoveredJournal;
}

export class Storage implements BatchStore, AsyncDisposable {
  readonly batcher: Batcher;
  readonly sink: Sink;
  readonly #config: Config;
  readonly #options: StorageOptions;
  readonly #selected: SelectedSink;
  readonly #spool: Spool | undefined;
  /**
   * The spool the drainer empties: the spool itself with S3; with a local
   * archive, batches an earlier run spooled while its S3 was down, if any.
   */
  readonly #drained: Spool | undefined;
  readonly #gzip: GzipPool;
  readonly #journal: Journal;
  readonly #budget: BatchBudget;
  readonly #uploader: Uploader;
  readonly #holes: HoleMarker;
  readonly #recoveredFiles: readonly string[];
  readonly #recoveredKeys: Set<string>;
  #recoveredLeft: number;
  /**
   * The last receive time of the run before (its stored one, or its crash
   * journal's latest), µs: this run's receive times come after it.
   */
  readonly receivedUntil: number | undefined;
  /** The removal of earlier runs' journal files, once started: awaited before the process ends. */
  #removal: Promise<void> | undefined;
  readonly #stop = new AbortController();
  #drainer: Drainer | undefined;
  #receiveMicros: () => number;

  /** Sink reachable → spool → journal recovered → its batches submitted → drainer. */
  static async open(config: Config, options: StorageOptions): Promise<Storage> {
    await using stack = new AsyncDisposableStack();
    const selected = await selectSink(config);
    stack.defer(() => selected.close());
    const sink = options.metrics.timeSink(selected.sink);
    await checkReachable(selected, options.interrupt);
    const { spool, leftover } = await openSpool(config, selected, options.telemetry);
    // Compression off the main thread, which stamps receive times. Open
    // batches are compressed piece by piece as they grow (batch/body.ts).
    const gzip = stack.use(new GzipPool({ level: config.gzipLevel, keepFiles: options.keepFiles }));
    const pool = new ChunkPool();
    const recovery = await Storage.#recoverJournal(config, options, pool, gzip);
    const storage = new Storage(config, options, {
      selected,
      sink,
      spool,
      leftover,
      gzip,
      pool,
      recovery,
    });
    stack.move();
    // Stored at once: should this run stop before its receive clock runs (or not cleanly),
    // the next one still continues after what the journal held.
    const until = storage.receivedUntil;
    if (until !== undefined && until !== options.previousRecvTs) {
      await writeLastReceive(config.dataDir, until);
    }
    await storage.#resubmit(recovery.recovered);
    storage.#drainer = storage.#startDrainer();
    return storage;
  }

  private constructor(
    config: Config,
    options: StorageOptions,
    parts: {
      selected: SelectedSink;
      sink: Sink;
      spool: Spool | undefined;
      leftover: Spool | undefined;
      gzip: GzipPool;
      pool: ChunkPool;
      recovery: Recovery;
    },
  ) {
    this.#config = config;
    this.#options = options;
    this.#selected = parts.selected;
    this.sink = parts.sink;
    this.#spool = parts.spool;
    this.#drained = parts.spool ?? parts.leftover;
    this.#gzip = parts.gzip;
    this.#journal = parts.recovery.journal;
    this.#recoveredFiles = parts.recovery.recovered.files;
    this.#recoveredKeys = new Set(parts.recovery.recovered.batches.map((b) => b.key));
    this.#recoveredLeft = parts.recovery.recovered.batches.length;
    // Open batches may hold up to 4 × the upload queue in memory (text not
    // yet compressed, and compressed pieces the journal has not yet written);
    // beyond it the oldest seal early (many streams × BATCH_SECONDS would be
    // unbounded). Without a spool the queue counts batches the same way. See
    // store/budget.ts.
    this.#budget = batchBudget(config.uploadQueueMaxBytes);
    this.batcher = new Batcher({
      batchMs: config.batchSeconds * 1000,
      maxLines: config.maxMessagesPerBatch,
      maxOpenBytes: (): number => this.#budget.openBound(this.#uploader.borrowedBytes),
      observer: this.#journal,
      pool: parts.pool,
      deflater: workerDeflater(parts.gzip),
      planKey: (stream, firstRecvTs, seq) => keyFor(config, stream, firstRecvTs, seq),
    });
    this.#uploader = this.#newUploader();
    const recoveredUntil = parts.recovery.recovered.batches.map((b) => b.meta.lastRecvTs);
    const until = continueFrom([options.previousRecvTs, ...recoveredUntil], options.now());
    this.receivedUntil = until;
    // Losses during start-up (before the receive clock runs) are stamped by the wall clock,
    // after the run before.
    this.#receiveMicros = options.nowMicros ??
      (() => Math.max(Date.now() * 1000, (until ?? -Infinity) + 1));
    // Every lost batch leaves a `dropped` line in its stream's next batch.
    this.#holes = new HoleMarker({
      nowMicros: () => this.#receiveMicros(),
      mark: (stream, text, recvTs) => {
        const sealed = this.batcher.add(stream, { text, recvTs, isData: false }, performance.now());
        if (sealed) this.submit(sealed);
      },
      keyFor: (stream, recvTs) => this.batcher.keyFor(stream, recvTs),
    });
  }

  /** From now on `dropped` lines carry receive times of this clock. */
  stampWith(nowMicros: () => number): void {
    this.#receiveMicros = nowMicros;
  }

  submit(batch: SealedBatch): void {
    this.#uploader.submit(batch);
  }

  /** Sealed batches not yet stored: the uploader's pending ones plus the spool's. */
  backlog(): number {
    return this.#uploader.pending + (this.#drained?.count ?? 0);
  }

  /** SPOOL_MAX_BYTES when there is a spool (S3 sink). */
  get spoolMaxBytes(): number | undefined {
    return this.#spool?.maxBytes;
  }

  openBatches(): { bytes: number; textBytes: number } {
    return { bytes: this.batcher.openBytes, textBytes: this.batcher.openTextBytes };
  }

  /**
   * Stores what is queued until `deadline` (ms, wall clock), keeping 1.5 s to
   * spool the rest and for puts to return once cancelled; returns what is left.
   */
  flush(deadline: number): Promise<SealedBatch[]> {
    return flushWithMarks(
      { uploader: this.#uploader, batcher: this.batcher, holes: this.#holes },
      deadline,
    );
  }

  /** After the signal aborted: the drainer stopped, the journal closed, the outcome logged. */
  async close(left: readonly SealedBatch[]): Promise<void> {
    await this.#drainer?.done;
    await this.#removal;
    await this.#journal.close();
    reportShutdown(left, this.#drained);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#stop.abort();
    this.#gzip[Symbol.dispose]();
    this.#selected.close();
    // An exit right after would cut it short (the next start would finish it).
    await this.#removal;
  }

  /** The crash journal: earlier runs' batches rebuilt, and this run's journal started. */
  static async #recoverJournal(
    config: Config,
    { telemetry, ticker }: Pick<StorageOptions, "telemetry" | "ticker">,
    pool: ChunkPool,
    gzip: GzipPool,
  ): Promise<Recovery> {
    const journalDir = join(config.dataDir, "journal");
    const recovered = await startupStep(
      "read the crash journal",
      () =>
        recoverJournal(journalDir, {
          pool,
          deflater: workerDeflater(gzip),
          rekey: (lines, index) =>
            rekeyLines(lines, index, (s, t, seq) => keyFor(config, s, t, seq)),
        }),
      journalDir,
    );
    const journal = await startupStep(
      "start the crash journal",
      () =>
        Journal.start(journalDir, {
          appender: workerAppender(gzip),
          onWriteFailed: () => telemetry.diskWriteFailed("journal"),
          ticker,
        }),
      journalDir,
    );
    return { journal, recovered };
  }

  async #resubmit(recovered: RecoveredJournal): Promise<void> {
    if (recovered.batches.length > 0) {
      log.warn("Recovered {batches} batches ({messages} messages) from the crash journal", {
        batches: recovered.batches.length,
        messages: recovered.batches.reduce((n, b) => n + b.meta.messages, 0),
      });
      for (const batch of recovered.batches) this.#uploader.submit(batch, { keep: true });
    } else {
      await this.#removeRecovered(recovered.files);
    }
  }

  /** Earlier runs' journal files, once their batches are settled; a failure is logged (the next start tries again). */
  async #removeRecovered(files: readonly string[]): Promise<void> {
    try {
      await removeSettledFiles(files);
    } catch (error) {
      log.warn("Could not remove the journal files of settled batches: {error}", {
        error: error instanceof Error ? error.message : String(error),
      });
    }
  }

  #newUploader(): Uploader {
    const { telemetry } = this.#options;
    return new Uploader({
      sink: this.sink,
      spool: this.#spool,
      concurrency: this.#config.uploadConcurrency,
      maxQueueBytes: this.#config.uploadQueueMaxBytes,
      // With no spool to overflow into, sealed batches may use the part of
      // the open-batch budget left unused (they were counted there until they
      // sealed): a burst of seals, or shutdown, then drops nothing.
      borrowable: (): number => this.#budget.lendable(this.batcher.openHeldBytes),
      isRetryable: this.#selected.isRetryable,
      onQueueBytes: (bytes) => telemetry.uploadQueueChanged(bytes),
      onSpoolWriteFailed: () => telemetry.diskWriteFailed("spool"),
      onFailedAttempt: () => telemetry.uploadFailed(),
      onSettled: (batch, how, bytes, reason) => this.#settled(batch, how, bytes, reason),
    });
  }

  /** A batch stored, spooled or dropped: metrics, holes, the journal, the recovered files. */
  #settled(batch: SealedBatch, how: SettledHow, bytes: number, reason?: string): void {
    if (how === "stored") {
      // The sink works again: the spool need not wait out its backoff.
      if (this.#drained && this.#drained.count > 0) this.#drainer?.nudge();
      this.#countStored(bytes);
    } else if (how === "dropped") {
      this.#options.telemetry.batchDropped(batch.meta.messages);
      this.#holes.lost(batch, reason ?? "dropped");
    }
    if (how === "stored" || how === "spooled") this.#holes.kept(batch);
    this.#updateSpoolGauges();
    this.#journal.settled(batch.key);
    if (this.#recoveredKeys.delete(batch.key) && --this.#recoveredLeft === 0) {
      this.#removal = this.#removeRecovered(this.#recoveredFiles);
    }
  }

  #countStored(bytes: number): void {
    this.#options.telemetry.batchStored(this.sink.kind, bytes);
  }

  #updateSpoolGauges(): void {
    spoolChanged(this.#options.telemetry, this.#drained);
  }

  #startDrainer(): Drainer | undefined {
    if (!this.#drained) return undefined;
    const { telemetry } = this.#options;
    return startDrainer({
      spool: this.#drained,
      sink: this.sink,
      signal: AbortSignal.any([this.#options.signal, this.#stop.signal]),
      concurrency: this.#config.uploadConcurrency,
      onStored: (_key, bytes) => {
        this.#countStored(bytes);
        this.#updateSpoolGauges();
      },
      onFailedAttempt: () => telemetry.uploadFailed(),
      onQuarantined: () => this.#updateSpoolGauges(),
      onLost: (name, batch, reason) => this.#spoolLost(name, batch, reason),
      isRetryable: this.#selected.isRetryable,
    });
  }

  /**
   * A spooled batch lost (its file damaged or removed): counted, and a
   * `dropped` line in its stream's next batch when the file told enough.
   */
  #spoolLost(name: string, batch: SpooledBatch | undefined, reason: LostReason): void {
    this.#updateSpoolGauges();
    if (!batch) return;
    this.#options.telemetry.batchDropped(batch.meta.messages);
    this.#holes.lost({ ...batch, key: batch.key ?? `spool/${name}` }, reason);
  }
}

/** Of the shutdown budget, kept to spool what was not stored and for cancelled puts to return, ms. */
const SPOOL_RESERVE_MS = 1500;

/** Rounds of sealing `dropped` lines at shutdown; each round's batches are few (one per stream). */
const MARK_ROUNDS = 3;

/**
 * The uploader's flush, after every batch sealed at shutdown: a batch lost
 * meanwhile (a full queue or spool) left its `dropped` line in a new open
 * batch, which is sealed and submitted in turn, so the stopped archive
 * explains its holes. A line still open when the rounds or the time run
 * out stays in the crash journal for the next start.
 */
export async function flushWithMarks(
  parts: {
    readonly uploader: Pick<Uploader, "idle" | "flush" | "submit">;
    readonly batcher: Pick<Batcher, "sealAll">;
    readonly holes: Pick<HoleMarker, "markHeld">;
  },
  deadline: number,
): Promise<SealedBatch[]> {
  const { uploader, batcher, holes } = parts;
  const signal = AbortSignal.timeout(Math.max(0, deadline - Date.now() - SPOOL_RESERVE_MS));
  for (let round = 0; round < MARK_ROUNDS; round++) {
    await uploader.idle(signal);
    if (signal.aborted) break;
    holes.markHeld();
    const sealed = batcher.sealAll();
    if (sealed.length === 0) break;
    for (const batch of sealed) uploader.submit(batch);
  }
  // Cancelled puts get until the deadline to return, so the shutdown keeps its budget:
  // the grace is measured once the store phase is over.
  await uploader.idle(signal);
  return await uploader.flush(signal, Math.max(0, deadline - Date.now()));
}

const BUCKET_CHECK_TIMEOUT_MS = 15_000;

/**
 * S3: HeadBucket. A wrong bucket or credentials stop the start; an
 * unreachable S3 does not, nor one that has not answered within
 * `START_WAIT_MS` (a later refusal is logged as an error).
 */
async function checkReachable(selected: SelectedSink, interrupt?: AbortSignal): Promise<void> {
  if (!selected.s3) return;
  const timeout = AbortSignal.timeout(BUCKET_CHECK_TIMEOUT_MS);
  const checking = checkBucket(
    selected.s3,
    interrupt ? AbortSignal.any([timeout, interrupt]) : timeout,
  );
  const check = await settledWithin(checking, START_WAIT_MS);
  if (interrupt?.aborted) return;
  if (check === undefined) {
    log.warn(
      "{sink} has not answered HeadBucket in {seconds} s; recording anyway and spooling until it answers",
      { sink: selected.s3.describe(), seconds: START_WAIT_MS / 1000 },
    );
    checking.then((late) => {
      if (!late.ok && late.permanent && !interrupt?.aborted) {
        log.error("{message}; batches are spooled until it is fixed", { message: late.message });
      }
    });
    return;
  }
  if (!check.ok && check.permanent) throw new StartupError(check.message);
  if (!check.ok) {
    log.warn("{message}; recording anyway and spooling until it is back", {
      message: check.message,
    });
  }
}

/**
 * The spool, with an S3 sink only (a local archive needs none); with a local
 * archive, the spool an earlier run with S3 left behind, if it holds
 * batches: they are drained into the local archive, not left stranded.
 */
async function openSpool(
  config: Config,
  selected: SelectedSink,
  telemetry: Telemetry,
): Promise<{ spool?: Spool; leftover?: Spool }> {
  const dir = join(config.dataDir, "spool");
  const open = () => Spool.open(dir, { maxBytes: config.spoolMaxBytes });
  const spool = selected.s3 ? await startupStep("open the spool", open, dir) : undefined;
  const leftover = !spool && await holdsSpoolFiles(dir)
    ? await startupStep("open the spool left by an earlier run", open, dir)
    : undefined;
  const drained = spool ?? leftover;
  if (drained && drained.count > 0) {
    log.info("Spool holds {count} batches ({bytes} bytes) from earlier; draining them to {sink}", {
      count: drained.count,
      bytes: drained.bytes,
      sink: selected.sink.location,
    });
  }
  spoolChanged(telemetry, drained);
  if (spool) telemetry.spoolOpened(spool.maxBytes);
  return { spool, leftover };
}

/**
 * Whether `dir` holds a spool file. A missing directory holds none; nor
 * does something else at its place (a file): a local archive needs no
 * spool, so that is logged and recording goes on. Any other failure to
 * list it (no permission) stops the start, naming it: batches an earlier
 * run spooled may wait there.
 */
async function holdsSpoolFiles(dir: string): Promise<boolean> {
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isFile && entry.name.endsWith(".spool")) return true;
    }
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    if (error instanceof Deno.errors.NotADirectory) {
      const why = "so it holds no spooled batches; a local archive needs no spool";
      log.warn("{dir} is not a directory, {why}", { dir, why });
      return false;
    }
    throw new StartupError(
      `cannot look for batches an earlier run spooled in ${dir}: ${
        error instanceof Error ? error.message : String(error)
      }`,
    );
  }
  return false;
}

function spoolChanged(telemetry: Telemetry, spool: Spool | undefined): void {
  telemetry.spoolChanged(spool ?? { bytes: 0, count: 0 });
}

/**
 * The archive key of a batch (archive/keys.ts), from its stream's name; the
 * symbol in NFC, as DESIGN's keys and `--symbol` have it (upper-casing a
 * lower-cased `İ` gives `I` and a combining dot).
 */
export function keyFor(config: Config, stream: string, firstRecvTs: number, seq: number): string {
  const spec = parseStreamName(stream) ?? { symbol: "UNKNOWN", type: stream };
  return planKey({
    prefix: config.prefix,
    market: config.market,
    streamType: spec.type,
    symbol: spec.symbol.normalize("NFC"),
    firstRecvTs,
    instanceId: config.instanceId,
    seq,
  });
}

function reportShutdown(left: readonly SealedBatch[], spool: Spool | undefined): void {
  if (left.length > 0) {
    log.error(
      "Shutdown budget ran out with {batches} batches ({messages} messages) not stored; " +
        "the crash journal keeps them for the next start",
      { batches: left.length, messages: left.reduce((n, b) => n + b.meta.messages, 0) },
    );
  } else if (spool && spool.count > 0) {
    log.warn("Shutdown complete; {count} batches wait in the spool for the next start", {
      count: spool.count,
    });
  } else {
    log.info("Shutdown complete: every batch stored");
  }
}

/** Batch numbers of batches rebuilt without their open record: far above any run's own. */
const REKEYED_SEQ_BASE = 900_000;

/**
 * Key and stream of a journal batch whose open record is damaged: the
 * stream of its first line that is not a snapshot (snapshots join the diff
 * stream's batch), the first line's receive time, a batch number of its own.
 */
function rekeyLines(
  lines: readonly string[],
  index: number,
  keyFor: (stream: string, firstRecvTs: number, seq: number) => string,
): { key: string; stream: string } | undefined {
  const decoded = lines.map(decodeLine);
  const firstRecvTs = decoded[0]?.recvTs;
  const stream = decoded.map((line) => line.kind === "malformed" ? undefined : line.stream)
    .find((name) => name !== undefined && lineKindOf(name, false) !== "snapshot");
  if (firstRecvTs === undefined || stream === undefined) return undefined;
  return { key: keyFor(stream, firstRecvTs, REKEYED_SEQ_BASE + index), stream };
}
