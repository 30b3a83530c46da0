import { DuckDBInstance } from "@duckdb/node-api";
const db = await DuckDBInstance.create(":memory:");
const c = await db.connect();
Deno.chdir(Deno.args[0]);
const sql = await Deno.readTextFile(Deno.args[1]);
for (const stmt of sql.split(/;\s*\n/).filter(s => s.trim())) {
  try {
    const r = await c.runAndReadAll(stmt);
    console.log(JSON.stringify(r.getRowObjectsJson().slice(0, 8)), r.currentRowCount);
  } catch (e) { console.log("ERR", (e as Error).message.slice(0, 300)); }
}
