/**
 * The collector's Prometheus metrics (prom-client), one registry per
 * process. Stages receive this object and move its metrics; nothing here
 * logs (src/ops/events.ts does, and keeps the state health reads). Names
 * follow `l2_<what>_<unit>_total`; label values come from small fixed sets.
 *
 * The two per-stream metrics (messages received, last message age) are
 * labelled `{market, type}` (e.g. `spot`, `depth@100ms`): a handful of
 * series whatever the number of symbols. `METRICS_PER_STREAM=true` labels
 * them `{stream}` instead, one series per stream: useful for ten streams, a
 * burden for Prometheus at 1,500 (docs/DESIGN.md "Metrics").
 */

import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { parseStreamName } from "../binance/streams.ts";
import type { Sink } from "../store/sink.ts";
import type { CloseCause } from "../feed/connection_types.ts";

/**
 * Every cause `l2_reconnects_total` counts: each close but a shutdown or a
 * rotation (events.ts). A record, so a new `CloseCause` must be added here:
 * a series first seen at N hides its first N from `increase()`.
 */
const RECONNECT_CAUSES = Object.keys(
  {
    server: true,
    error: true,
    stale: true,
    "open-timeout": true,
    "subscribe-failed": true,
    suspended: true,
  } satisfies Record<Exclude<CloseCause, "shutdown" | "rotated">, true>,
);

export interface MetricsOptions {
  /** The `market` label of the per-stream metrics (MARKET); default `spot`. */
  readonly market?: string;
  /**
   * Label the per-stream metrics by `stream` rather than `{market, type}`.
   * Default true for a bare `new Metrics()` (tests, tools); the collector
   * passes METRICS_PER_STREAM, whose default is false.
   */
  readonly perStream?: boolean;
}

/** The labels of a per-stream metric: `{stream}`, or `{market, type}`. */
export type StreamLabels = Partial<Record<"stream" | "market" | "type", string>>;

/** Messages and bytes received since the start, as plain numbers (what health reads). */
export interface ReceivedTotals {
  readonly messages: number;
  readonly bytes: number;
  readonly byStream: ReadonlyMap<string, number>;
}

