/**
 * Health: docs/DESIGN.md's thresholds as a pure function of a snapshot and the
 * time (`evaluateHealth`), plus the small clock-injected state that turns
 * ever-growing metric counters into "the last hour" (`HourWindow`,
 * `HealthTracker`). Nothing here reads a clock, the disk or the network;
 * the shell (http.ts) samples the named events' state (events.ts) and
 * passes `now` in.
 */

export type HealthLevel = "ok" | "warning" | "critical";

export interface HealthCheck {
  readonly name: string;
  readonly status: HealthLevel;
  readonly message: string;
  readonly value?: number;
}

export interface Health {
  /** The worst level of any check. */
  readonly status: HealthLevel;
  readonly checks: readonly HealthCheck[];
}

/** warning: more than this many reconnects in the last hour. */
export const RECONNECTS_WARNING_PER_HOUR = 5;
/** warning: more than this fraction of upload attempts failed in the last hour. */
export const UPLOAD_FAILURE_RATIO_WARNING = 0.1;
/** critical: batches have waited this long (ms) with no successful upload. */
export const UPLOAD_STALL_CRITICAL_MS = 5 * 60_000;
/** critical: more than this many restarts in the last hour. */
export const RESTARTS_CRITICAL_PER_HOUR = 3;
/** critical: resident memory above this (1.5 GB, 1024-based like every size in the config). */
export const RESIDENT_MEMORY_CRITICAL_BYTES = 1.5 * 1024 ** 3;
/**
 * The spool counts as full from this fraction of SPOOL_MAX_BYTES: the next
 * batch may no longer fit, and a refused batch is a dropped batch.
 */
export const SPOOL_FULL_FRACTION = 0.95;
/**
 * warning: the recorded set has held no stream for this long (ms). Not
 * critical: an empty set may be meant (a SHARD whose share of the named
 * symbols is empty, a pattern waiting for a listing).
 */
export const RECORDING_NOTHING_WARNING_MS = 60_000;
/** warning: the process was suspended (the Mac slept) within this long (ms). */
export const SUSPENSION_WARNING_MS = 3_600_000;

const HOUR_MS = 3_600_000;

export interface HealthInputs {
  readonly reconnectsLastHour: number;
  readonly uploadAttemptsLastHour: number;
  readonly uploadFailuresLastHour: number;
  /** Wall-clock ms of the last batch a sink confirmed, if any. */
  readonly lastSuccessfulUploadAt?: number;
  /** Wall-clock ms since when sealed batches have been waiting to be stored; unset: none wait. */
  readonly batchesDueSince?: number;
  readonly restartsLastHour: number;
  readonly residentBytes: number;
  readonly spoolFull: boolean;
  /** Messages that could be neither stored nor spooled in the last hour. */
  readonly droppedMessagesLastHour: number;
  /** The latest suspension: wall-clock ms it ended, its length and why ("the Mac slept"). */
  readonly lastSuspension?: LastSuspension;
  /** Streams recorded now; unset: not known (no recorder), and not judged. */
  readonly streamsRecorded?: number;
  /** Wall-clock ms since when no stream has been recorded; unset while some are. */
  readonly recordingNothingSince?: number;
}

export interface LastSuspension {
  readonly at: number;
  readonly durationMs: number;
  readonly reason: string;
}

const RANK: Record<HealthLevel, number> = { ok: 0, warning: 1, critical: 2 };

/** The worse of two levels. */
export function worse(a: HealthLevel, b: HealthLevel): HealthLevel {
  return RANK[b] > RANK[a] ? b : a;
}

/** Every threshold of docs/DESIGN.md "Health thresholds", evaluated at `now` (wall-clock ms). */
export function evaluateHealth(inputs: HealthInputs, now: number): Health {
  const checks: HealthCheck[] = [
    reconnectsCheck(inputs),
    uploadFailuresCheck(inputs),
    uploadStallCheck(inputs, now),
    restartsCheck(inputs),
    memoryCheck(inputs),
    spoolCheck(inputs),
    droppedCheck(inputs),
  ];
  const recording = recordingCheck(inputs, now);
  if (recording) checks.push(recording);
  // Present only while it applies: a suspension within the last hour.
  const suspension = suspensionCheck(inputs, now);
  if (suspension) checks.push(suspension);
  return { status: checks.map((c) => c.status).reduce(worse, "ok"), checks };
}

function reconnectsCheck({ reconnectsLastHour: n }: HealthInputs): HealthCheck {
  const over = n > RECONNECTS_WARNING_PER_HOUR;
  return {
    name: "reconnects",
    status: over ? "warning" : "ok",
    message: `${n} reconnects in the last hour` +
      (over ? ` (more than ${RECONNECTS_WARNING_PER_HOUR})` : ""),
    value: n,
  };
}

