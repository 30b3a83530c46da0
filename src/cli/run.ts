/**
 * `l2-uploader run`: wires the stages (feed → recorder → batcher + journal →
 * uploader → sink, with spool and drainer beside the S3 sink) and owns the
 * start-up and shutdown order.
 *
 * Start-up: DATA_DIR writable → sink reachable (a wrong bucket or credentials
 * stop here, an unreachable S3 does not) → spool opened → batches left in the
 * crash journal recovered and submitted → recording starts.
 * Shutdown: close the connections (frames in flight still arrive) → seal
 * every batch → store within the budget, spool the rest → return.
 */

import { getLogger } from "@logtape/logtape";
import { join } from "node:path";
import { Batcher, type SealedBatch } from "../batch/batcher.ts";
import { ChunkPool } from "../batch/chunks.ts";
import { HoleMarker } from "../batch/holes.ts";
import { GzipPool, workerDeflater } from "../batch/compress.ts";
import { Journal, recoverJournal } from "../store/journal.ts";
import { planKey } from "../batch/keys.ts";
import { updateIds } from "../binance/frames.ts";
import { watchClock } from "../binance/clock.ts";
import { readExchangeInfo, RestLimiter } from "../binance/rest.ts";
import { type Listing, matchesTerm, namedSymbols } from "../binance/selection.ts";
import { inShard } from "../binance/shard.ts";
import { sequenceRuleFor } from "../binance/sequence.ts";
import { Snapshotter } from "../binance/snapshots.ts";
import {
  depthStreamType,
  parseStreamName,
  planConnection,
  streamBaseUrl,
  SUBSCRIBE_INTERVAL_MS,
  symbolStreams,
} from "../binance/streams.ts";
import type { Config } from "../config_types.ts";
import {
  type ConnectionHandlers,
  startConnection,
  type WebSocketFactory,
} from "../feed/connection.ts";
import { TICK_MS } from "../feed/clock.ts";
import { startClock } from "./suspension.ts";
import { AttemptLimiter } from "../feed/rate_limit.ts";
import { Activity } from "../ops/activity.ts";
import { AlertNotifier, watchHealth } from "../ops/alerts.ts";
import { HealthTracker } from "../ops/health.ts";
import {
  handler as opsHandler,
  observe,
  type OpsDeps,
  type OpsServer,
  serveOps,
} from "../ops/http.ts";
import { Metrics } from "../ops/metrics.ts";
import { preventSleep } from "../ops/power.ts";
import { countRestarts, recordStart } from "../ops/restarts.ts";
import { exposureWarning } from "../ops/exposure.ts";
import { redactUrls } from "../ops/redact.ts";
import { type DataDirLock, describeHolder, lockDataDir } from "../ops/data_dir_lock.ts";
import { Recorder, type StreamGroup } from "../recorder.ts";
import { type Drainer, startDrainer } from "../store/drainer.ts";
import { delay } from "../delay.ts";
import { writeAtomically } from "../store/local.ts";
import { lineKindOf, SNAPSHOT_STREAM_SUFFIX, snapshotStreamOf } from "../store/meta.ts";
import { checkBucket, selectSink } from "../store/select.ts";
import { Spool } from "../store/spool.ts";
import { batchBudget } from "../store/budget.ts";
import { Uploader } from "../store/uploader.ts";
import { Universe } from "./universe.ts";

const log = getLogger(["l2", "run"]);

/** A problem found before recording starts; main turns it into exit code 2. */
export class StartupError extends Error {
  override name = "StartupError";
}

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
  await record(config, options);
}