export class Metrics {
  readonly registry = new Registry();
  readonly #market: string;
  readonly #perStream: boolean;
  readonly #labels = new Map<string, StreamLabels>();
  /**
   * Counted per message through `countMessage`/`countBytes` into plain
   * numbers, handed to prom-client only when read (its `collect`): a labelled
   * `inc` hashes its labels on every call, a cost per message at 20,000/s.
   * The totals stay here for health and the status page; `#flushed` is what
   * prom-client has been given.
   */
  readonly #messages = new Map<string, number>();
  readonly #flushed = new Map<string, number>();
  #messagesTotal = 0;
  #bytes = 0;
  #bytesFlushed = 0;
  readonly messagesReceived: Counter<keyof StreamLabels>;
  readonly bytesReceived: Counter = new Counter({
    name: "l2_bytes_received_total",
    help: "Bytes of WebSocket text frames received",
    registers: [this.registry],
    collect: () => this.#flushReceived(),
  });
  readonly malformedFrames = this.#counter(
    "l2_malformed_frames_total",
    "Frames that were not valid JSON or had an unknown shape (kept as event lines)",
  );
  readonly batchesStored = this.#counter(
    "l2_batches_stored_total",
    "Batches confirmed stored by a sink",
    ["sink"],
  );
  readonly bytesStored = this.#counter(
    "l2_bytes_stored_total",
    "Compressed bytes confirmed stored by a sink",
    ["sink"],
  );
  readonly uploadAttempts = this.#counter("l2_upload_attempts_total", "Store attempts made");
  readonly uploadFailures = this.#counter(
    "l2_upload_failures_total",
    "Store attempts that failed",
  );
  readonly reconnects = this.#counter(
    "l2_reconnects_total",
    "WebSocket connections that closed or failed and were replaced",
    ["cause"],
  );
  readonly sequenceGaps = this.#counter(
    "l2_sequence_gaps_total",
    "Breaks in a stream's update-id chain",
  );
  readonly rotationRepeats = this.#counter(
    "l2_rotation_repeats_total",
    "Messages received twice while two connections overlapped, kept once",
  );
  readonly droppedMessages = this.#counter(
    "l2_dropped_messages_total",
    "Messages that could not be stored or spooled",
  );
  readonly suspensions = this.#counter(
    "l2_suspensions_total",
    "Times the process found it had not run for more than SUSPEND_THRESHOLD_SECONDS (the Mac slept)",
  );
  readonly clockSteps = this.#counter(
    "l2_clock_steps_total",
    "Wall-clock steps of more than 100 ms (the receive clock re-anchored)",
  );
  readonly spoolBytes = this.#gauge("l2_spool_bytes", "Bytes held in the on-disk spool");
  readonly spoolBatches = this.#gauge("l2_spool_batches", "Batches held in the on-disk spool");
  readonly uploadQueueBytes = this.#gauge(
    "l2_upload_queue_bytes",
    "Bytes of sealed batches waiting in memory to be stored",
  );
  readonly openBatchBytes = this.#gauge(
    "l2_open_batch_bytes",
    "Memory held by open batches (text not yet compressed, in whole chunks, and compressed pieces)",
  );
  readonly openBatchTextBytes = this.#gauge(
    "l2_open_batch_text_bytes",
    "Text of open batches, compressed or not (the open-batch bound counts what they hold instead)",
  );
  readonly wsConnections = this.#gauge("l2_ws_connections", "Open WebSocket connections");
  readonly streamsActive = this.#gauge(
    "l2_streams_active",
    "Streams recorded now (follows listings, delistings and SYMBOL patterns)",
  );
  readonly lastMessageAge: Gauge<keyof StreamLabels>;
  readonly clockOffset = this.#gauge(
    "l2_clock_offset_seconds",
    "Local clock minus Binance's (GET /time, round-trip corrected); positive: local is ahead",
  );
  readonly exchangeLag = new Histogram({
    name: "l2_exchange_lag_seconds",
    help: "Local receive time minus the event time E of messages that carry one (sampled)",
    labelNames: ["market"],
    buckets: [0, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly spoolMaxBytes = this.#gauge(
    "l2_spool_max_bytes",
    "SPOOL_MAX_BYTES, the spool's bound (0 without a spool, i.e. with a local archive)",
  );
  readonly uploadBacklog = this.#gauge(
    "l2_upload_backlog_batches",
    "Sealed batches not yet stored: queued or in flight in the uploader, or in the spool",
  );
  readonly lastUploadTime = this.#gauge(
    "l2_last_upload_timestamp_seconds",
    "Unix time of the last batch a sink confirmed stored (0 until one is)",
  );
  readonly restartsLastHour = this.#gauge(
    "l2_restarts_last_hour",
    "Starts in the last hour after a run that did not stop cleanly: crashed, killed or failed to start (DATA_DIR/state/restarts.json)",
  );
  readonly diskWriteFailures = this.#counter(
    "l2_disk_write_failures_total",
    "Writes to the local disk that failed (crash journal, spool)",
    ["target"],
  );
  readonly uploadDuration = new Histogram({
    name: "l2_upload_duration_seconds",
    help: "Time of each store attempt (one put to the sink), by outcome",
    labelNames: ["outcome"],
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly residentMemory = this.#gauge(
    "process_resident_memory_bytes",
    "Resident memory size in bytes",
  );

  constructor(options: MetricsOptions = {}) {
    this.#market = options.market ?? "spot";
    this.#perStream = options.perStream ?? true;
    const streamLabels: (keyof StreamLabels)[] = this.#perStream ? ["stream"] : ["market", "type"];
    this.messagesReceived = new Counter({
      name: "l2_messages_received_total",
      help: "Data messages received from the exchange",
      labelNames: streamLabels,
      registers: [this.registry],
      collect: () => this.#flushReceived(),
    });
    this.lastMessageAge = this.#gauge(
      "l2_last_message_age_seconds",
      this.#perStream
        ? "Seconds since the last data message of a stream"
        : "Seconds since the last data message, of the quietest stream of each type",
      streamLabels,
    );
    // Series with labels appear only once touched: show the known ones at 0.
    for (const cause of RECONNECT_CAUSES) {
      this.reconnects.inc({ cause }, 0);
    }
    for (const target of ["journal", "spool"]) this.diskWriteFailures.inc({ target }, 0);
  }

  /** `n` data messages of `stream` received (l2_messages_received_total). */
  countMessage(stream: string, n = 1): void {
    this.#messages.set(stream, (this.#messages.get(stream) ?? 0) + n);
    this.#messagesTotal += n;
  }

  /** Bytes of a text frame received (l2_bytes_received_total). */
  countBytes(bytes: number): void {
    this.#bytes += bytes;
  }

  /** Everything counted by `countMessage` and `countBytes` since the start. */
  received(): ReceivedTotals {
    return { messages: this.#messagesTotal, bytes: this.#bytes, byStream: this.#messages };
  }

  /** The labels of `stream`'s series in the per-stream metrics. */
  labelsOf(stream: string): StreamLabels {
    let labels = this.#labels.get(stream);
    if (labels === undefined) {
      labels = this.#perStream
        ? { stream }
        : { market: this.#market, type: parseStreamName(stream)?.type ?? "unknown" };
      this.#labels.set(stream, labels);
    }
    return labels;
  }

  /**
   * Seconds since each stream's last data message, into
   * l2_last_message_age_seconds: `ages` is every stream recorded now, and a
   * series of a stream (or type) no longer recorded goes, so its last age
   * does not stay, and keep an alert firing, after the stream stopped.
   */
  setMessageAges(ages: Iterable<readonly [string, number]>): void {
    this.lastMessageAge.reset();
    if (this.#perStream) {
      for (const [stream, age] of ages) this.lastMessageAge.set({ stream }, age);
      return;
    }
    const oldest = new Map<string, { labels: StreamLabels; age: number }>();
    for (const [stream, age] of ages) {
      const labels = this.labelsOf(stream);
      const key = labels.type ?? "";
      if ((oldest.get(key)?.age ?? -1) < age) oldest.set(key, { labels, age });
    }
    for (const { labels, age } of oldest.values()) this.lastMessageAge.set(labels, age);
  }

  /** Moves the counts kept since the last read into the two counters. */
  #flushReceived(): void {
    for (const [stream, n] of this.#messages) {
      const given = this.#flushed.get(stream) ?? 0;
      if (n > given) this.messagesReceived.inc(this.labelsOf(stream), n - given);
      this.#flushed.set(stream, n);
    }
    if (this.#bytes > this.#bytesFlushed) this.bytesReceived.inc(this.#bytes - this.#bytesFlushed);
    this.#bytesFlushed = this.#bytes;
  }

  /** Shows each configured stream and the sink from the start, at 0. */
  declare(options: { streams: readonly string[]; sink: string }): void {
    for (const stream of options.streams) this.messagesReceived.inc(this.labelsOf(stream), 0);
    this.batchesStored.inc({ sink: options.sink }, 0);
    this.bytesStored.inc({ sink: options.sink }, 0);
  }

  /** `sink` with each put (and putNew) timed into l2_upload_duration_seconds. */
  timeSink(sink: Sink): Sink {
    const histogram = this.uploadDuration;
    const timed = async <T>(store: () => Promise<T>): Promise<T> => {
      const end = histogram.startTimer();
      try {
        const result = await store();
        end({ outcome: "ok" });
        return result;
      } catch (error) {
        end({ outcome: "failed" });
        throw error;
      }
    };
    return {
      kind: sink.kind,
      location: sink.location,
      put: (key, body, meta, signal) => timed(() => sink.put(key, body, meta, signal)),
      putNew: (key, body, meta, signal) => timed(() => sink.putNew(key, body, meta, signal)),
      ...(sink.putFile
        ? {
          putFile: (...args: Parameters<NonNullable<Sink["putFile"]>>) =>
            timed(() => sink.putFile!(...args)),
        }
        : {}),
    };
  }

  #counter<L extends string>(name: string, help: string, labelNames: L[] = []): Counter<L> {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  #gauge<L extends string>(name: string, help: string, labelNames: L[] = []): Gauge<L> {
    return new Gauge({ name, help, labelNames, registers: [this.registry] });
  }
}
