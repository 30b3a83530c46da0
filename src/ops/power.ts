/**
 * Keeping a Mac awake while recording, and reading whether it may sleep.
 *
 * - `caffeinateCommand` builds, as data, the command that holds a power
 *   assertion for this process's lifetime: `/usr/bin/caffeinate -i -s -w
 *   <pid>` prevents idle sleep (-i) and system sleep on AC power (-s) and
 *   exits by itself when process <pid> ends (-w), so it never outlives the
 *   collector, even after a SIGKILL.
 * - `preventSleep` starts it on macOS (PREVENT_SLEEP=true) and logs once;
 *   elsewhere it only says, once, that there is nothing to do.
 * - `parsePmset` and `sleepAdvice` read `pmset -g` (pure: tested with a
 *   recorded sample) for `check`: system or disk sleep on AC power can still
 *   stop the recording, and the advice names the `pmset` command that fixes it.
 */

import { getLogger } from "@logtape/logtape";

const log = getLogger(["l2", "power"]);

export const CAFFEINATE = "/usr/bin/caffeinate";
export const PMSET = "/usr/bin/pmset";

export interface CommandSpec {
  readonly command: string;
  readonly args: readonly string[];
}

/** The power assertion for process `pid`: idle and system sleep prevented until it exits. */
export function caffeinateCommand(pid: number): CommandSpec {
  return { command: CAFFEINATE, args: ["-i", "-s", "-w", String(pid)] };
}

/** What `preventSleep` started; `release()` ends the assertion early (it also ends with the process). */
export interface SleepGuard {
  release(): void;
}

export interface PreventSleepOptions {
  readonly enabled: boolean;
  /** Default Deno.build.os. */
  readonly os?: string;
  /** Default Deno.pid. */
  readonly pid?: number;
  /** Starts the command; default Deno.Command(...).spawn(), not waited for. */
  readonly spawn?: (spec: CommandSpec) => { kill(): void };
}

/** Holds the power assertion on macOS; a no-op (with one INFO line) elsewhere or when disabled. */
export function preventSleep(options: PreventSleepOptions): SleepGuard {
  const os = options.os ?? Deno.build.os;
  const none: SleepGuard = { release: () => {} };
  if (os !== "darwin") {
    log.info("PREVENT_SLEEP has nothing to do on {os}: only macOS is kept awake", { os });
    return none;
  }
  if (!options.enabled) {
    log.info("PREVENT_SLEEP=false: this Mac may sleep, and recording stops while it does");
    return none;
  }
  const spec = caffeinateCommand(options.pid ?? Deno.pid);
  try {
    const child = (options.spawn ?? spawnDetached)(spec);
    log.info("Keeping the Mac awake while recording: {command} {args}", {
      command: spec.command,
      args: spec.args.join(" "),
    });
    return {
      release: () => {
        try {
          child.kill();
        } catch {
          // already gone
        }
      },
    };
  } catch (error) {
    log.warn("Could not start {command} ({error}); the Mac may sleep and stop the recording", {
      command: spec.command,
      error: error instanceof Error ? error.message : String(error),
    });
    return none;
  }
}

function spawnDetached(spec: CommandSpec): { kill(): void } {
  const child = new Deno.Command(spec.command, {
    args: [...spec.args],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  // Not waited for: it must not keep the collector's event loop alive.
  child.unref();
  child.status.catch(() => {});
  return { kill: () => child.kill("SIGTERM") };
}

/** The settings of `pmset -g` this collector cares about; minutes, 0 = never. */
export interface SleepSettings {
  readonly sleep?: number;
  readonly disksleep?: number;
  readonly displaysleep?: number;
  readonly autorestart?: number;
  /** What pmset says keeps the Mac awake right now, e.g. "caffeinate, powerd". */
  readonly sleepPreventedBy?: string;
}

/**
 * Reads `pmset -g` ("Currently in use:", which on a Mac mini is AC power) or
 * the "AC Power:" section of `pmset -g custom` when present.
 */
export function parsePmset(text: string): SleepSettings {
  const lines = text.split(/\r?\n/);
  const ac = lines.findIndex((l) => /^AC Power:/i.test(l.trim()));
  let section = lines;
  if (ac >= 0) {
    const end = lines.findIndex((l, i) => i > ac && /^\S.*:\s*$/.test(l));
    section = lines.slice(ac + 1, end === -1 ? undefined : end);
  }
  const settings: Record<string, number | string> = {};
  for (const line of section) {
    const match = /^\s+(sleep|disksleep|displaysleep|autorestart)\s+(\d+)\s*(.*)$/.exec(line);
    if (!match) continue;
    settings[match[1]] = Number(match[2]);
    const prevented = /sleep prevented by ([^)]*)\)/.exec(match[3]);
    if (match[1] === "sleep" && prevented) settings.sleepPreventedBy = prevented[1].trim();
  }
  return settings as SleepSettings;
}

export interface SleepAdvice {
  /** System and disk never sleep on AC power. */
  readonly ok: boolean;
  readonly detail: string;
}

/** The line `check` prints: what may sleep, and the command that stops it. */
export function sleepAdvice(s: SleepSettings): SleepAdvice {
  if (s.sleep === undefined && s.disksleep === undefined) {
    return { ok: false, detail: "pmset -g showed no sleep or disksleep setting" };
  }
  const minutes = (n: number | undefined) =>
    n === undefined ? "unknown" : n === 0 ? "never" : `after ${n} min`;
  const facts = `system sleep ${minutes(s.sleep)}, disk sleep ${minutes(s.disksleep)}` +
    (s.autorestart === undefined
      ? ""
      : `, restart after a power failure ${s.autorestart === 0 ? "off" : "on"}`) +
    (s.sleepPreventedBy ? ` (sleep now prevented by ${s.sleepPreventedBy})` : "");
  const fixes: string[] = [];
  if (s.sleep !== 0) fixes.push("sleep 0");
  if (s.disksleep !== 0) fixes.push("disksleep 0");
  const restart = s.autorestart === 0 ? "; also consider: sudo pmset autorestart 1" : "";
  if (fixes.length === 0) return { ok: true, detail: `${facts} on AC power${restart}` };
  return {
    ok: false,
    detail: `${facts} on AC power: the Mac can sleep and stop recording; ` +
      `fix: sudo pmset -c ${fixes.join(" ")}${restart}`,
  };
}
