/**
 * The local sink: objects as files under `<dataDir>/archive/<key>`, used when
 * no bucket is configured. Each file is written to a temporary name in the
 * same directory, flushed to disk and renamed, so a reader (or a crash) never
 * sees half an object under a final name. The metadata goes to a sidecar
 * `<key>.meta.json`, written before the object itself. `putNew` links the
 * finished temporary file to its final name, which fails if the name
 * exists: an object is never replaced by it. `putFile` stores a finished
 * object the crash journal already wrote (its batch file) by flushing it to
 * disk and linking it into place, so its bytes are written once; the
 * journal then drops its own name for the file.
 */

import { dirname, join } from "node:path";
import { metaToRecord, type ObjectMeta } from "../archive/meta.ts";
import type { Sink } from "./sink.ts";

export const TEMP_MARKER = ".tmp-";

/** Directories remembered as made; beyond this many the memory starts over. */
const MAX_KNOWN_DIRS = 10_000;

export function localSink(archiveDir: string): Sink {
  // An hour's directory takes a few objects per stream: create it once, not
  // per put (a recursive mkdir is several system calls).
  const made = new Set<string>();
  const ensureDir = async (dir: string) => {
    if (made.has(dir)) return;
    await Deno.mkdir(dir, { recursive: true });
    if (made.size >= MAX_KNOWN_DIRS) made.clear();
    made.add(dir);
  };
  const write = async (path: string, body: Uint8Array, meta: ObjectMeta) => {
    const sidecar = new TextEncoder().encode(JSON.stringify(metaToRecord(meta)) + "\n");
    await writeAtomically(`${path}.meta.json`, sidecar);
    await writeAtomically(path, body);
  };
  const writeNew = async (path: string, body: Uint8Array, meta: ObjectMeta) => {
    if (exists(path)) return false;
    const sidecar = new TextEncoder().encode(JSON.stringify(metaToRecord(meta)) + "\n");
    await writeAtomically(`${path}.meta.json`, sidecar);
    return await writeAtomically(path, body, { exclusive: true });
  };
  /** Runs `step` with the object's directory made (again, once, if someone removed it). */
  const inDir = async <T>(key: string, step: (path: string) => Promise<T>): Promise<T> => {
    const path = join(archiveDir, ...key.split("/"));
    const dir = dirname(path);
    await ensureDir(dir);
    try {
      return await step(path);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      made.delete(dir);
      await ensureDir(dir);
      return await step(path);
    }
  };
  const linkNew = async (path: string, file: string, meta: ObjectMeta, ifAbsent: boolean) => {
    if (ifAbsent && exists(path)) return false;
    const sidecar = new TextEncoder().encode(JSON.stringify(metaToRecord(meta)) + "\n");
    await writeAtomically(`${path}.meta.json`, sidecar);
    return await linkAtomically(file, path, { exclusive: ifAbsent });
  };
  return {
    kind: "local",
    location: archiveDir,
    putFile(key: string, file: string, meta: ObjectMeta, ifAbsent: boolean): Promise<boolean> {
      return inDir(key, (path) => linkNew(path, file, meta, ifAbsent));
    },
    async put(key: string, body: Uint8Array, meta: ObjectMeta): Promise<void> {
      await inDir(key, (path) => write(path, body, meta));
    },
    putNew(key: string, body: Uint8Array, meta: ObjectMeta): Promise<boolean> {
      return inDir(key, (path) => writeNew(path, body, meta));
    },
  };
}

// File system calls that only touch metadata (opening an existing file,
// link, rename, remove, lstat) and small writes are made synchronously: each
// is a few µs of the kernel's time on a local disk, where an async call costs
// a round trip to Deno's thread pool (~0.1 ms of the main thread here, ten
// per object). `fsync`, which waits for the disk, and creating a file, which
// can wait for the file system's journal, stay async.

/** Writes up to this size go to the page cache synchronously. */
const SYNC_WRITE_BYTES = 64 * 1024;

/** Whether something is at `path` (a link itself counts); other errors than NotFound throw. */
export function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/**
 * Puts the finished file `source` at `path` as `writeAtomically` puts bytes
 * there (flushed to disk first; `exclusive`: never over an existing file),
 * by hard links: `source` itself is not moved, and must not change.
 */
async function linkAtomically(
  source: string,
  path: string,
  options: { exclusive: boolean },
): Promise<boolean> {
  {
    using file = Deno.openSync(source, { read: true, write: true });
    await file.sync();
  }
  if (options.exclusive) {
    try {
      Deno.linkSync(source, path);
      return true;
    } catch (error) {
      if (error instanceof Deno.errors.AlreadyExists) return false;
      throw error;
    }
  }
  const temp = `${path}${TEMP_MARKER}${crypto.randomUUID().slice(0, 8)}`;
  Deno.linkSync(source, temp);
  try {
    Deno.renameSync(temp, path);
  } catch (error) {
    removeQuietly(temp);
    throw error;
  }
  return true;
}

/**
 * Temporary name, write, fsync, rename: the file appears whole or not at
 * all. `exclusive`: a hard link instead of the rename, which fails if
 * `path` exists; returns false then, leaving it as it was.
 */
export async function writeAtomically(
  path: string,
  bytes: Uint8Array,
  options: { exclusive?: boolean } = {},
): Promise<boolean> {
  const temp = `${path}${TEMP_MARKER}${crypto.randomUUID().slice(0, 8)}`;
  try {
    // Async: creating a file can wait for the file system's journal (~1 ms here, behind fsyncs).
    using file = await Deno.open(temp, { write: true, createNew: true });
    const small = bytes.length <= SYNC_WRITE_BYTES;
    let written = 0;
    while (written < bytes.length) {
      const rest = bytes.subarray(written);
      written += small ? file.writeSync(rest) : await file.write(rest);
    }
    await file.sync();
  } catch (error) {
    removeQuietly(temp);
    throw error;
  }
  if (!options.exclusive) {
    Deno.renameSync(temp, path);
    return true;
  }
  try {
    Deno.linkSync(temp, path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.AlreadyExists) return false;
    throw error;
  } finally {
    removeQuietly(temp);
  }
}

/** Removes a file, if it can: a temporary name left behind is cleaned up later, or harmless. */
function removeQuietly(path: string): void {
  try {
    Deno.removeSync(path);
  } catch {
    // Gone already, or not removable: nothing more to do here.
  }
}