function uploadFailuresCheck(inputs: HealthInputs): HealthCheck {
  const attempts = inputs.uploadAttemptsLastHour;
  const failures = Math.min(inputs.uploadFailuresLastHour, attempts);
  const ratio = attempts > 0 ? failures / attempts : 0;
  const over = ratio > UPLOAD_FAILURE_RATIO_WARNING;
  return {
    name: "upload_failures",
    status: over ? "warning" : "ok",
    message: `${failures} of ${attempts} upload attempts failed in the last hour` +
      (over ? ` (${percent(ratio)}, more than ${percent(UPLOAD_FAILURE_RATIO_WARNING)})` : ""),
    value: ratio,
  };
}

function uploadStallCheck(inputs: HealthInputs, now: number): HealthCheck {
  const { batchesDueSince: dueSince, lastSuccessfulUploadAt: lastOk } = inputs;
  if (dueSince === undefined) {
    return { name: "upload_stall", status: "ok", message: "no batch waits to be stored" };
  }
  // Waiting counts from the later of "batches became due" and "the last store worked".
  const waitingMs = Math.max(0, now - Math.max(dueSince, lastOk ?? -Infinity));
  const stalled = waitingMs >= UPLOAD_STALL_CRITICAL_MS;
  const seconds = Math.floor(waitingMs / 1000);
  return {
    name: "upload_stall",
    status: stalled ? "critical" : "ok",
    message: stalled
      ? `no successful upload for ${seconds} s while batches wait ` +
        `(limit ${UPLOAD_STALL_CRITICAL_MS / 1000} s)`
      : `batches wait; ${seconds} s without a successful upload ` +
        `(critical at ${UPLOAD_STALL_CRITICAL_MS / 1000} s)`,
    value: seconds,
  };
}

function restartsCheck({ restartsLastHour: n }: HealthInputs): HealthCheck {
  const over = n > RESTARTS_CRITICAL_PER_HOUR;
  return {
    name: "restarts",
    status: over ? "critical" : "ok",
    message: `${n} restarts in the last hour` +
      (over ? ` (more than ${RESTARTS_CRITICAL_PER_HOUR})` : ""),
    value: n,
  };
}

function memoryCheck({ residentBytes: bytes }: HealthInputs): HealthCheck {
  const over = bytes > RESIDENT_MEMORY_CRITICAL_BYTES;
  return {
    name: "memory",
    status: over ? "critical" : "ok",
    message: `resident memory ${mib(bytes)}` +
      (over ? ` (above ${mib(RESIDENT_MEMORY_CRITICAL_BYTES)})` : ""),
    value: bytes,
  };
}

function spoolCheck({ spoolFull }: HealthInputs): HealthCheck {
  return {
    name: "spool",
    status: spoolFull ? "critical" : "ok",
    message: spoolFull
      ? "spool is full: batches the sink cannot take will be dropped"
      : "spool has room",
  };
}

function droppedCheck({ droppedMessagesLastHour: n }: HealthInputs): HealthCheck {
  return {
    name: "dropped",
    status: n > 0 ? "critical" : "ok",
    message: n > 0
      ? `${n} messages dropped in the last hour (neither stored nor spooled)`
      : "no message dropped in the last hour",
    value: n,
  };
}

function recordingCheck(inputs: HealthInputs, now: number): HealthCheck | undefined {
  const { streamsRecorded: streams, recordingNothingSince: since } = inputs;
  if (streams === undefined) return undefined;
  if (streams > 0 || since === undefined) {
    return {
      name: "recording",
      status: "ok",
      message: `${streams} stream${streams === 1 ? "" : "s"} recorded`,
      value: streams,
    };
  }
  const seconds = Math.floor(Math.max(0, now - since) / 1000);
  const limit = RECORDING_NOTHING_WARNING_MS / 1000;
  return seconds >= limit
    ? {
      name: "recording",
      status: "warning",
      message: `no stream recorded for ${seconds} s: SYMBOL (less SYMBOL_EXCLUDE, within SHARD) ` +
        "matches no symbol exchangeInfo lists now, or exchangeInfo could not be read (see the log)",
      value: 0,
    }
    : {
      name: "recording",
      status: "ok",
      message: `no stream recorded yet (${seconds} s; a warning at ${limit} s)`,
      value: 0,
    };
}

