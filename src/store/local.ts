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

export function localSink(archiveDir: string): Sink {
  return {
    kind: "local",
    location: archiveDir,
    async put(key: string, body: Uint8Array, meta: ObjectMeta): Promise<void> {
      const path = join(archiveDir, ...key.split("/"));
      await Deno.mkdir(dirname(path), { recursive: true });
      const sidecar = new TextEncoder().encode(JSON.stringify(metaToRecord(meta)) + "\n");
      await writeAtomically(`${path}.meta.json`, sidecar);
      await writeAtomically(path, body);
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
