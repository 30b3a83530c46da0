/**
 * One timer for the recorder's periodic work. A wakeup of an otherwise idle
 * process is not free: measured on a 2-core VM, each timer firing costs the
 * main thread 0.1–0.25 ms of CPU (cold caches, and `strace` shows the runtime
 * waking once more before each firing), so three timers (the seal tick at
 * 200 ms, the journal's flush at 250 ms, the receive clock at 1 s) made about
 * 20 wakeups a second where one 250 ms beat makes 8.
 *
 * `intervalTicker` is the plain form (one `setInterval` per task), what a
 * part uses when no beat is given, as in its tests.
 */

/** Runs tasks periodically. */
export interface Ticker {
  /** Calls `task` every `ms` until the returned handle is disposed. */
  every(ms: number, task: () => void): Disposable;
}

/** One `setInterval` per task. */
export const intervalTicker: Ticker = {
  every(ms, task) {
    const timer = setInterval(task, ms);
    return { [Symbol.dispose]: () => clearInterval(timer) };
  },
};

interface Task {
  /** In beats. */
  readonly every: number;
  readonly run: () => void;
}

/**
 * A ticker whose tasks share one timer: every task's period is a whole
 * number of beats, and the tasks due at a beat run together, in the order
 * they were added. The timer runs only while a task is registered.
 */
export class Beat implements Ticker, Disposable {
  readonly ms: number;
  /** What runs the beat itself; tests pass a ticker they fire by hand. */
  readonly #timer: Ticker;
  readonly #tasks = new Set<Task>();
  #running: Disposable | undefined;
  #count = 0;

  constructor(ms = 250, timer: Ticker = intervalTicker) {
    if (!(Number.isInteger(ms) && ms > 0)) {
      throw new RangeError(`a beat is a positive whole number of ms, got ${ms}`);
    }
    this.ms = ms;
    this.#timer = timer;
  }

  every(ms: number, task: () => void): Disposable {
    const every = ms / this.ms;
    if (!(Number.isInteger(every) && every > 0)) {
      throw new RangeError(
        `a task's period must be a multiple of the ${this.ms} ms beat, got ${ms}`,
      );
    }
    const entry: Task = { every, run: task };
    this.#tasks.add(entry);
    this.#running ??= this.#timer.every(this.ms, () => this.#fire());
    return {
      [Symbol.dispose]: () => {
        this.#tasks.delete(entry);
        if (this.#tasks.size === 0) this.#halt();
      },
    };
  }

  [Symbol.dispose](): void {
    this.#tasks.clear();
    this.#halt();
  }

  #halt(): void {
    this.#running?.[Symbol.dispose]();
    this.#running = undefined;
  }

  /**
   * Runs the tasks due. One that throws does not keep the others from
   * running; the first error is rethrown afterwards, as its own timer's
   * callback would have thrown it.
   */
  #fire(): void {
    const count = ++this.#count;
    let failed: { error: unknown } | undefined;
    for (const task of [...this.#tasks]) {
      if (count % task.every !== 0) continue;
      try {
        task.run();
      } catch (error) {
        failed ??= { error };
      }
    }
    if (failed) throw failed.error;
  }
}

/**
 * `ticker` for a task every `ms` when it can run one (a beat runs tasks whose
 * period is a whole number of its beats), else one `setInterval`.
 */
export function tickerFor(ms: number, ticker: Ticker | undefined): Ticker {
  if (ticker instanceof Beat) return ms % ticker.ms === 0 ? ticker : intervalTicker;
  return ticker ?? intervalTicker;
}
