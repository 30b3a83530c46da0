/**
 * Restart history for the "restarted more than 3 times in the last hour"
 * health check, kept across processes in `<DATA_DIR>/state/restarts.json`
 * (`{"starts": [<wall-clock ms>, …]}`), written to a temporary name and
 * renamed, so a crash never leaves half a file.
 *
 * A restart is a start that had an earlier start before it. The file keeps
 * the starts of the last hour plus the latest one before that hour, so the
 * first start ever (a fresh DATA_DIR) is not a restart, while a single crash
 * after days of running is one.
 */

import { getLogger } from "@logtape/logtape";
import { join } from "node:path";
import { writeAtomically } from "../store/local.ts";

const log = getLogger(["l2", "ops"]);
const HOUR_MS = 3_600_000;

export interface StartHistory {
  /** Start times, oldest first, including this one. */
  readonly starts: readonly number[];
  /** Restarts in the hour before `now`, this start included. */
  readonly restartsLastHour: number;
}

export function restartsFile(dataDir: string): string {
  return join(dataDir, "state", "restarts.json");
}

/**
 * Appends `now` to the history, prunes it and writes it back. An unreadable
 * or damaged file starts a new history; a failed write is logged: neither
 * stops the recorder.
 */
export async function recordStart(dataDir: string, now: number): Promise<StartHistory> {
  const path = restartsFile(dataDir);
  const starts = pruneStarts([...await readStarts(path), now], now);
  try {
    await Deno.mkdir(join(dataDir, "state"), { recursive: true });
    const text = JSON.stringify({ starts }) + "\n";
    await writeAtomically(path, new TextEncoder().encode(text));
  } catch (error) {
    log.warn("Cannot write the restart history {path}: {error}", { path, error });
  }
  return { starts, restartsLastHour: countRestarts(starts, now) };
}

/** Starts within the hour before `now` (inclusive of `now`) that followed an earlier start. */
export function countRestarts(starts: readonly number[], now: number): number {
  let restarts = 0;
  starts.forEach((at, i) => {
    if (i > 0 && at <= now && now - at < HOUR_MS) restarts++;
  });
  return restarts;
}

/**
 * Sorted; the last hour's starts plus the latest older one. Times after
 * `now` (the clock went back) are dropped.
 */
export function pruneStarts(starts: readonly number[], now: number): number[] {
  const sorted = starts.filter((t) => Number.isFinite(t) && t <= now).sort((a, b) => a - b);
  const firstRecent = sorted.findIndex((t) => now - t < HOUR_MS);
  if (firstRecent === -1) return sorted.slice(-1);
  return sorted.slice(Math.max(0, firstRecent - 1));
}

async function readStarts(path: string): Promise<number[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) {
      log.warn("Cannot read the restart history {path}: {error}", { path, error });
    }
    return [];
  }
  try {
    const value = JSON.parse(text) as { starts?: unknown };
    if (Array.isArray(value.starts) && value.starts.every((t) => typeof t === "number")) {
      return value.starts;
    }
  } catch {
    // reported below
  }
  log.warn("Restart history {path} is damaged; starting a new one", { path });
  return [];
}
