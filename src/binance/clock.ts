/**
 * How far the local clock is from Binance's: receive times are stamped on
 * the local clock, so they are only as good as it is. `GET /time` at start
 * and every `intervalMs`, corrected for the round trip (the server read its
 * clock, on average, halfway through it). Offset = local − Binance, seconds:
 * positive means the local clock is ahead.
 */

import { getLogger } from "@logtape/logtape";
import { delay } from "../delay.ts";
import type { Market } from "../config_types.ts";
import { restPaths } from "./streams.ts";
import type { RestLimiter } from "./rest.ts";

const log = getLogger(["l2", "clock"]);

/** Above this (either way) the offset is logged as a warning. */
export const CLOCK_WARN_SECONDS = 1;

/**
 * The local clock's offset from the server's, seconds, for a request sent at
 * `sentAt` and answered at `receivedAt` (local ms) with `serverTime` (ms).
 */
export function clockOffsetSeconds(
  times: { sentAt: number; serverTime: number; receivedAt: number },
): number {
  return ((times.sentAt + times.receivedAt) / 2 - times.serverTime) / 1000;
}

export interface ClockWatchOptions {
  readonly restUrl: string;
  readonly market: Market;
  /** A new measurement, offset in seconds. */
  readonly onOffset: (seconds: number) => void;
  readonly signal: AbortSignal;
  readonly intervalMs?: number;
  /**
   * The collector's REST limiter: the call waits out a 429/418 ban and the
   * spacing like every other (weight 1); it reads the wall clock around it.
   */
  readonly limiter: RestLimiter;
}

/** Measures once now, then every `intervalMs` (default 10 min) until `signal` aborts. */
export async function watchClock(options: ClockWatchOptions): Promise<void> {
  const { signal } = options;
  while (!signal.aborted) {
    const offset = await measure(options);
    if (offset !== undefined) {
      options.onOffset(offset);
      const rounded = Math.round(offset * 1000) / 1000;
      if (Math.abs(offset) > CLOCK_WARN_SECONDS) {
        log.warn(
          "The local clock is {offset} s off Binance's; receive times are only as good as it is",
          { offset: rounded },
        );
      } else {
        log.debug("Clock offset from Binance: {offset} s", { offset: rounded });
      }
    }
    await delay(options.intervalMs ?? 600_000, signal);
  }
}

async function measure(options: ClockWatchOptions): Promise<number | undefined> {
  const url = `${options.restUrl}${restPaths(options.market).time}`;
  try {
    const { status, text, sentAt, receivedAt } = await options.limiter.get(url, {
      weight: 1,
      signal: options.signal,
    });
    const body = status === 200 ? JSON.parse(text) as { serverTime?: unknown } : {};
    if (typeof body.serverTime !== "number") {
      log.warn("Could not read Binance's time from {url} (HTTP {status})", { url, status });
      return undefined;
    }
    return clockOffsetSeconds({ sentAt, serverTime: body.serverTime, receivedAt });
  } catch (error) {
    if (!options.signal.aborted) {
      log.warn("Could not read Binance's time from {url}: {error}", {
        url,
        error: error instanceof Error ? error.message : String(error),
      });
    }
    return undefined;
  }
}