// deno-lint-ignore arch/max-function-lines -- issue 14: not yet split
async function record(config: Config, options: RunOptions): Promise<void> {
  const metrics = options.metrics ?? new Metrics();
  // The lag histogram's series exist from the start (zero), not from the first sampled message.
  metrics.exchangeLag.zero({ market: config.market });
  const now = options.now ?? Date.now;
  const startedAt = now();
  const history = await recordStart(config.dataDir, startedAt);
  if (history.restartsLastHour > 0) {
    log.warn("This is restart {restarts} within the last hour", {
      restarts: history.restartsLastHour,
    });
  }
  const selected = await selectSink(config);
  const sink = metrics.timeSink(selected.sink);
  const background = new AbortController();
  // macOS: a power assertion for as long as this process records.
  const awake = preventSleep({ enabled: config.preventSleep });
  let ops: OpsServer | undefined;
  let healthLoop: Promise<void> | undefined;
  let clockLoop: Promise<void> | undefined;
  let clockOffset: number | undefined;
  try {
    if (selected.s3) {
      const check = await checkBucket(selected.s3);
      if (!check.ok && check.permanent) throw new StartupError(check.message);
      if (!check.ok) {
        log.warn("{message}; recording anyway and spooling until it is back", {
          message: check.message,
        });
      }
    }
    const spool = selected.s3
      ? await startupStep(
        "open the spool",
        () => Spool.open(join(config.dataDir, "spool"), { maxBytes: config.spoolMaxBytes }),
      )
      : undefined;
    if (spool && spool.count > 0) {
      log.info("Spool holds {count} batches ({bytes} bytes) from earlier; draining them", {
        count: spool.count,
        bytes: spool.bytes,
      });
    }
    const updateSpoolGauges = () => {
      metrics.spoolBytes.set(spool?.bytes ?? 0);
      metrics.spoolBatches.set(spool?.count ?? 0);
    };
    updateSpoolGauges();
    if (spool) metrics.spoolMaxBytes.set(spool.maxBytes);
    const storedNow = () => metrics.lastUploadTime.set(now() / 1000);
    // Gaps, disconnects and the messages/s chart for the status page.
    const activity = new Activity();

    const journalDir = join(config.dataDir, "journal");
    const keyFor = (stream: string, firstRecvTs: number, seq: number): string => {
      const spec = parseStreamName(stream) ?? { symbol: "UNKNOWN", type: stream };
      return planKey({
        prefix: config.prefix,
        market: config.market,
        streamType: spec.type,
        symbol: spec.symbol,
        firstRecvTs,
        instanceId: config.instanceId,
        seq,
      });
    };
    // One pool for all batch text: chunks freed by one stream's batch serve the next.
    const pool = new ChunkPool();
    // Compression off the main thread, which stamps receive times. Open
    // batches are compressed piece by piece as they grow (batch/body.ts).
    using gzipPool = new GzipPool({ level: config.gzipLevel });
    const deflater = workerDeflater(gzipPool);
    const recovered = await startupStep(
      "read the crash journal",
      () =>
        recoverJournal(journalDir, {
          describe: describeLine,
          pool,
          deflater,
          rekey: (lines, index) => rekeyLines(lines, index, keyFor),
        }),
    );
    const journal = await startupStep(
      "start the crash journal",
      () =>
        Journal.start(journalDir, {
          onWriteFailed: () => metrics.diskWriteFailures.inc({ target: "journal" }),
        }),
    );
    let recoveredLeft = recovered.batches.length;
    const recoveredKeys = new Set(recovered.batches.map((b) => b.key));

    // Open batches may hold up to 4 × the upload queue of text (in memory,
    // mostly compressed: a fraction of that); beyond it the oldest seal
    // early (many streams × BATCH_SECONDS would be unbounded). The queue
    // counts batches the same way. See store/budget.ts.
    const budget = batchBudget(config.uploadQueueMaxBytes);
    const batcher = new Batcher({
      batchMs: config.batchSeconds * 1000,
      maxLines: config.maxMessagesPerBatch,
      maxOpenBytes: (): number => budget.openBound(uploader.borrowedBytes),
      observer: journal,
      pool,
      deflater,
      planKey: keyFor,
    });
    // Every lost batch leaves a `dropped` line in its stream's next batch.
    // Losses during start-up (before the receive clock runs) are stamped by the wall clock.
    let receiveMicros: () => number = options.nowMicros ?? (() => Date.now() * 1000);
    const holes = new HoleMarker({
      nowMicros: () => receiveMicros(),
      mark: (stream, text, recvTs) => {
        const sealed = batcher.add(stream, { text, recvTs, isData: false }, performance.now());
        if (sealed) uploader.submit(sealed);
      },
    });
    const uploader = new Uploader({
      sink,
      spool,
      concurrency: config.uploadConcurrency,
      maxQueueBytes: config.uploadQueueMaxBytes,
      // With no spool to overflow into, sealed batches may use the part of
      // the open-batch budget left unused (they were counted there until they
      // sealed): a burst of seals, or shutdown, then drops nothing.
      borrowable: (): number => budget.lendable(batcher.openTextBytes),
      isRetryable: selected.isRetryable,
      onQueueBytes: (bytes) => metrics.uploadQueueBytes.set(bytes),
      onSpoolWriteFailed: () => metrics.diskWriteFailures.inc({ target: "spool" }),
      onFailedAttempt: () => {
        metrics.uploadAttempts.inc();
        metrics.uploadFailures.inc();
      },
      onSettled: (batch, how, bytes, reason) => {
        if (how === "stored") {
          // The sink works again: the spool need not wait out its backoff.
          if (spool && spool.count > 0) drainer?.nudge();
          storedNow();
          metrics.uploadAttempts.inc();
          metrics.batchesStored.inc({ sink: sink.kind });
          metrics.bytesStored.inc({ sink: sink.kind }, bytes);
        } else if (how === "dropped") {
          metrics.droppedMessages.inc(batch.meta.messages);
          holes.lost(batch, reason ?? "dropped");
        }
        if (how === "stored" || how === "spooled") holes.kept(batch);
        updateSpoolGauges();
        journal.settled(batch.key);
        if (recoveredKeys.delete(batch.key) && --recoveredLeft === 0) {
          removeFiles(recovered.files);
        }
      },
    });
    if (recovered.batches.length > 0) {
      log.warn("Recovered {batches} batches ({messages} messages) from the crash journal", {
        batches: recovered.batches.length,
        messages: recovered.batches.reduce((n, b) => n + b.meta.messages, 0),
      });
      for (const batch of recovered.batches) uploader.submit(batch, { keep: true });
    } else {
      await removeFiles(recovered.files);
    }

    const drainer: Drainer | undefined = spool
      ? startDrainer({
        spool,
        sink,
        signal: background.signal,
        concurrency: config.uploadConcurrency,
        onStored: (_key, bytes) => {
          storedNow();
          metrics.uploadAttempts.inc();
          metrics.batchesStored.inc({ sink: sink.kind });
          metrics.bytesStored.inc({ sink: sink.kind }, bytes);
          updateSpoolGauges();
        },
        onFailedAttempt: () => {
          metrics.uploadAttempts.inc();
          metrics.uploadFailures.inc();
        },
        onQuarantined: updateSpoolGauges,
      })
      : undefined;

    const restLimiter = new RestLimiter({ market: config.market, fetch: options.fetch });
    const listing = await checkConfiguredSymbols(config, restLimiter);
    const feedStop = new AbortController();
    // Diff mode: snapshots join the diff stream's objects, by symbol.
    const diffStreamOf = new Map<string, string>();
    // Diff mode: symbols whose first snapshot is stored (status shows the others).
    const snapshotted = new Set<string>();
    let snapshotter: Snapshotter | undefined;
    const recorder = new Recorder({
      batcher,
      metrics,
      submit: (b) => uploader.submit(b),
      ruleFor: (stream) => {
        const spec = parseStreamName(stream);
        return spec ? sequenceRuleFor(config.market, spec.type) : undefined;
      },
      onChainStart: (stream) => {
        const spec = parseStreamName(stream);
        // Only the diff depth stream needs a book snapshot (not trades, not the ticker).
        if (spec && diffStreamOf.get(spec.symbol) === stream) {
          snapshotter?.request(spec.symbol, "chain start");
        }
      },
      eventTimeUnit: config.timeUnit,
      onExchangeLag: (seconds) => metrics.exchangeLag.observe({ market: config.market }, seconds),
      onGap: (stream, gap) =>
        activity.event({
          at: now(),
          kind: "gap",
          subject: stream,
          detail: `expected update id ${gap.expected}, received ${gap.received}`,
        }),
    });
    clockLoop = watchClock({
      restUrl: config.restUrl,
      market: config.market,
      fetch: options.fetch,
      now,
      signal: background.signal,
      onOffset: (seconds) => {
        clockOffset = seconds;
        metrics.clockOffset.set(seconds);
      },
    });
    const tracker = new HealthTracker(startedAt);
    // The recorded set, once started (status may be asked before).
    let recorded: Universe | undefined = undefined;
    const clock = startClock({
      config,
      streams: () => recorded?.streams ?? [],
      recorder,
      metrics,
      tracker,
      now,
      wallMs: options.wallMs,
      monotonicMs: options.monotonicMs,
      // After a suspension every connection is replaced at once (not after
      // STALE_AFTER_SECONDS), and diff streams get fresh snapshots.
      onSuspended: () => {
        recorded?.replaceAll("suspended");
        for (const symbol of diffStreamOf.keys()) snapshotter?.request(symbol, "suspended");
      },
    });
    const nowMicros = options.nowMicros ?? clock.nowMicros;
    receiveMicros = nowMicros;
    const opsDeps: OpsDeps = {
      metrics,
      tracker,
      version: options.version ?? "dev",
      instanceId: config.instanceId,
      backlog: () => uploader.pending + (spool?.count ?? 0),
      spoolMaxBytes: spool?.maxBytes,
      restartsLastHour: (at) => countRestarts(history.starts, at),
      messageAges: () => recorder.messageAges(),
      openBatches: () => ({ bytes: batcher.openBytes, textBytes: batcher.openTextBytes }),
      clockOffset: () => clockOffset,
      recording: () => ({
        symbols: recorded?.symbols.length ?? 0,
        streams: recorded?.streams.length ?? 0,
        awaitingFirstSnapshot: config.depthLevel === "full"
          ? [...diffStreamOf].filter(([symbol]) => !snapshotted.has(symbol)).map(([, s]) => s)
          : [],
      }),
      now,
      activity,
    };
    if (config.metrics) {
      const exposed = exposureWarning(config.metrics);
      if (exposed) log.warn("{warning}", { warning: exposed });
      try {
        ops = serveOps(config.metrics, redactingHandler(opsHandler(opsDeps)), background.signal);
      } catch (error) {
        throw new StartupError((error as Error).message);
      }
    }
    // Also with METRICS_ADDR=off: health changes are still logged and alerted.
    healthLoop = watchHealth({
      evaluate: async (at) => (await observe(opsDeps, at)).health,
      notifier: config.alertWebhookUrl
        ? new AlertNotifier({ url: config.alertWebhookUrl, instanceId: config.instanceId })
        : undefined,
      signal: background.signal,
      now,
    });

    if (config.depthLevel === "full") {
      snapshotter = new Snapshotter({
        restUrl: config.restUrl,
        market: config.market,
        limit: config.snapshotLimit,
        intervalMs: config.snapshotIntervalSeconds * 1000,
        limiter: restLimiter,
        nowMicros,
        signal: feedStop.signal,
        chainStart: (symbol) => {
          const stream = diffStreamOf.get(symbol);
          return stream === undefined ? undefined : recorder.chainStart(stream);
        },
        onSnapshot: (symbol, text, recvTs) => {
          const stream = diffStreamOf.get(symbol);
          if (stream) {
            recorder.snapshot(stream, snapshotStreamOf(symbol), text, recvTs);
            snapshotted.add(symbol);
          }
        },
      });
    }
    // Binance allows 300 connection attempts per 5 minutes per IP; keep well under.
    const attempts = new AttemptLimiter({ max: 250, windowMs: 300_000 });
    const streamsOf = (symbol: string) => symbolStreams(symbol, config);
    const depthType = depthStreamType(config.market, config);
    const universe = new Universe({
      rules: { include: config.symbols, exclude: config.symbolExclude, shard: config.shard },
      streamsOf,
      streamsPerConnection: config.streamsPerConnection,
      baseOf: (stream) => streamBaseUrl(config.wsUrl, config.market, stream),
      recorder,
      signal: feedStop.signal,
      nowMicros,
      onStreams: ({ added, removed }) => {
        metrics.declare({ streams: added, sink: sink.kind });
        for (const stream of added) {
          const spec = parseStreamName(stream);
          if (spec?.type === depthType) diffStreamOf.set(spec.symbol, stream);
        }
        for (const stream of removed) {
          const spec = parseStreamName(stream);
          if (spec && diffStreamOf.get(spec.symbol) === stream) {
            diffStreamOf.delete(spec.symbol);
            snapshotted.delete(spec.symbol);
          }
        }
        metrics.streamsActive.set(universe.streams.length);
      },
      connect: (group, signal) => {
        const base = streamBaseUrl(config.wsUrl, config.market, group.names[0]);
        const plan = planConnection(base, group.names, { timeUnit: config.timeUnit });
        return startConnection({
          url: plan.url,
          subscribe: plan.subscribe,
          subscribeIntervalMs: SUBSCRIBE_INTERVAL_MS[config.market],
          signal,
          staleAfterMs: config.staleAfterSeconds * 1000,
          rotateAfterMs: config.wsRotateSeconds * 1000,
          beforeConnect: (signal) => attempts.take(signal),
          webSocket: options.webSocket,
          nowMicros,
          handlers: connectionHandlers({
            group,
            inUrl: plan.inUrl,
            recorder,
            metrics,
            nowMicros,
            activity,
            now,
          }),
        });
      },
    });
    recorded = universe;
    if (listing) {
      universe.update(listing, { quiet: true });
    } else {
      // exchangeInfo unread: the named symbols of this shard now, patterns at the first refresh.
      universe.startUnlisted(
        namedSymbols(config.symbols).filter((s) =>
          inShard(s, config.shard) && !config.symbolExclude.some((t) => matchesTerm(s, t))
        ),
      );
    }
    log.info("Recording {count} {market} streams ({first}…) to {sink} {location}", {
      count: universe.streams.length,
      market: config.market,
      first: universe.streams[0],
      sink: sink.kind,
      location: sink.location,
      instanceId: config.instanceId,
      shard: `${config.shard.index}/${config.shard.count}`,
    });
    const following = universe.follow({
      read: async (signal) =>
        (await readExchangeInfo({
          restUrl: config.restUrl,
          market: config.market,
          limiter: restLimiter,
          signal: AbortSignal.any([signal, AbortSignal.timeout(20_000)]),
        })).listed,
      intervalMs: config.exchangeInfoRefreshSeconds * 1000,
      signal: feedStop.signal,
    });

    const ticker = setInterval(() => recorder.tick(), 200);
    clock.tick();
    const clockTicker = setInterval(() => clock.tick(), TICK_MS);
    options.onStarted?.();
    await new Promise<void>((resolve) => {
      if (options.shutdown.aborted) resolve();
      options.shutdown.addEventListener("abort", () => resolve(), { once: true });
    });

    const deadline = Date.now() + (options.shutdownBudgetMs ?? 9000);
    log.info("Shutting down: closing connections, then sealing and storing open batches");
    feedStop.abort();
    await following;
    await universe.done;
    await snapshotter?.done;
    clearInterval(ticker);
    clearInterval(clockTicker);
    recorder.sealAll();
    // Keep a second for spooling what the sink could not take in time.
    const storeBy = Math.max(0, deadline - Date.now() - 1500);
    const left = await uploader.flush(AbortSignal.timeout(storeBy));
    background.abort();
    await drainer?.done;
    await journal.close();
    reportShutdown(left, spool);
  } finally {
    awake.release();
    background.abort();
    // An alert POST in flight (10 s timeout) must not hold up the exit.
    await Promise.race([healthLoop, delay(1000)]);
    await Promise.race([clockLoop, delay(1000)]);
    await ops?.finished;
    selected.close();
  }
}

