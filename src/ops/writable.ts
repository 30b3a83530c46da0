/**
 * Whether a directory can hold the collector's files: created if missing,
 * then a probe file written the way every spool and archive file is
 * (temporary name, fsync, rename) and removed. `run` checks DATA_DIR with
 * it before anything else; `check` checks the spool and archive directories.
 */

import { join } from "node:path";
import { writeAtomically } from "../store/local.ts";

/** Throws the file system's error when `dir` cannot be created or takes no write and rename. */
export async function probeWritable(dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const probe = join(dir, `.write-probe-${crypto.randomUUID().slice(0, 8)}`);
  await writeAtomically(probe, new TextEncoder().encode("probe\n"));
  await Deno.remove(probe);
}
