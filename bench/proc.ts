/**
 * What the kernel knows about a process (Linux /proc): CPU time of all its
 * threads, and resident memory now and at its peak. Also the machine line
 * every result is stamped with.
 */

let clockTicks: number | undefined;

/** Clock ticks per second (`getconf CLK_TCK`, almost always 100). */
export async function clkTck(): Promise<number> {
  if (clockTicks === undefined) {
    const out = await new Deno.Command("getconf", { args: ["CLK_TCK"] }).output();
    const value = Number(new TextDecoder().decode(out.stdout).trim());
    clockTicks = out.success && value > 0 ? value : 100;
  }
  return clockTicks;
}

/**
 * CPU seconds (user + system, every thread, living or exited) used by `pid`
 * so far, or only by its thread `tid` (the main thread's tid is the pid);
 * undefined once the process is gone. Resolution is one clock tick.
 */
export async function cpuSeconds(pid: number, tid?: number): Promise<number | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(
      tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`,
    );
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces; fields are counted after its `)`.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state): utime is field 14, stime field 15.
  const ticks = Number(fields[11]) + Number(fields[12]);
  return ticks / await clkTck();
}

/**
 * CPU seconds used by the living threads of `pid` whose name starts with
 * `prefix` (Deno names a Worker's thread `worker-<n>`); undefined once the
 * process is gone.
 */
export async function threadsCpuSeconds(pid: number, prefix: string): Promise<number | undefined> {
  let total = 0;
  try {
    for await (const task of Deno.readDir(`/proc/${pid}/task`)) {
      const comm = await Deno.readTextFile(`/proc/${pid}/task/${task.name}/comm`).catch(() => "");
      if (!comm.startsWith(prefix)) continue;
      total += await cpuSeconds(pid, Number(task.name)) ?? 0;
    }
  } catch {
    return undefined;
  }
  return total;
}

/**
 * Each living thread's run time so far, ns, by thread id (`schedstat`'s
 * first field, kept by the scheduler to the nanosecond, where `utime` and
 * `stime` are charged a clock tick at a time to whichever thread is
 * running); undefined once the process is gone. Threads that exited are
 * not in it.
 */
export async function threadRunTimes(pid: number): Promise<Map<number, number> | undefined> {
  const times = new Map<number, number>();
  try {
    for await (const task of Deno.readDir(`/proc/${pid}/task`)) {
      const text = await Deno.readTextFile(`/proc/${pid}/task/${task.name}/schedstat`)
        .catch(() => undefined);
      const ns = Number(text?.split(" ")[0]);
      if (Number.isFinite(ns)) times.set(Number(task.name), ns);
    }
  } catch {
    return undefined;
  }
  return times;
}

/**
 * The latest run time of every thread seen in any of `readings` (taken in
 * order): a thread that exited keeps the last run time read of it, so only
 * what it ran after that reading is lost. The runtime's blocking-pool
 * threads (file syncs) exit after idling a while, so they lose about nothing;
 * reading every second, no thread loses more than a second. Undefined when a
 * reading failed.
 */
export function latestRunTimes(
  readings: ReadonlyArray<ReadonlyMap<number, number> | undefined>,
): Map<number, number> | undefined {
  const latest = new Map<number, number>();
  for (const reading of readings) {
    if (!reading) return undefined;
    for (const [tid, ns] of reading) latest.set(tid, ns);
  }
  return latest;
}

/**
 * Cores used over `seconds`, from the threads' exact run times at the
 * window's start (`before`) and the latest read of each (`latestRunTimes`);
 * a thread born in the window counts whole. Undefined without both.
 */
export function exactCores(
  before: ReadonlyMap<number, number> | undefined,
  latest: ReadonlyMap<number, number> | undefined,
  seconds: number,
): number | undefined {
  if (!before || !latest || seconds <= 0) return undefined;
  let ns = 0;
  for (const [tid, end] of latest) ns += end - (before.get(tid) ?? 0);
  return ns / 1e9 / seconds;
}

/** CPU seconds the whole machine has been busy (not idle, not waiting on I/O), all cores. */
export async function machineBusySeconds(): Promise<number> {
  const text = await Deno.readTextFile("/proc/stat");
  const [, ...fields] = text.slice(0, text.indexOf("\n")).trim().split(/\s+/);
  // user nice system idle iowait irq softirq steal (guest time is already in user)
  const ticks = fields.slice(0, 8).map(Number);
  const busy = ticks.reduce((a, b) => a + b, 0) - ticks[3] - ticks[4];
  return busy / await clkTck();
}

export interface Memory {
  /** Resident set now, bytes. */
  readonly rss: number;
  /** Peak resident set so far (VmHWM), bytes. */
  readonly hwm: number;
}

export async function memory(pid: number): Promise<Memory | undefined> {
  const text = await procFile(pid, "status");
  if (text === undefined) return undefined;
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1]);
  const rss = kb("VmRSS");
  const hwm = kb("VmHWM");
  if (!Number.isFinite(rss) || !Number.isFinite(hwm)) return undefined;
  return { rss: rss * 1024, hwm: hwm * 1024 };
}

/**
 * Samples a process until it exits or `stop()` is called, keeping the
 * highest VmHWM seen (the last read before exit is the true peak, give or
 * take one interval).
 */
export class ProcessWatch {
  readonly pid: number;
  peakBytes = 0;
  #timer: ReturnType<typeof setInterval>;

  constructor(pid: number, intervalMs = 250) {
    this.pid = pid;
    this.#timer = setInterval(() => this.sample(), intervalMs);
  }

  async sample(): Promise<void> {
    const mem = await memory(this.pid);
    if (mem) this.peakBytes = Math.max(this.peakBytes, mem.hwm);
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

/**
 * Waits until `pid` has gone quiet: at most `maxIdleShare` of a core over
 * `stepMs`, twice in a row (after at least `minMs`), or `maxMs` passed.
 * Returns the ms waited.
 */
export async function waitForIdle(
  pid: number,
  options: { minMs: number; maxMs: number; stepMs?: number; maxIdleShare?: number },
): Promise<number> {
  const step = options.stepMs ?? 500;
  const share = options.maxIdleShare ?? 0.05;
  const started = performance.now();
  let quiet = 0;
  let before = await cpuSeconds(pid);
  while (performance.now() - started < options.maxMs) {
    await sleep(step);
    const after = await cpuSeconds(pid);
    if (after === undefined || before === undefined) break;
    quiet = after - before <= share * step / 1000 ? quiet + 1 : 0;
    before = after;
    if (quiet >= 2 && performance.now() - started >= options.minMs) break;
  }
  return performance.now() - started;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export interface Machine {
  readonly cores: number;
  readonly cpuModel: string;
  readonly memoryGiB: number;
  readonly deno: string;
  readonly os: string;
}

export async function machine(): Promise<Machine> {
  const run = async (cmd: string, args: string[]) => {
    try {
      const out = await new Deno.Command(cmd, { args }).output();
      return new TextDecoder().decode(out.stdout).trim();
    } catch {
      return "";
    }
  };
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const meminfo = await Deno.readTextFile("/proc/meminfo").catch(() => "");
  const memKb = Number(/^MemTotal:\s+(\d+) kB/m.exec(meminfo)?.[1] ?? 0);
  return {
    cores: Number(await run("nproc", [])) || navigator.hardwareConcurrency,
    cpuModel: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? "unknown",
    memoryGiB: Math.round(memKb / 1024 / 1024),
    deno: Deno.version.deno,
    os: `${Deno.build.os} ${Deno.osRelease()}`,
  };
}

/** /proc/<pid>/io: bytes the process caused to be written to storage, and more. */
export interface IoCounters {
  /** Bytes handed to write-like system calls (any file, pipe or socket). */
  readonly wchar: number;
  /** Bytes the process caused to be sent to the storage layer (page cache dirtied). */
  readonly writeBytes: number;
  /** Of those, bytes never written after all (the file was truncated or deleted first). */
  readonly cancelledWriteBytes: number;
}

export async function ioCounters(pid: number): Promise<IoCounters | undefined> {
  const text = await procFile(pid, "io");
  if (text === undefined) return undefined;
  const field = (name: string) => Number(new RegExp(`^${name}: (\\d+)$`, "m").exec(text)?.[1]);
  return {
    wchar: field("wchar"),
    writeBytes: field("write_bytes"),
    cancelledWriteBytes: field("cancelled_write_bytes"),
  };
}

/** What a child process cost, sampled while it ran (CPU every 100 ms, so the last tenth may be missing). */
export interface Measured {
  readonly output: Deno.CommandOutput;
  readonly wallSeconds: number;
  readonly cpuSeconds: number;
  readonly peakRssBytes: number;
}

/** Waits for `child`, measuring its wall time, CPU seconds and peak RSS. */
export async function measureChild(child: Deno.ChildProcess): Promise<Measured> {
  const started = performance.now();
  const watch = new ProcessWatch(child.pid, 100);
  let cpu = 0;
  const cpuTimer = setInterval(async () => {
    cpu = (await cpuSeconds(child.pid)) ?? cpu;
  }, 100);
  const output = await child.output();
  const wallSeconds = (performance.now() - started) / 1000;
  clearInterval(cpuTimer);
  watch.stop();
  return { output, wallSeconds, cpuSeconds: cpu, peakRssBytes: watch.peakBytes };
}

/** /proc/<pid>/<name>, or undefined once the process is gone. */
async function procFile(pid: number, name: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(`/proc/${pid}/${name}`);
  } catch {
    return undefined;
  }
}
