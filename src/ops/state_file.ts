/**
 * Small JSON files kept across processes in `<DATA_DIR>/state/` (the restart
 * history, the last receive time): written to a temporary name and renamed,
 * so a crash never leaves half a file. Neither reading nor writing one ever
 * stops the recorder: a failure is logged, and the caller goes on without.
 */

import { getLogger } from "@logtape/logtape";
import { dirname, join } from "node:path";
import { writeAtomically } from "../store/local.ts";

const log = getLogger(["l2", "ops"]);

/** `<DATA_DIR>/state/<name>`. */
export function stateFile(dataDir: string, name: string): string {
  return join(dataDir, "state", name);
}

/** The file's text; undefined when it is missing (silently) or cannot be read (logged). */
export async function readStateText(path: string, what: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) {
      log.warn("Cannot read the {what} {path}: {error}", { what, path, error });
    }
    return undefined;
  }
}

/** Writes `value` as one JSON line, making `state/` if needed; a failure is logged. */
export async function writeStateJson(path: string, value: unknown, what: string): Promise<void> {
  try {
    await Deno.mkdir(dirname(path), { recursive: true });
    await writeAtomically(path, new TextEncoder().encode(JSON.stringify(value) + "\n"));
  } catch (error) {
    log.warn("Cannot write the {what} {path}: {error}", { what, path, error });
  }
}
