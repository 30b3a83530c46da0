/**
 * The receive clock: every `recv_ts` the collector writes comes from here.
 *
 * Promises:
 * - Receive times come from the monotonic clock, anchored to the wall clock,
 *   so an NTP step or a manual change of the wall clock never bends the
 *   time between two lines. A difference between the two of more than
 *   `stepThresholdMs` (100 ms) is a step: it is reported once (`onStep`) and
 *   the clock re-anchors, so later lines carry wall-clock time again. A
 *   smaller difference (NTP slewing, crystal drift: under 1 ms a second) is
 *   followed silently: each tick moves the receive clock a tenth of the way
 *   to the wall clock, at most 1 ms, so the whole milliseconds of
 *   `Date.now()` do not jitter the time between two lines.
 * - Receive times never decrease: after a backward step, lines keep the last
 *   time given out until the clock passes it. `continueFrom` carries that
 *   across a restart: given the last receive time of the run before, later
 *   times are after it, and a wall clock behind it is a backward step.
 * - A suspension is noticed: `tick()` is meant to run every `tickMs` (1 s);
 *   when the monotonic clock says it comes more than `suspendThresholdMs`
 *   late, the process did not run (SIGSTOP, or a system whose monotonic clock
 *   counts sleep). A Mac's monotonic clock stops while the machine sleeps, so
 *   a sleep shows instead as the wall clock running ahead of the monotonic
 *   one by more than the threshold; that is reported as a suspension too
 *   (`measuredBy: "wall"`), not as a step. (A forward wall step of that size
 *   looks exactly the same from inside the process.)
 * - Both are checked on every reading, not only at ticks: the first frame
 *   read after a resume is stamped after the suspension was reported, so its
 *   event line precedes every line stamped after the resume.
 *
 * Callbacks run synchronously inside the reading that found the condition,
 * before it returns; they get the receive time to use and must not read the
 * clock themselves.
 */

export interface ClockStep {
  /** Receive time after re-anchoring, µs: the time of the event line. */
  readonly atUs: number;
  /** Wall clock minus the receive clock, ms (positive: the wall clock jumped forward). */
  readonly stepMs: number;
  readonly direction: "forward" | "backward";
  /** Found at start: the wall clock is behind the last receive time of the run before. */
  readonly sincePreviousRun?: true;
}

export interface Suspension {
  /** The last receive time known to have passed while the process ran, µs. */
  readonly fromUs: number;
  /** The receive time at which it noticed it runs again, µs. */
  readonly toUs: number;
  readonly durationMs: number;
  /** Which clock showed it: `monotonic` (the process was stopped), `wall` (the machine slept). */
  readonly measuredBy: "monotonic" | "wall";
}

export interface ReceiveClockOptions {
  /** Wall clock, ms since the epoch. */
  readonly wallMs?: () => number;
  /** Monotonic clock, ms. */
  readonly monotonicMs?: () => number;
  readonly stepThresholdMs?: number;
  readonly tickMs?: number;
  readonly suspendThresholdMs?: number;
  readonly onStep?: (step: ClockStep) => void;
  readonly onSuspend?: (suspension: Suspension) => void;
}

export const STEP_THRESHOLD_MS = 100;
export const TICK_MS = 1000;
/** Silent drift correction: this share of the difference per tick … */
const SLEW_GAIN = 0.1;
/** … and at most this much, ms (1000 ppm: more than NTP's own 500 ppm limit). */
const MAX_SLEW_MS = 1;

export class ReceiveClock {
  readonly #wall: () => number;
  readonly #monotonic: () => number;
  readonly #stepMs: number;
  readonly #tickMs: number;
  readonly #suspendMs: number;
  readonly #options: ReceiveClockOptions;
  /** Receive time = anchorWall + (monotonic − anchorMono), ms. */
  #anchorWall: number;
  #anchorMono: number;
  /** The largest receive time given out, µs. */
  #lastUs = -Infinity;
  /** Monotonic ms of the last tick; undefined until ticks run. */
  #lastTickMono: number | undefined;

  constructor(options: ReceiveClockOptions = {}) {
    this.#options = options;
    this.#wall = options.wallMs ?? Date.now;
    this.#monotonic = options.monotonicMs ?? (() => performance.now());
    this.#stepMs = options.stepThresholdMs ?? STEP_THRESHOLD_MS;
    this.#tickMs = options.tickMs ?? TICK_MS;
    this.#suspendMs = options.suspendThresholdMs ?? 5000;
    this.#anchorMono = this.#monotonic();
    this.#anchorWall = this.#wall();
  }

