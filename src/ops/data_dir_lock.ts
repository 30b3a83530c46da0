/**
 * One collector per DATA_DIR. `run` holds an exclusive OS lock (flock) on
 * `<DATA_DIR>/.lock` for its whole life; the lock dies with the process, so
 * a SIGKILL or a crash never leaves a stale lock behind. The file also holds
 * the holder's PID, for the message a second instance prints.
 *
 * Without it, a second instance "recovers" the first one's live batches,
 * deletes its journal and counts its starts as restarts.
 */

import { join } from "node:path";

export const LOCK_FILE = ".lock";

export interface DataDirLock extends Disposable {
  readonly path: string;
  release(): void;
}

/** Who holds the lock: a PID, or undefined when the file does not say (yet). */
export interface LockHolder {
  readonly pid?: number;
}

/**
 * Takes the lock on `dataDir` (which must exist) without waiting. Returns
 * the lock, or who holds it.
 */
export async function lockDataDir(
  dataDir: string,
): Promise<{ lock: DataDirLock } | { holder: LockHolder }> {
  const path = join(dataDir, LOCK_FILE);
  const file = await Deno.open(path, { read: true, write: true, create: true });
  let locked = false;
  try {
    locked = await file.tryLock(true);
    if (!locked) return { holder: await readHolder(path) };
    await file.truncate(0);
    await file.write(new TextEncoder().encode(`${Deno.pid}\n`));
  } catch (error) {
    file.close();
    throw error;
  } finally {
    if (!locked) file.close();
  }
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    // Closing the file releases the lock; the file stays (removing it would race a new holder).
    file.close();
  };
  return { lock: { path, release, [Symbol.dispose]: release } };
}

/**
 * Who holds the lock on `dataDir` right now, or undefined when nobody does
 * (for `check`, which must not fail because the collector runs).
 */
export async function currentHolder(dataDir: string): Promise<LockHolder | undefined> {
  const path = join(dataDir, LOCK_FILE);
  let file: Deno.FsFile;
  try {
    // With the access `lockDataDir` needs: a lock file this account cannot
    // write (left by root, or another host's account) fails here as it would there.
    file = await Deno.open(path, { read: true, write: true });
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
  try {
    // Taken and let go at once: only asks whether someone else has it.
    if (await file.tryLock(true)) return undefined;
    return await readHolder(path);
  } finally {
    file.close();
  }
}

/** "PID 1234" or "an unknown PID", for messages. */
export function describeHolder(holder: LockHolder): string {
  return holder.pid === undefined ? "a process whose PID is not recorded" : `PID ${holder.pid}`;
}

async function readHolder(path: string): Promise<LockHolder> {
  try {
    const text = (await Deno.readTextFile(path)).trim();
    const pid = Number(text);
    return Number.isSafeInteger(pid) && pid > 0 ? { pid } : {};
  } catch {
    return {};
  }
}
