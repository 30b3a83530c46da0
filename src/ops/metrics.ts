/**
 * The collector's Prometheus metrics (prom-client), one registry per
 * process. Stages receive this object and move its metrics; nothing here
 * logs. Names follow `l2_<what>_<unit>_total`; label values come from small
 * fixed sets (stream names are configuration, not data).
 */

import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Sink } from "../store/sink.ts";

export class Metrics {
  readonly registry = new Registry();
  /**
   * Counted per message through `countMessage`/`countBytes` into plain
   * numbers, handed to prom-client only when read (its `collect`): a labelled
   * `inc` hashes its labels on every call, a cost per message at 20,000/s.
   */
  readonly #messagesPending = new Map<string, number>();
  #bytesPending = 0;
  readonly messagesReceived: Counter<"stream"> = new Counter({
    name: "l2_messages_received_total",
    help: "Data messages received from the exchange",
    labelNames: ["stream"],
    registers: [this.registry],
    collect: () => this.#flushReceived(),
  });
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
    "Text of open batches: what the open-batch bound (4 × UPLOAD_QUEUE_MAX_BYTES) counts",
  );
  readonly wsConnections = this.#gauge("l2_ws_connections", "Open WebSocket connections");
  readonly streamsActive = this.#gauge(
    "l2_streams_active",
    "Streams recorded now (follows listings, delistings and SYMBOL patterns)",
  );
  readonly lastMessageAge = this.#gauge(
    "l2_last_message_age_seconds",
    "Seconds since the last data message of a stream",
    ["stream"],
  );
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
    "Starts of the collector in the last hour before this one (DATA_DIR/state/restarts.json)",
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

  constructor() {
    // Series with labels appear only once touched: show the known ones at 0.
    for (const cause of ["server", "error", "stale", "open-timeout", "subscribe-failed"]) {
      this.reconnects.inc({ cause }, 0);
    }
    for (const target of ["journal", "spool"]) this.diskWriteFailures.inc({ target }, 0);
  }

  /** One data message of `stream` received (l2_messages_received_total). */
  countMessage(stream: string): void {
    this.#messagesPending.set(stream, (this.#messagesPending.get(stream) ?? 0) + 1);
  }

  /** Bytes of a text frame received (l2_bytes_received_total). */
  countBytes(bytes: number): void {
    this.#bytesPending += bytes;
  }

  /** Moves the counts kept since the last read into the two counters. */
  #flushReceived(): void {
    for (const [stream, n] of this.#messagesPending) this.messagesReceived.inc({ stream }, n);
    this.#messagesPending.clear();
    if (this.#bytesPending > 0) this.bytesReceived.inc(this.#bytesPending);
    this.#bytesPending = 0;
  }

  /** Shows each configured stream and the sink from the start, at 0. */
  declare(options: { streams: readonly string[]; sink: string }): void {
    for (const stream of options.streams) this.messagesReceived.inc({ stream }, 0);
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
