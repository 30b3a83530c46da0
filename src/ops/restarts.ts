/**
 * Restart history for the "restarted more than 3 times in the last hour"
 * health check, kept across processes in `<DATA_DIR>/state/restarts.json`
 * (`{"starts": [<wall-clock ms>, …]}`), written to a temporary name and
 * renamed, so a crash never leaves half a file.
 *
 * A restart is a start whose earlier run did not stop cleanly: it crashed,
 * was killed, or failed to start. A run stops cleanly when it was asked to
 * stop and its shutdown ran to the end (each of those runs' start times is
 * kept in `cleanStops`, `{"starts": […], "cleanStops": […]}`), so an
 * operator's restarts, a reinstall or a reboot are not counted as a crash
 * loop. The file keeps the starts of the last hour plus the latest one before
 * that hour, so the first start ever (a fresh DATA_DIR) is not a restart,
 * while a single crash after days of running is one.
 */

import { getLogger } from "@logtape/logtape";
import { readStateText, stateFile, writeStateJson } from "./state_file.ts";

const log = getLogger(["l2", "ops"]);
const HOUR_MS = 3_600_000;

export interface StartHistory {
  /** Start times, oldest first, including this one. */
  readonly starts: readonly number[];
  /** The start times of the runs among them that stopped cleanly. */
  readonly cleanStops: readonly number[];
  /** Restarts in the hour before `now`, this start included. */
  readonly restartsLastHour: number;
}

type Starts = Pick<StartHistory, "starts" | "cleanStops">;

export function restartsFile(dataDir: string): string {
  return stateFile(dataDir, "restarts.json");
}

/**
 * Appends `now` to the history, prunes it and writes it back. An unreadable
 * or damaged file starts a new history; a failed write is logged: neither
 * stops the recorder.
 */
export async function recordStart(dataDir: string, now: number): Promise<StartHistory> {
  const read = await readHistory(restartsFile(dataDir));
  const starts = pruneStarts([...read.starts, now], now);
  const history = { starts, cleanStops: read.cleanStops.filter((t) => starts.includes(t)) };
  await writeHistory(dataDir, history);
  return { ...history, restartsLastHour: countRestarts(history, now) };
}

/**
 * Notes that the run started at `startedAt` stopped cleanly, so the next
 * start is not counted as a restart. Called at the end of the shutdown.
 */
export async function recordCleanStop(dataDir: string, startedAt: number): Promise<void> {
  const read = await readHistory(restartsFile(dataDir));
  if (!read.starts.includes(startedAt)) return;
  const cleanStops = [...new Set([...read.cleanStops, startedAt])].sort((a, b) => a - b);
  await writeHistory(dataDir, { starts: read.starts, cleanStops });
}

function writeHistory(dataDir: string, history: Starts): Promise<void> {
  return writeStateJson(restartsFile(dataDir), history, "restart history");
}

/**
 * Starts within the hour before `now` (inclusive of `now`) that followed an
 * earlier start whose run did not stop cleanly.
 */
export function countRestarts({ starts, cleanStops }: Starts, now: number): number {
  const clean = new Set(cleanStops);
  let restarts = 0;
  starts.forEach((at, i) => {
    if (i > 0 && !clean.has(starts[i - 1]) && at <= now && now - at < HOUR_MS) restarts++;
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

async function readHistory(path: string): Promise<Starts> {
  const text = await readStateText(path, "restart history");
  if (text === undefined) return { starts: [], cleanStops: [] };
  try {
    const value = JSON.parse(text) as { starts?: unknown; cleanStops?: unknown };
    const clean = value.cleanStops ?? [];
    if (isNumbers(value.starts) && isNumbers(clean)) {
      return { starts: value.starts, cleanStops: clean };
    }
  } catch {
    // reported below
  }
  log.warn("Restart history {path} is damaged; starting a new one", { path });
  return { starts: [], cleanStops: [] };
}

function isNumbers(value: unknown): value is number[] {
  return Array.isArray(value) && value.every((t) => typeof t === "number");
}
