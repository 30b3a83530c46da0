/**
 * The local sink: objects as files under `<dataDir>/archive/<key>`, used when
 * no bucket is configured. Each file is written to a temporary name in the
 * same directory, flushed to disk and renamed, so a reader (or a crash) never
 * sees half an object under a final name. The metadata goes to a sidecar
 * `<key>.meta.json`, written before the object itself.
 */

import { dirname, join } from "node:path";
import { metaToRecord, type ObjectMeta, type Sink } from "./sink.ts";

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
  return {
    kind: "local",
    location: archiveDir,
    async put(key: string, body: Uint8Array, meta: ObjectMeta): Promise<void> {
      const path = join(archiveDir, ...key.split("/"));
      const dir = dirname(path);
      await ensureDir(dir);
      try {
        await write(path, body, meta);
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
        // Someone removed the directory since: make it again, once.
        made.delete(dir);
        await ensureDir(dir);
        await write(path, body, meta);
      }
    },
  };
}

/** Temporary name, write, fsync, rename: the file appears whole or not at all. */
export async function writeAtomically(path: string, bytes: Uint8Array): Promise<void> {
  const temp = `${path}${TEMP_MARKER}${crypto.randomUUID().slice(0, 8)}`;
  try {
    using file = await Deno.open(temp, { write: true, createNew: true });
    let written = 0;
    while (written < bytes.length) written += await file.write(bytes.subarray(written));
    await file.sync();
  } catch (error) {
    await Deno.remove(temp).catch(() => {});
    throw error;
  }
  await Deno.rename(temp, path);
}
