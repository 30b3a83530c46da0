/**
 * The receive clock of a run (feed/clock.ts), wired to what a suspension or a
 * clock step means for the record: an event line in every stream, the named
 * event (ops/events.ts: a metric, a log line and, for a suspension, the health
 * warning) and, for a suspension, the caller's reaction (replace every
 * connection, fresh snapshots).
 *
 * `buffered_until` in a `suspended` line: frames read right after a resume
 * from a socket that was open during the pause sat in the OS's buffers, so
 * their receive times say when the process woke, not when they arrived.
 * Every such socket is closed at once and delivers nothing after its close
 * timeout (2 s), so `buffered_until` = the resume time + 3 s bounds them:
 * a line of that stream with `recv_ts <= buffered_until` may carry such a
 * time; a reader who needs exact times drops or flags those lines. (Frames
 * from the new connection can fall before it too: the bound is conservative.)
 */

import type { Config } from "../config_types.ts";
import { type ClockStep, ReceiveClock, type Suspension } from "../feed/clock.ts";
import type { Telemetry } from "../ops/events.ts";
import type { Recorder } from "../feed/recorder.ts";

/** How long after a resume lines from the old sockets may still be read, ms. */
export const BUFFERED_ALLOWANCE_MS = 3000;

export interface ClockWiring {
  readonly config: Config;
  /** Every stream recorded: each gets the event lines. */
  /** The streams recorded now (the set follows the exchange). */
  readonly streams: () => readonly string[];
  readonly recorder: Recorder;
  /** The `clockStepped` and `suspended` events: log line, metric, health warning. */
  readonly telemetry: Pick<Telemetry, "clockStepped" | "suspended">;
  readonly wallMs?: () => number;
  readonly monotonicMs?: () => number;
  /** Runs just after the `suspended` lines are written (not inside the clock reading). */
  readonly onSuspended: () => void;
  /** The operating system, for the words of the reason (default Deno.build.os). */
  readonly os?: string;
}

export function startClock(wiring: ClockWiring): ReceiveClock {
  const { recorder, telemetry } = wiring;
  // Batches age on the monotonic clock, which a sleep stops: after a jump of
  // a batch or more, what comes next opens new batches keyed at the new time
  // (its date= and hour= partition), not the ones opened before the jump.
  const batchMs = wiring.config.batchSeconds * 1000;
  return new ReceiveClock({
    wallMs: wiring.wallMs,
    monotonicMs: wiring.monotonicMs,
    suspendThresholdMs: wiring.config.suspendThresholdSeconds * 1000,
    onStep: (step) => clockStepped(wiring, step),
    onSuspend: (suspension) => {
      const reason = suspensionReason(suspension, wiring.os ?? Deno.build.os);
      telemetry.suspended(suspension, reason);
      if (suspension.durationMs >= batchMs) recorder.sealAll();
      recorder.event(wiring.streams(), "suspended", suspension.toUs, suspendedDetails(suspension));
      // Out of the clock reading (which may sit inside a socket's handler).
      setTimeout(wiring.onSuspended, 0);
    },
  });
}

/**
 * A step of the wall clock: the named event, a `clock_step` line in every
 * stream and, after a forward step of a batch or more, every open batch
 * sealed (what comes next is keyed at the new time).
 */
export function clockStepped(
  wiring: Pick<ClockWiring, "config" | "streams" | "recorder" | "telemetry">,
  step: ClockStep,
): void {
  const { recorder, telemetry } = wiring;
  telemetry.clockStepped(step);
  const batchMs = wiring.config.batchSeconds * 1000;
  if (step.direction === "forward" && step.stepMs >= batchMs) recorder.sealAll();
  recorder.event(wiring.streams(), "clock_step", step.atUs, {
    step_ms: step.stepMs,
    direction: step.direction,
  });
}

/** The details of a `suspended` event line. */
export function suspendedDetails(s: Suspension): Record<string, unknown> {
  return {
    from: s.fromUs,
    to: s.toUs,
    duration_ms: s.durationMs,
    buffered_until: s.toUs + BUFFERED_ALLOWANCE_MS * 1000,
    measured_by: s.measuredBy,
  };
}

/** "the Mac slept" when the wall clock showed it on macOS; what was seen otherwise. */
export function suspensionReason(s: Suspension, os: string): string {
  if (s.measuredBy === "monotonic") return "the process was suspended";
  return os === "darwin" ? "the Mac slept" : "the machine slept";
}