function suspensionCheck(
  { lastSuspension: s }: HealthInputs,
  now: number,
): HealthCheck | undefined {
  if (s === undefined || now - s.at >= SUSPENSION_WARNING_MS) return undefined;
  const minutes = Math.max(0, Math.floor((now - s.at) / 60_000));
  return {
    name: "suspension",
    status: "warning",
    message: `${s.reason} for ${Math.round(s.durationMs / 1000)} s, ${minutes} min ago: ` +
      "nothing was received meanwhile (see the suspended lines in the archive)",
    value: Math.round(s.durationMs / 1000),
  };
}

function percent(ratio: number): string {
  return `${Math.round(ratio * 1000) / 10} %`;
}

function mib(bytes: number): string {
  return `${Math.round(bytes / 1024 ** 2)} MiB`;
}

/** `used >= SPOOL_FULL_FRACTION` of `maxBytes`. */
export function spoolIsFull(usedBytes: number, maxBytes: number | undefined): boolean {
  return maxBytes !== undefined && usedBytes >= maxBytes * SPOOL_FULL_FRACTION;
}

/**
 * Counts over a sliding hour: a ring of per-minute buckets. `total(now)` sums
 * the current minute and the 59 before it, so "the last hour" is between 59
 * and 60 minutes long. Time is passed in; a time older than the ring is ignored.
 */
export class HourWindow {
  readonly #bucketMs: number;
  readonly #counts: number[];
  readonly #keys: number[];

  constructor(options: { bucketMs?: number; buckets?: number } = {}) {
    this.#bucketMs = options.bucketMs ?? 60_000;
    const buckets = options.buckets ?? HOUR_MS / this.#bucketMs;
    this.#counts = new Array(buckets).fill(0);
    this.#keys = new Array(buckets).fill(-Infinity);
  }

