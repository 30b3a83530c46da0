/**
 * DuckDB (npm @duckdb/node-api) for the tests, run as its own process by
 * tests/support/duckdb.ts so that DuckDB — a native library of tens of MB —
 * stays out of the project's deno.json and deno.lock: a `deno task start`
 * fetches only what the collector runs. Pinned by its own lock file,
 * duckdb.lock, beside it:
 *
 *   deno run -A --no-config --lock=tests/support/duckdb.lock tests/support/duckdb_main.ts < query.sql
 *
 * Reads one SQL text (any number of statements) from stdin, runs it in an
 * in-memory database with the working directory as given, and prints the
 * last statement's rows as one JSON array of objects (DuckDB's JSON-safe
 * row form). A failing statement prints DuckDB's message on stderr and exits
 * 1. The import is deliberately not a literal: `deno check` of the project
 * must not resolve (and lock) DuckDB.
 */

/** The package, pinned here and in duckdb.lock. */
export const DUCKDB = ["npm:@duckdb/node-api", "1.5.6-r.1"].join("@");

interface DuckDBModule {
  DuckDBInstance: {
    create(path: string): Promise<{
      connect(): Promise<{
        runAndReadAll(sql: string): Promise<{ getRowObjectsJson(): unknown[] }>;
        closeSync(): void;
      }>;
      closeSync(): void;
    }>;
  };
}

if (import.meta.main) {
  const sql = await new Response(Deno.stdin.readable).text();
  const { DuckDBInstance } = (await import(DUCKDB)) as DuckDBModule;
  const instance = await DuckDBInstance.create(":memory:");
  const connection = await instance.connect();
  try {
    // json and parquet are built in; nothing may be downloaded (the tests never leave the machine).
    await connection.runAndReadAll("SET autoinstall_known_extensions = false");
    const reader = await connection.runAndReadAll(sql);
    await Deno.stdout.write(new TextEncoder().encode(JSON.stringify(reader.getRowObjectsJson())));
  } catch (error) {
    await Deno.stderr.write(new TextEncoder().encode((error as Error).message));
    Deno.exitCode = 1;
  } finally {
    connection.closeSync();
    instance.closeSync();
  }
}