  /** The receive time now, µs since the epoch; never less than the one before. */
  readonly nowMicros = (): number => {
    const mono = this.#monotonic();
    const wall = this.#wall();
    const late = this.#lastTickMono !== undefined &&
      mono - this.#lastTickMono > this.#tickMs + this.#suspendMs;
    const off = wall - this.#reading(mono);
    if (late || off > this.#stepMs || off < -this.#stepMs) this.#check(mono, wall);
    return this.#give(this.#reading(mono));
  };

  /** The largest receive time given out so far, µs; undefined before the first. */
  get lastGivenUs(): number | undefined {
    return Number.isFinite(this.#lastUs) ? this.#lastUs : undefined;
  }

  /**
   * Continues the record of an earlier run whose last receive time was
   * `previousUs`: every time given out from now on is later than it, so keys
   * and `recv_ts` keep the order of the record across the restart. Call
   * before the first reading. Returns the backward step to report when the
   * wall clock is behind it by more than the step threshold (it went back
   * while no run was recording): times stay just after `previousUs` until the
   * clock passes it, as after a step while running. The caller reports it
   * (`onStep` is not called: at start the streams may not be known yet).
   */
  continueFrom(previousUs: number): ClockStep | undefined {
    if (!Number.isFinite(previousUs) || previousUs < this.#lastUs) return undefined;
    const behindMs = previousUs / 1000 - this.#reading(this.#monotonic());
    this.#lastUs = previousUs + 1;
    if (behindMs <= this.#stepMs) return undefined;
    return {
      atUs: this.#lastUs,
      stepMs: -Math.round(behindMs),
      direction: "backward",
      sincePreviousRun: true,
    };
  }

  /** Call every `tickMs`: notices suspensions and follows slow drift. */
  tick(): void {
    const mono = this.#monotonic();
    const wall = this.#wall();
    this.#check(mono, wall);
    // Drift under the step threshold: slew toward the wall clock silently.
    const now = this.#reading(mono);
    const slew = Math.max(-MAX_SLEW_MS, Math.min(MAX_SLEW_MS, (wall - now) * SLEW_GAIN));
    this.#anchor(mono, now + slew);
  }

  #check(mono: number, wall: number): void {
    const lastTick = this.#lastTickMono;
    this.#lastTickMono = mono;
    const before = this.#reading(mono);
    const off = wall - before;
    const monoLate = lastTick !== undefined && mono - lastTick > this.#tickMs + this.#suspendMs;
    const slept = lastTick !== undefined && !monoLate && off > this.#suspendMs;
    if (monoLate || slept) {
      // The last moment known to have passed while running: the last tick, or
      // a later reading given out since.
      const lastTickMs = this.#reading(lastTick!);
      const fromUs = Math.max(this.#lastUs, Math.round(lastTickMs * 1000));
      if (slept) this.#anchor(mono, wall);
      const nowMs = this.#reading(mono);
      const toUs = this.#give(nowMs);
      // Times held after a backward step (`toUs` above the reading) would hide how
      // long the pause was: then it is measured from the last tick's reading.
      const held = toUs > Math.round(nowMs * 1000);
      this.#options.onSuspend?.({
        fromUs,
        toUs,
        durationMs: Math.round(held ? nowMs - lastTickMs : (toUs - fromUs) / 1000),
        measuredBy: monoLate ? "monotonic" : "wall",
      });
      if (slept) return;
    }
    if (off > this.#stepMs || off < -this.#stepMs) {
      this.#anchor(mono, wall);
      this.#options.onStep?.({
        atUs: this.#give(this.#reading(mono)),
        stepMs: Math.round(off),
        direction: off > 0 ? "forward" : "backward",
      });
    }
  }

  #anchor(mono: number, wall: number): void {
    this.#anchorMono = mono;
    this.#anchorWall = wall;
  }

  #reading(mono: number): number {
    return this.#anchorWall + (mono - this.#anchorMono);
  }

  #give(ms: number): number {
    const us = Math.max(this.#lastUs, Math.round(ms * 1000));
    this.#lastUs = us;
    return us;
  }
}