  add(now: number, n = 1): void {
    const key = Math.floor(now / this.#bucketMs);
    const i = this.#slot(key);
    if (this.#keys[i] > key) return; // the slot already holds a newer minute
    if (this.#keys[i] !== key) {
      this.#keys[i] = key;
      this.#counts[i] = 0;
    }
    this.#counts[i] += n;
  }

  total(now: number): number {
    const key = Math.floor(now / this.#bucketMs);
    let sum = 0;
    for (let i = 0; i < this.#keys.length; i++) {
      const k = this.#keys[i];
      if (k <= key && k > key - this.#keys.length) sum += this.#counts[i];
    }
    return sum;
  }

  /** How much time `total(now)` covers, ms. */
  spanMs(now: number): number {
    return (now % this.#bucketMs) + (this.#keys.length - 1) * this.#bucketMs;
  }

  #slot(key: number): number {
    const n = this.#keys.length;
    return ((key % n) + n) % n;
  }
}

/** Totals read from the metrics at one moment (counters since the process started). */
export interface MetricsSample {
  readonly messages: number;
  readonly bytes: number;
  readonly reconnects: number;
  readonly uploadAttempts: number;
  readonly uploadFailures: number;
  readonly batchesStored: number;
  readonly droppedMessages: number;
  /** Sealed batches not yet stored: in the uploader (queued or in flight) or in the spool. */
  readonly backlog: number;
  /**
   * Wall-clock ms of the last batch a sink confirmed (the batchStored
   * event's time); without it the tracker takes the time of the sample that
   * first saw `batchesStored` grow.
   */
  readonly lastStoredAt?: number;
  /** Streams recorded now (the universe's set); unset when there is no recorder. */
  readonly streamsRecorded?: number;
}

export interface HourRates {
  /** Averages over the last hour, or since the start when that is shorter. */
  readonly messagesPerSecond: number;
  readonly bytesPerSecond: number;
  readonly reconnectsLastHour: number;
  readonly uploadAttemptsLastHour: number;
  readonly uploadFailuresLastHour: number;
  readonly batchesStoredLastHour: number;
  readonly droppedMessagesLastHour: number;
}

/** Every counter at zero: where a tracker starts. */
export const ZERO_SAMPLE: Readonly<MetricsSample> = {
  messages: 0,
  bytes: 0,
  reconnects: 0,
  uploadAttempts: 0,
  uploadFailures: 0,
  batchesStored: 0,
  droppedMessages: 0,
  backlog: 0,
};

type Counted = Exclude<keyof MetricsSample, "backlog" | "lastStoredAt" | "streamsRecorded">;

/**
 * Turns successive metric samples into last-hour windows: each `observe`
 * credits the counters' growth since the previous sample to the current
 * minute. Sample every few seconds (the health loop) and on each request;
 * event times are accurate to the sampling interval. The counters start at
 * zero with the process, so the first sample counts from `startedAt`.
 */
export class HealthTracker {
  readonly startedAt: number;
  readonly #windows: Record<Counted, HourWindow> = {
    messages: new HourWindow(),
    bytes: new HourWindow(),
    reconnects: new HourWindow(),
    uploadAttempts: new HourWindow(),
    uploadFailures: new HourWindow(),
    batchesStored: new HourWindow(),
    droppedMessages: new HourWindow(),
  };
  #previous: Record<Counted | "backlog", number> = { ...ZERO_SAMPLE };
  #lastSuccessAt: number | undefined;
  #storedAtSeen: number | undefined;
  #dueSince: number | undefined;
  #lastSuspension: LastSuspension | undefined;
  #streamsRecorded: number | undefined;
  #nothingSince: number | undefined;

  constructor(startedAt: number) {
    this.startedAt = startedAt;
  }

  observe(sample: MetricsSample, now: number): void {
    if (sample.lastStoredAt !== undefined) {
      // Only a store not seen before moves it (each sample repeats the last one).
      if (sample.lastStoredAt !== this.#storedAtSeen) {
        this.#storedAtSeen = sample.lastStoredAt;
        this.#lastSuccessAt = Math.max(sample.lastStoredAt, this.#lastSuccessAt ?? -Infinity);
      }
    } else if (sample.batchesStored > this.#previous.batchesStored) this.#lastSuccessAt = now;
    // A time after `now` is from before the wall clock stepped back: it counts as now,
    // or a store stamped then would hide an upload stall for as long as the step.
    if (this.#lastSuccessAt !== undefined && this.#lastSuccessAt > now) this.#lastSuccessAt = now;
    if (this.#dueSince !== undefined && this.#dueSince > now) this.#dueSince = now;
    for (const name of Object.keys(this.#windows) as Counted[]) {
      const growth = sample[name] - this.#previous[name];
      // Counters only grow; a lower value is a sample read before the last
      // one (two readers interleaved) and must not lower the base.
      if (growth > 0) {
        this.#windows[name].add(now, growth);
        this.#previous[name] = sample[name];
      }
    }
    this.#previous.backlog = sample.backlog;
    if (sample.backlog > 0) this.#dueSince ??= now;
    else this.#dueSince = undefined;
    this.#observeRecorded(sample.streamsRecorded, now);
  }

  #observeRecorded(streams: number | undefined, now: number): void {
    this.#streamsRecorded = streams;
    if (streams === undefined || streams > 0) this.#nothingSince = undefined;
    else this.#nothingSince = Math.min(this.#nothingSince ?? now, now);
  }

  /** The process found it had not run for `durationMs` (`reason`: "the Mac slept"). */
  suspended(at: number, durationMs: number, reason: string): void {
    this.#lastSuspension = { at, durationMs, reason };
  }

  /** Wall-clock ms of the last store: the event's, or the sample's that first saw it. */
  get lastSuccessAt(): number | undefined {
    return this.#lastSuccessAt;
  }

  /** The latest sample given to `observe`. */
  get latest(): MetricsSample {
    return this.#previous;
  }

  inputs(
    now: number,
    facts: { restartsLastHour: number; residentBytes: number; spoolFull: boolean },
  ): HealthInputs {
    return {
      ...facts,
      reconnectsLastHour: this.#windows.reconnects.total(now),
      uploadAttemptsLastHour: this.#windows.uploadAttempts.total(now),
      uploadFailuresLastHour: this.#windows.uploadFailures.total(now),
      lastSuccessfulUploadAt: this.#lastSuccessAt,
      batchesDueSince: this.#dueSince,
      droppedMessagesLastHour: this.#windows.droppedMessages.total(now),
      lastSuspension: this.#lastSuspension,
      streamsRecorded: this.#streamsRecorded,
      recordingNothingSince: this.#nothingSince,
    };
  }

  rates(now: number): HourRates {
    const w = this.#windows;
    const coveredMs = Math.max(1000, Math.min(w.messages.spanMs(now), now - this.startedAt));
    const perSecond = (n: number) => Math.round((n / coveredMs) * 1000 * 100) / 100;
    return {
      messagesPerSecond: perSecond(w.messages.total(now)),
      bytesPerSecond: perSecond(w.bytes.total(now)),
      reconnectsLastHour: w.reconnects.total(now),
      uploadAttemptsLastHour: w.uploadAttempts.total(now),
      uploadFailuresLastHour: w.uploadFailures.total(now),
      batchesStoredLastHour: w.batchesStored.total(now),
      droppedMessagesLastHour: w.droppedMessages.total(now),
    };
  }
}
