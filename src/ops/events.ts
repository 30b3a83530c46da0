/**
 * Telemetry as named events: one method per thing that happens to the
 * collector (a batch stored, an upload attempt failed, a connection closed,
 * a gap seen…). Each writes its log line (if the event has one), moves its
 * metrics, and updates the plain state that health and the status page read
 * (`Telemetry.state`), so nothing reads prom-client counters back.
 *
 * The stages call these through their callbacks; the store's own lines
 * ("Spooled …", "Store attempt failed …") are still written by store/.
 */

import { getLogger } from "@logtape/logtape";
import type { ClockStep, Suspension } from "../feed/clock.ts";
import type { CloseInfo, OpenInfo, SocketRole } from "../feed/connection.ts";
import { Activity } from "./activity.ts";
import type { HealthTracker } from "./health.ts";
import type { Metrics } from "./metrics.ts";

// The category these lines had when run.ts wrote them: LOG_FILE readers filter on it.
const log = getLogger(["l2", "run"]);
// The recorder's gap line keeps its category too.
const recorderLog = getLogger(["l2", "recorder"]);
// The receive clock's lines keep the category they always had.
const clockLog = getLogger(["l2", "clock"]);

/** What health and /status read: totals since the start and the latest values. */
export interface TelemetryState {
  readonly reconnects: number;
  readonly uploadAttempts: number;
  readonly uploadFailures: number;
  readonly batchesStored: number;
  readonly droppedMessages: number;
  readonly sequenceGaps: number;
  /** Wall-clock ms of the last batch a sink confirmed stored. */
  readonly lastStoredAt?: number;
  readonly spoolBytes: number;
  readonly spoolBatches: number;
  readonly uploadQueueBytes: number;
  readonly webSockets: number;
  /** Local clock minus Binance's, seconds; undefined until measured. */
  readonly clockOffsetSeconds?: number;
  /** Per market: sampled receive lags behind `E`, their count and sum (seconds). */
  readonly exchangeLag: ReadonlyMap<string, { readonly count: number; readonly sum: number }>;
}

/** A disk write the collector could not make. */
export type DiskWriteTarget = "journal" | "spool";

/** A connection's name in log lines and events: its number and its streams. */
export interface ConnectionName {
  readonly conn: number;
  readonly streams: number;
}

export interface TelemetryOptions {
  readonly metrics: Metrics;
  /** Gaps and disconnects for the status page; default a fresh one. */
  readonly activity?: Activity;
  /** MARKET, the label of the exchange lag; default `spot`. */
  readonly market?: string;
  /** Wall-clock ms. */
  readonly now?: () => number;
  /** Where a suspension raises health's warning; none in unit tests of other events. */
  readonly tracker?: Pick<HealthTracker, "suspended">;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** Every total at zero, nothing measured yet: where the state starts. */
export const EMPTY_TELEMETRY_STATE: TelemetryState = Object.freeze({
  reconnects: 0,
  uploadAttempts: 0,
  uploadFailures: 0,
  batchesStored: 0,
  droppedMessages: 0,
  sequenceGaps: 0,
  spoolBytes: 0,
  spoolBatches: 0,
  uploadQueueBytes: 0,
  webSockets: 0,
  exchangeLag: new Map(),
});

export class Telemetry {
  readonly metrics: Metrics;
  readonly activity: Activity;
  readonly #market: string;
  readonly #now: () => number;
  readonly #tracker: Pick<HealthTracker, "suspended"> | undefined;
  readonly #state: Mutable<TelemetryState> = { ...EMPTY_TELEMETRY_STATE, exchangeLag: new Map() };

