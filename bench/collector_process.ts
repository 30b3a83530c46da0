/**
 * The real collector as the benchmark runs it: the `start` task's command
 * line (same permission set, same entry point), optionally under V8's CPU
 * profiler, with a clean environment plus the benchmark's settings.
 */

import { startTaskArgs } from "../tests/support/collector.ts";
import { baseEnv, ROOT } from "./child.ts";

export interface CollectorChild {
  readonly pid: number;
  readonly hasExited: boolean;
  /** Resolves with the exit code. */
  readonly exited: Promise<number>;
  /** The last 50 kB the collector logged (stderr). */
  stderr(): string;
  /** Sends a signal; false when the process had already exited. */
  signal(signal: Deno.Signal): boolean;
  /**
   * One SIGTERM (a second one would make it exit at once, skipping the
   * flush), then SIGKILL after `graceMs`; the exit code, and whether it had
   * to be killed.
   */
  stop(graceMs: number): Promise<{ code: number; killed: boolean }>;
}

export function spawnCollector(
  env: Readonly<Record<string, string>>,
  options: { cpuProfDir?: string } = {},
): CollectorChild {
  const [run, ...rest] = startTaskArgs(); // ["run", "-P=collector", "src/main.ts"]
  const profile = options.cpuProfDir ? ["--cpu-prof", `--cpu-prof-dir=${options.cpuProfDir}`] : [];
  const child = new Deno.Command(Deno.execPath(), {
    args: [run, ...profile, ...rest],
    cwd: ROOT.pathname,
    clearEnv: true,
    env: { ...baseEnv(), ...env },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  const drained = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      stderr = (stderr + chunk).slice(-50_000);
    }
  })();
  let hasExited = false;
  const exited = child.status.then(async (status) => {
    hasExited = true;
    await drained;
    return status.code;
  });
  const signal = (name: Deno.Signal) => {
    try {
      child.kill(name);
      return true;
    } catch {
      return false;
    }
  };
  return {
    pid: child.pid,
    get hasExited() {
      return hasExited;
    },
    exited,
    stderr: () => stderr,
    signal,
    async stop(graceMs) {
      signal("SIGTERM");
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<"late">((resolve) =>
        timer = setTimeout(() => resolve("late"), graceMs)
      );
      const first = await Promise.race([exited, late]);
      clearTimeout(timer);
      if (first !== "late") return { code: first, killed: false };
      signal("SIGKILL");
      return { code: await exited, killed: true };
    },
  };
}
