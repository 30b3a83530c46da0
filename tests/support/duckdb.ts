/**
 * Runs SQL through DuckDB in a process of its own (duckdb_main.ts, pinned by
 * duckdb.lock; see there why), from a working directory of the caller's
 * choice, since the README's paths are relative.
 */

const SUPPORT = new URL("./", import.meta.url).pathname;

export type DuckRow = Record<string, string | null>;

/** The last statement's rows; throws with DuckDB's own message when a statement fails. */
export async function duckdb(sql: string, cwd: string): Promise<DuckRow[]> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--no-config",
      `--lock=${SUPPORT}duckdb.lock`,
      "--frozen",
      "--quiet",
      `${SUPPORT}duckdb_main.ts`,
    ],
    cwd,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(sql));
  await writer.close();
  const out = await child.output();
  const decoder = new TextDecoder();
  if (!out.success) {
    throw new Error(decoder.decode(out.stderr).trim() || `duckdb exited ${out.code}`);
  }
  return JSON.parse(decoder.decode(out.stdout)) as DuckRow[];
}