// deno-lint-ignore arch/max-function-lines -- issue 14: not yet split
function connectionHandlers(context: {
  group: StreamGroup;
  /** The group's streams named in the URL; the others come by SUBSCRIBE. */
  inUrl: readonly string[];
  recorder: Recorder;
  metrics: Metrics;
  nowMicros: () => number;
  activity: Activity;
  now: () => number;
}): ConnectionHandlers {
  const { group, inUrl, recorder, metrics, nowMicros, activity, now } = context;
  const { conn } = group;
  return {
    onFrame: (text, recvTs, socketId) => recorder.frame(group, text, recvTs, socketId),
    onOpen: ({ opened, socketId, role }) => {
      metrics.wsConnections.inc();
      log.info("Connection {conn} open ({streams} streams, socket {socketId}, {role})", {
        conn,
        streams: group.names.length,
        socketId,
        role,
        opened,
      });
      recorder.opened(group, socketId, role, nowMicros(), inUrl);
    },
    onSubscribed: ({ socketId, role, streams }) => {
      log.debug("Connection {conn} socket {socketId}: {count} streams subscribed", {
        conn,
        socketId,
        count: streams.length,
      });
      recorder.opened(group, socketId, role, nowMicros(), streams);
    },
    onClose: (info) => {
      metrics.wsConnections.dec();
      recorder.closed(group, info.socketId ?? 0, {
        replaced: info.replaced,
        recvTs: nowMicros(),
        details: {
          conn,
          socket: info.socketId,
          cause: info.cause,
          code: info.code,
          reason: info.reason,
          uptime_ms: Math.round(info.uptimeMs),
        },
      });
      if (info.cause === "shutdown" || info.cause === "rotated") {
        log.info("Connection {conn} socket {socketId} closed ({cause})", { conn, ...info });
        return;
      }
      metrics.reconnects.inc({ cause: info.cause });
      activity.event({
        at: now(),
        kind: "disconnect",
        subject: `conn ${conn}`,
        detail: `${info.cause}, code ${info.code ?? "none"}` +
          (info.reason ? ` (${info.reason})` : "") +
          (info.replaced ? "; successor carried on" : `; reconnecting in ${info.retryInMs} ms`),
      });
      log.warn(
        "Connection {conn} socket {socketId} closed ({cause}, code {code}){replacedNote}",
        {
          conn,
          ...info,
          replacedNote: info.replaced
            ? "; its successor carries on"
            : `; reconnecting in ${info.retryInMs} ms`,
        },
      );
    },
    onConnectFailed: (info) => {
      metrics.reconnects.inc({ cause: info.cause });
      activity.event({
        at: now(),
        kind: "connect-failed",
        subject: `conn ${conn}`,
        detail: `${info.cause}: ${info.reason}; retrying in ${info.retryInMs} ms`,
      });
      log.warn("Connection {conn} could not open ({reason}); retrying in {retryInMs} ms", {
        conn,
        ...info,
      });
    },
  };
}

