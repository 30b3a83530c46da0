/**
 * When a connection opens its next socket, as pure functions of time and
 * state (no timers, no sockets; randomness injected): the tests drive them
 * with a hand-set clock.
 *
 * - Backoff: the first attempt after a socket that stayed up for
 *   `healthyAfterMs` and delivered a frame (or one closed because the process
 *   was suspended) is immediate; each further failure in a row waits an exponential backoff
 *   with full jitter, `initialMs` doubling up to `maxMs` (cockatiel's
 *   generator gives the bound; the jitter draws from `random`).
 * - A successor that failed is tried again after the same backoff, at least
 *   a second later: the primary still runs, nothing is lost meanwhile.
 * - Stale: a socket that delivered nothing for `staleAfterMs` is replaced;
 *   time the process did not run (a watchdog round more than a second late)
 *   is not the socket's silence.
 */

import { noJitterGenerator } from "cockatiel";

export interface BackoffSettings {
  /** Bound of the first wait, ms. */
  readonly initialMs: number;
  /** Largest bound, ms. */
  readonly maxMs: number;
  /** How long a socket must have been up for its end to count as healthy, ms. */
  readonly healthyAfterMs: number;
}

/** Failures in a row, of primaries and of successors, since the last healthy socket. */
export interface ReconnectState {
  readonly failures: number;
  readonly successorFailures: number;
}

export const FRESH: ReconnectState = { failures: 0, successorFailures: 0 };

/** The least wait before a failed successor is tried again, ms. */
export const SUCCESSOR_RETRY_MIN_MS = 1000;

/** Upper bound of the wait after failure `attempt` in a row (0 for the first), ms. */
export function backoffBound(attempt: number, settings: BackoffSettings): number {
  const [bound] = noJitterGenerator(attempt, {
    generator: noJitterGenerator,
    initialDelay: settings.initialMs,
    maxDelay: settings.maxMs,
    exponent: 2,
  });
  return bound;
}

/** The wait after failure `attempt` in a row: full jitter over [0, bound). */
export function backoffDelay(
  attempt: number,
  settings: BackoffSettings,
  random: () => number,
): number {
  return Math.floor(random() * backoffBound(attempt, settings));
}

/** How a socket ended, as far as the policy cares. */
export interface SocketEnd {
  /** It had opened. */
  readonly opened: boolean;
  /**
   * It delivered a frame (or answered a liveness question). One that never
   * did is not healthy however long it stayed open: a link that opens and
   * stays silent (a stream name Binance acknowledges but does not publish)
   * would otherwise be replaced at once, forever.
   */
  readonly delivered?: boolean;
  readonly uptimeMs: number;
  readonly cause: string;
}

/** The primary ended and no successor took over: how long to wait before the next socket. */
export function afterPrimaryEnded(
  state: ReconnectState,
  end: SocketEnd,
  settings: BackoffSettings,
  random: () => number,
): { state: ReconnectState; waitMs: number } {
  const healthy = end.cause === "suspended" ||
    (end.opened && end.delivered !== false && end.uptimeMs >= settings.healthyAfterMs);
  if (healthy) return { state: { ...state, failures: 0 }, waitMs: 0 };
  return {
    state: { ...state, failures: state.failures + 1 },
    waitMs: backoffDelay(state.failures, settings, random),
  };
}

/** A successor failed while the primary runs: how long until the next try. */
export function afterSuccessorFailed(
  state: ReconnectState,
  settings: BackoffSettings,
  random: () => number,
): { state: ReconnectState; waitMs: number } {
  const waitMs = backoffDelay(state.successorFailures, settings, random);
  return {
    state: { ...state, successorFailures: state.successorFailures + 1 },
    waitMs: Math.max(SUCCESSOR_RETRY_MIN_MS, waitMs),
  };
}

/** What to do when the primary ends, given where its successor is. */
export type PrimaryEndDecision =
  /**
   * The successor is open, or its socket is connecting: it takes over at once
   * (whatever the old one missed, update ids show). A connecting one is
   * nearer than a reconnect: Binance may close a connection soon after its
   * `serverShutdown`, before the successor's handshake is done.
   */
  | "promote"
  /**
   * Reconnect as a primary; a successor only asked for (no socket yet, its
   * attempt waiting on the connection limiter) is dropped first, so that no
   * later retirement can close the socket the streams moved to.
   */
  | "reconnect";

export function onPrimaryEnd(
  successor: "none" | "requested" | "opening" | "open",
): PrimaryEndDecision {
  return successor === "open" || successor === "opening" ? "promote" : "reconnect";
}

/** The cause reported for a retired primary that finished closing. */
export function retiredCause(
  aborted: boolean,
  cause: string,
): "shutdown" | "suspended" | "rotated" {
  if (aborted) return "shutdown";
  return cause === "suspended" ? "suspended" : "rotated";
}

/** How often the watchdog looks at a socket, ms. */
export function watchEveryMs(staleAfterMs: number): number {
  return Math.max(50, Math.min(1000, staleAfterMs / 4));
}

/** What the watchdog knows of a socket's silence: monotonic ms. */
export interface Silence {
  /** When the last frame came (moved forward by time the process did not run). */
  readonly lastFrameAt: number;
  /** When the watchdog last looked. */
  readonly watchedAt: number;
}

/** A round more than this late means the process did not run (it was suspended). */
const SUSPENDED_AFTER_MS = 1000;

/**
 * One watchdog round at `now`: a round late by more than a second means the
 * process was suspended, and that time is not counted as the socket's silence.
 */
export function watchRound(silence: Silence, now: number, everyMs: number): Silence {
  const late = now - silence.watchedAt - everyMs;
  const lastFrameAt = late > SUSPENDED_AFTER_MS ? silence.lastFrameAt + late : silence.lastFrameAt;
  return { lastFrameAt, watchedAt: now };
}

/** Whether a socket silent since `silence.lastFrameAt` is stale at `now`. */
export function isStale(silence: Silence, now: number, staleAfterMs: number): boolean {
  return now - silence.lastFrameAt >= staleAfterMs;
}