  constructor(options: TelemetryOptions) {
    this.metrics = options.metrics;
    this.activity = options.activity ?? new Activity();
    this.#market = options.market ?? "spot";
    this.#now = options.now ?? Date.now;
    this.#tracker = options.tracker;
    // The lag histogram's series exist from the start (zero), not from the first sampled message.
    this.metrics.exchangeLag.zero({ market: this.#market });
  }

  get state(): TelemetryState {
    return this.#state;
  }

  /** A sink confirmed a batch of `bytes` (from the uploader or the spool). */
  batchStored(sink: string, bytes: number): void {
    const at = this.#now();
    this.#state.lastStoredAt = at;
    this.#state.uploadAttempts++;
    this.#state.batchesStored++;
    this.metrics.lastUploadTime.set(at / 1000);
    this.metrics.uploadAttempts.inc();
    this.metrics.batchesStored.inc({ sink });
    this.metrics.bytesStored.inc({ sink }, bytes);
  }

  /** One store attempt failed (it may be retried, spooled or dropped after). */
  uploadFailed(): void {
    this.#state.uploadAttempts++;
    this.#state.uploadFailures++;
    this.metrics.uploadAttempts.inc();
    this.metrics.uploadFailures.inc();
  }

  /** A batch of `messages` could be neither stored nor spooled. */
  batchDropped(messages: number): void {
    this.#state.droppedMessages += messages;
    this.metrics.droppedMessages.inc(messages);
  }

  /** The spool's content changed (a batch spooled, drained or quarantined). */
  spoolChanged(spool: { readonly bytes: number; readonly count: number }): void {
    this.#state.spoolBytes = spool.bytes;
    this.#state.spoolBatches = spool.count;
    this.metrics.spoolBytes.set(spool.bytes);
    this.metrics.spoolBatches.set(spool.count);
  }

  /** The spool's bound, SPOOL_MAX_BYTES (once, at the start). */
  spoolOpened(maxBytes: number): void {
    this.metrics.spoolMaxBytes.set(maxBytes);
  }

  /** Bytes of sealed batches waiting in memory changed. */
  uploadQueueChanged(bytes: number): void {
    this.#state.uploadQueueBytes = bytes;
    this.metrics.uploadQueueBytes.set(bytes);
  }

  /** A write to the local disk failed (the store logs why). */
  diskWriteFailed(target: DiskWriteTarget): void {
    this.metrics.diskWriteFailures.inc({ target });
  }

  /** The recorded set changed: `count` streams now, `added` new ones. */
  streamsChanged(change: { added: readonly string[]; count: number; sink: string }): void {
    this.metrics.declare({ streams: change.added, sink: change.sink });
    this.metrics.streamsActive.set(change.count);
  }

  /** A stream's update-id chain broke (the recorder logs it and counts it). */
  gapDetected(stream: string, gap: { expected: number; received: number }): void {
    this.#state.sequenceGaps++;
    this.metrics.sequenceGaps.inc();
    recorderLog.warn("Sequence gap on {stream}: expected {expected}, received {received}", {
      stream,
      ...gap,
    });
    this.activity.event({
      at: this.#now(),
      kind: "gap",
      subject: stream,
      detail: `expected update id ${gap.expected}, received ${gap.received}`,
    });
  }

  /** The wall clock stepped; receive times are re-anchored to it (feed/clock.ts). */
  clockStepped(step: ClockStep): void {
    this.metrics.clockSteps.inc();
    if (step.sincePreviousRun) {
      clockLog.warn(
        "The wall clock is {behindMs} ms behind the last receive time of the run before; " +
          "receive times stay just after it until the clock passes it",
        { behindMs: -step.stepMs, stepMs: step.stepMs },
      );
      return;
    }
    clockLog.warn(
      "The wall clock stepped {direction} by {stepMs} ms; receive times re-anchored to it",
      { direction: step.direction, stepMs: step.stepMs },
    );
  }

  /** The process (or the machine) was suspended; `reason` says which, in words. */
  suspended(suspension: Suspension, reason: string): void {
    this.metrics.suspensions.inc();
    this.#tracker?.suspended(this.#now(), suspension.durationMs, reason);
    clockLog.warn(
      "{reason} for {seconds} s (nothing was received meanwhile); " +
        "replacing every connection now",
      { reason, seconds: Math.round(suspension.durationMs / 1000), ...suspension },
    );
  }

  /** GET /time measured the local clock against Binance's. */
  clockOffsetMeasured(seconds: number): void {
    this.#state.clockOffsetSeconds = seconds;
    this.metrics.clockOffset.set(seconds);
  }

  /** A sampled message arrived `seconds` after its event time E. */
  exchangeLagSampled(seconds: number): void {
    const lag = this.#state.exchangeLag as Map<string, { count: number; sum: number }>;
    const entry = lag.get(this.#market) ?? { count: 0, sum: 0 };
    entry.count++;
    entry.sum += seconds;
    lag.set(this.#market, entry);
    this.metrics.exchangeLag.observe({ market: this.#market }, seconds);
  }

  /** A socket opened (a first connection, a reconnect or a rotation's successor). */
  connectionOpened(name: ConnectionName, info: OpenInfo): void {
    this.#state.webSockets++;
    this.metrics.wsConnections.inc();
    log.info("Connection {conn} open ({streams} streams, socket {socketId}, {role})", {
      conn: name.conn,
      streams: name.streams,
      socketId: info.socketId,
      role: info.role,
      opened: info.opened,
    });
  }

  /** Binance acknowledged a live SUBSCRIBE on a socket. */
  connectionSubscribed(
    name: ConnectionName,
    info: { socketId: number; role: SocketRole; streams: readonly string[] },
  ): void {
    log.debug("Connection {conn} socket {socketId}: {count} streams subscribed", {
      conn: name.conn,
      socketId: info.socketId,
      count: info.streams.length,
    });
  }

  /** A socket that had opened closed: by us (shutdown, rotation) or not. */
  connectionClosed(name: ConnectionName, info: CloseInfo): void {
    const { conn } = name;
    this.#state.webSockets--;
    this.metrics.wsConnections.dec();
    if (info.cause === "shutdown" || info.cause === "rotated") {
      log.info("Connection {conn} socket {socketId} closed ({cause})", { conn, ...info });
      return;
    }
    this.#reconnect(info.cause);
    this.activity.event({
      at: this.#now(),
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
  }

  /** An attempt to connect that never opened. */
  connectFailed(name: ConnectionName, info: CloseInfo): void {
    const { conn } = name;
    this.#reconnect(info.cause);
    this.activity.event({
      at: this.#now(),
      kind: "connect-failed",
      subject: `conn ${conn}`,
      detail: `${info.cause}: ${info.reason}; retrying in ${info.retryInMs} ms`,
    });
    log.warn("Connection {conn} could not open ({reason}); retrying in {retryInMs} ms", {
      conn,
      ...info,
    });
  }

  #reconnect(cause: string): void {
    this.#state.reconnects++;
    this.metrics.reconnects.inc({ cause });
  }
}
