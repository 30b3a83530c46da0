/**
 * The last receive time a run gave out, kept across processes in
 * `<DATA_DIR>/state/receive_clock.json` (`{"lastRecvTs": <µs>}`), written to
 * a temporary name and renamed at the end of a clean stop. The next run
 * continues from it (feed/clock.ts `continueFrom`), so a wall clock set back
 * while nothing recorded does not make the next run's lines and keys sort
 * before the last run's. After a crash the crash journal's batches say the
 * same (their last receive times); the later of the two counts.
 *
 * A missing file is a first start (nothing to continue). A damaged one, or a
 * time more than `MAX_AHEAD_MS` ahead of the wall clock, is logged and left
 * out: neither stops the recorder.
 */

import { getLogger } from "@logtape/logtape";
import { readStateText, stateFile, writeStateJson } from "./state_file.ts";

const log = getLogger(["l2", "ops"]);

/**
 * A stored time further ahead of the wall clock than this is not continued
 * from: lines would keep that one time until the clock passes it. Ten
 * minutes covers a clock set right at boot or by hand; more is a clock that
 * was wrong.
 */
export const MAX_AHEAD_MS = 10 * 60_000;

export function receiveStateFile(dataDir: string): string {
  return stateFile(dataDir, "receive_clock.json");
}

/** The last run's last receive time as stored, µs; undefined when there is none or it is damaged. */
export async function readLastReceive(dataDir: string): Promise<number | undefined> {
  const path = receiveStateFile(dataDir);
  const text = await readStateText(path, "last receive time");
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = (JSON.parse(text) as { lastRecvTs?: unknown } | null)?.lastRecvTs;
  } catch {
    value = undefined;
  }
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
    log.warn("The last receive time in {path} is damaged; not continued from", { path });
    return undefined;
  }
  return value;
}

/**
 * What this run continues from: the latest of `times` (the stored last
 * receive time, the crash journal's batches) that is at most `MAX_AHEAD_MS`
 * ahead of `wallMs`. One further ahead is left out, logged at ERROR: the run
 * before stamped with a clock that was wrong, and holding every line at its
 * time until the clock catches up would stamp far too much with one time.
 */
export function continueFrom(
  times: ReadonlyArray<number | undefined>,
  wallMs: number,
): number | undefined {
  const known = times.filter((t): t is number => t !== undefined && Number.isFinite(t));
  const usable = known.filter((t) => t / 1000 - wallMs <= MAX_AHEAD_MS);
  if (usable.length < known.length) {
    const latest = Math.max(...known);
    log.error(
      "The last receive time before this start ({lastRecvTs} µs) is {aheadSeconds} s ahead of " +
        "the wall clock, more than {maxSeconds} s: not continued from, so receive times go " +
        "back across this restart (the clock of the run before was wrong, or this one is)",
      {
        lastRecvTs: latest,
        aheadSeconds: Math.round(latest / 1e6 - wallMs / 1000),
        maxSeconds: MAX_AHEAD_MS / 1000,
      },
    );
  }
  return usable.length === 0 ? undefined : Math.max(...usable);
}

/** Stores the run's last receive time; a failed write is logged, never thrown. */
export function writeLastReceive(dataDir: string, lastRecvTs: number): Promise<void> {
  return writeStateJson(receiveStateFile(dataDir), { lastRecvTs }, "last receive time");
}