/**
 * Reads `exchangeInfo` for the start. Unknown symbols named in SYMBOL stop
 * the start (exit 2); patterns name none. A listed symbol that is not
 * trading (HALT, BREAK, CANCEL_ONLY…) still exists and may trade again, so a
 * named one is recorded, with one WARN (BINANCE.md, Payloads). An exchange
 * that cannot be asked does not stop the start either (the named symbols are
 * recorded; patterns resolve at the first refresh that succeeds). The weight
 * limit `exchangeInfo` lists replaces the documented default.
 */
async function checkConfiguredSymbols(
  config: Config,
  limiter: RestLimiter,
): Promise<readonly Listing[] | undefined> {
  let info;
  try {
    info = await readExchangeInfo({
      restUrl: config.restUrl,
      market: config.market,
      limiter,
      signal: AbortSignal.timeout(20_000),
    });
  } catch (error) {
    log.warn("Could not check the symbols against exchangeInfo ({error}); recording anyway", {
      error: error instanceof Error ? error.message : String(error),
    });
    return undefined;
  }
  if (info.weightLimit !== undefined) limiter.setWeightLimit(info.weightLimit);
  const status = new Map(info.listed.map((l) => [l.symbol, l.status]));
  const named = namedSymbols(config.symbols);
  const unknown = named.filter((s) => !status.has(s));
  if (unknown.length > 0) {
    const listed = unknown.map((s) => `${s} (not listed on ${config.market})`);
    throw new StartupError(`SYMBOL lists symbols Binance does not list: ${listed.join(", ")}`);
  }
  for (const symbol of named) {
    if (status.get(symbol) === "TRADING") continue;
    log.warn("{symbol} is listed with status {status}, not TRADING; recording it anyway", {
      symbol,
      status: status.get(symbol),
    });
  }
  return info.listed;
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

/** A start-up step that fails is a start-up error (exit 2), saying what failed. */
async function startupStep<T>(what: string, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (error) {
    throw new StartupError(`cannot ${what}: ${error instanceof Error ? error.message : error}`);
  }
}

/**
 * What the journal needs to know about an archive line to rebuild a batch's
 * metadata, exactly as the live batch had it (snapshots carry no update ids there).
 */
function describeLine(text: string) {
  const value = JSON.parse(text) as { recv_ts?: unknown; stream?: unknown; data?: unknown };
  if (typeof value.recv_ts !== "number") throw new Error("archive line without recv_ts");
  const isData = typeof value.data === "object" && value.data !== null;
  const isSnapshot = isData && lineKindOf(value.stream, false) === "snapshot";
  const ids = isData && !isSnapshot ? updateIds(value.data as Record<string, unknown>) : {};
  return { recvTs: value.recv_ts, isData, isSnapshot, ...ids };
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
  const parsed = lines.map((text) => JSON.parse(text) as { recv_ts?: unknown; stream?: unknown });
  const firstRecvTs = parsed[0]?.recv_ts;
  const stream = parsed.map((v) => v.stream).find((s): s is string =>
    typeof s === "string" && !s.endsWith(SNAPSHOT_STREAM_SUFFIX)
  );
  if (typeof firstRecvTs !== "number" || stream === undefined) return undefined;
  return { key: keyFor(stream, firstRecvTs, REKEYED_SEQ_BASE + index), stream };
}

async function removeFiles(paths: readonly string[]): Promise<void> {
  for (const path of paths) await Deno.remove(path).catch(() => {});
}

/** The ops endpoint's answers, with no URL password in them whatever they come to quote. */
function redactingHandler(
  handle: (req: Request) => Response | Promise<Response>,
): (req: Request) => Promise<Response> {
  return async (req) => {
    const response = await handle(req);
    if (response.body === null) return response;
    const text = await response.text();
    const headers = new Headers(response.headers);
    headers.delete("content-length");
    return new Response(redactUrls(text), {
      status: response.status,
      statusText: response.statusText,
      headers,
    });
  };
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
    await Deno.mkdir(dataDir, { recursive: true });
    const probe = join(dataDir, `.write-probe-${crypto.randomUUID().slice(0, 8)}`);
    await writeAtomically(probe, new Uint8Array([1]));
    await Deno.remove(probe);
  } catch (error) {
    throw new StartupError(
      `DATA_DIR "${dataDir}" is not writable: ${(error as Error).message}`,
    );
  }
}
