/**
 * The shape of GET /status (http.ts builds it, page.ts renders it), apart so
 * that the page need not import the server.
 */

import type { ActivityEvent } from "./activity.ts";
import type { HealthLevel, HourRates } from "./health.ts";

export interface StatusReport {
  readonly version: string;
  readonly instanceId: string | null;
  readonly startedAt: string;
  readonly uptimeSeconds: number;
  readonly health: HealthLevel;
  readonly rates: HourRates & { readonly restartsLastHour: number };
  readonly totals: {
    readonly messages: number;
    readonly bytes: number;
    readonly batchesStored: number;
    readonly uploadFailures: number;
    readonly droppedMessages: number;
    readonly sequenceGaps: number;
  };
  readonly spool: {
    readonly bytes: number;
    readonly batches: number;
    readonly maxBytes: number | null;
    readonly full: boolean;
  };
  readonly lastUpload: {
    readonly at: string | null;
    readonly ageSeconds: number | null;
    /** Sealed batches waiting to be stored (uploader and spool). */
    readonly backlog: number;
  };
  /** Sealed batches' bytes waiting in memory, and memory held by open batches. */
  readonly queue: { readonly uploadQueueBytes: number; readonly openBatchBytes: number };
  readonly connections: { readonly webSockets: number };
  readonly memory: { readonly residentBytes: number };
  readonly streams: Readonly<
    Record<string, {
      readonly lastMessageAgeSeconds: number;
      /** Messages/s over about the last minute; absent until two samples exist. */
      readonly messagesPerSecond?: number;
    }>
  >;
  /** The latest gaps and disconnects, newest first. */
  readonly recentEvents: readonly (Omit<ActivityEvent, "at"> & { readonly at: string })[];
  /** Clock and lag against Binance (l2_clock_offset_seconds, l2_exchange_lag_seconds). */
  readonly exchange?: ExchangeTiming;
  /** What is recorded now (it follows the exchange's listings). */
  readonly recording?: RecordingState;
}

export interface RecordingState {
  readonly symbols: number;
  readonly streams: number;
  /** DEPTH_LEVEL=full: diff streams whose first REST snapshot is not stored yet, in queue order. */
  readonly awaitingFirstSnapshot: readonly string[];
}

export interface ExchangeTiming {
  /** Local clock minus Binance's, seconds; null until measured. */
  readonly clockOffsetSeconds: number | null;
  /** Per market: sampled messages and their mean receive lag behind `E`, seconds. */
  readonly lag: Readonly<
    Record<string, { readonly samples: number; readonly meanSeconds: number }>
  >;
}
