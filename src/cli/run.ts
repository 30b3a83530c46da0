/**
 * `l2-uploader run`: wires the stages (feed → recorder → batcher → uploader
 * → sink) and owns the shutdown order: stop the feed, seal every batch,
 * store what can be stored within the budget, return.
 */

import { getLogger } from "@logtape/logtape";
import { join } from "node:path";
import { Batcher } from "../batch/batcher.ts";
import { planKey } from "../batch/keys.ts";
import {
  combinedStreamUrl,
  depthStreams,
  groupStreams,
  parseStreamName,
} from "../binance/streams.ts";
import type { Config } from "../config_types.ts";
import { defaultNowMicros, runConnection, type WebSocketFactory } from "../feed/connection.ts";
import { Metrics } from "../ops/metrics.ts";
import { Recorder } from "../recorder.ts";
import { localSink, writeAtomically } from "../store/local.ts";
import type { Sink } from "../store/sink.ts";
import { Uploader } from "../store/uploader.ts";

const log = getLogger(["l2", "run"]);

/** A problem found before recording starts; main turns it into exit code 2. */
export class StartupError extends Error {
  override name = "StartupError";
}

export interface RunOptions {
  /** Aborted by the first SIGTERM/SIGINT. */
  readonly shutdown: AbortSignal;
  readonly webSocket?: WebSocketFactory;
  readonly nowMicros?: () => number;
  readonly metrics?: Metrics;
  /** Total time allowed from the shutdown signal to return, ms. */
  readonly shutdownBudgetMs?: number;
  /** Called once recording has started (tests wait on it). */
  readonly onStarted?: () => void;
}

export async function run(config: Config, options: RunOptions): Promise<void> {
  const nowMicros = options.nowMicros ?? defaultNowMicros;
  const metrics = options.metrics ?? new Metrics();
  await ensureWritable(config.dataDir);
  const sink: Sink = localSink(join(config.dataDir, "archive"));

  const streams = depthStreams(config.symbols, config);
  const uploader = new Uploader({
    sink,
    concurrency: config.uploadConcurrency,
    gzipLevel: config.gzipLevel,
    onStored: (_batch, bytes) => {
      metrics.batchesStored.inc({ sink: sink.kind });
      metrics.bytesStored.inc({ sink: sink.kind }, bytes);
    },
    onFailedAttempt: () => metrics.uploadFailures.inc(),
  });
  const batcher = new Batcher({
    batchMs: config.batchSeconds * 1000,
    maxLines: config.maxMessagesPerBatch,
    planKey: (stream, firstRecvTs, seq) => {
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
    },
  });
  const recorder = new Recorder({ batcher, metrics, submit: (batch) => uploader.submit(batch) });

  log.info("Recording {count} {market} streams ({first}…) to {sink} {location}", {
    count: streams.length,
    market: config.market,
    first: streams[0]?.name,
    sink: sink.kind,
    location: sink.location,
    instanceId: config.instanceId,
  });

  const feedStop = new AbortController();
  const feeds = groupStreams(streams.map((s) => s.name), config.streamsPerConnection).map(
    (names, index) => {
      const conn = index + 1;
      return runConnection({
        url: combinedStreamUrl(config.wsUrl, names),
        signal: feedStop.signal,
        staleAfterMs: config.staleAfterSeconds * 1000,
        webSocket: options.webSocket,
        nowMicros,
        handlers: {
          onFrame: (text, recvTs) => recorder.frame(names, text, recvTs),
          onOpen: ({ opened }) => {
            metrics.wsConnections.inc();
            log.info("Connection {conn} open ({streams} streams, attempt {opened})", {
              conn,
              streams: names.length,
              opened,
            });
            recorder.event(names, "connected", nowMicros(), { conn });
          },
          onClose: (info) => {
            metrics.wsConnections.dec();
            const at = nowMicros();
            if (info.cause === "stale") {
              recorder.event(names, "stale", at, {
                conn,
                stale_after_ms: config.staleAfterSeconds * 1000,
              });
            }
            recorder.event(names, "disconnected", at, {
              conn,
              cause: info.cause,
              code: info.code,
              reason: info.reason,
              uptime_ms: Math.round(info.uptimeMs),
            });
            if (info.cause !== "shutdown") metrics.reconnects.inc({ cause: info.cause });
            log.warn(
              "Connection {conn} closed ({cause}, code {code}); reconnecting in {retryInMs} ms",
              {
                conn,
                ...info,
              },
            );
          },
          onConnectFailed: (info) => {
            metrics.reconnects.inc({ cause: info.cause });
            log.warn("Connection {conn} could not open ({reason}); retrying in {retryInMs} ms", {
              conn,
              ...info,
            });
          },
        },
      });
    },
  );

  const ticker = setInterval(() => recorder.tick(), 200);
  options.onStarted?.();
  await new Promise<void>((resolve) => {
    if (options.shutdown.aborted) resolve();
    options.shutdown.addEventListener("abort", () => resolve(), { once: true });
  });

  const deadline = Date.now() + (options.shutdownBudgetMs ?? 9000);
  log.info("Shutting down: closing connections, then sealing and storing open batches");
  feedStop.abort();
  await Promise.all(feeds);
  clearInterval(ticker);
  recorder.sealAll();
  const left = await uploader.flush(AbortSignal.timeout(Math.max(0, deadline - Date.now())));
  if (left.length > 0) {
    const messages = left.reduce((n, b) => n + b.meta.messages, 0);
    metrics.droppedMessages.inc(messages);
    log.error("Shutdown budget ran out with {batches} batches ({messages} messages) not stored", {
      batches: left.length,
      messages,
    });
  } else {
    log.info("Shutdown complete: every batch stored");
  }
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
