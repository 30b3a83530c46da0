/**
 * The archive as its readers meet it. One recording (tests/support/recording.ts:
 * a 40 s diff-mode archive of BTCUSDT and ETHUSDT replaying real captures,
 * snapshots every 10 s, and a short partial-book archive) is checked by:
 *
 * - every SQL block of README's "Reading it with DuckDB", extracted from
 *   README.md and run through @duckdb/node-api, against the fake exchange's
 *   ledger (what it wrote, the snapshots it served, the connections);
 * - `l2-uploader book`, against a minimal reference rebuild written here from
 *   the fixture files alone (not the project's code), and on damaged copies
 *   of the archive (a deleted object, a changed quantity).
 */

import assert from "node:assert/strict";
import { gunzipSync, gzipSync } from "node:zlib";
import { PutObjectCommand } from "@aws-sdk/client-s3";
import { duckdb } from "./support/duckdb.ts";
import { bookFromArgs } from "../src/cli/book.ts";
import { parseConfig } from "../src/config.ts";
import { s3ArchiveReader } from "../src/verify/s3_reader.ts";
import { type ArchivedLine, rawData, readArchive, runCollector } from "./support/collector.ts";
import {
  diffStream,
  partialStream,
  record,
  snapshotRequests,
  SYMBOLS,
} from "./support/recording.ts";
import { TEST_BUCKET, TestS3 } from "./support/s3.ts";
import { listFiles, tempDir } from "./support/temp.ts";
import type { FakeExchange } from "./support/fake_exchange.ts";

const README = new URL("../README.md", import.meta.url);
const HOUR_IN_README = { date: "2026-11-28", hour: "01" };

/** The ```sql blocks of README's "Reading it with DuckDB" section, by their first comment line. */
async function readmeQueries(): Promise<Map<string, string>> {
  const text = await Deno.readTextFile(README);
  const start = text.indexOf("### Reading it with DuckDB");
  assert.ok(start !== -1, "README has no 'Reading it with DuckDB' section");
  const end = text.indexOf("\n## ", start);
  const section = text.slice(start, end === -1 ? undefined : end);
  const queries = new Map<string, string>();
  for (const match of section.matchAll(/```sql\n([\s\S]*?)```/g)) {
    const title = /^-- (.*)$/m.exec(match[1])?.[1];
    assert.ok(title, `a README query without a leading comment: ${match[1].slice(0, 80)}`);
    queries.set(title, match[1]);
  }
  return queries;
}

function query(queries: Map<string, string>, startsWith: string): string {
  const found = [...queries.entries()].filter(([title]) => title.startsWith(startsWith));
  assert.equal(found.length, 1, `one README query titled "${startsWith}…"`);
  return found[0][1];
}

type Row = Record<string, string | null>;

/** Runs SQL with the working directory at `cwd` (the README's paths are relative). */
function duck(sql: string, cwd: string): Promise<Row[]> {
  return duckdb(sql, cwd);
}

/** Distinct frames the exchange wrote for a stream, oldest first, parsed. */
function sentPayloads(exchange: FakeExchange, stream: string): Array<Record<string, unknown>> {
  const seen = new Set<string>();
  const out: Array<Record<string, unknown>> = [];
  for (const frame of exchange.sentFor(stream)) {
    if (seen.has(frame.text)) continue;
    seen.add(frame.text);
    out.push((JSON.parse(frame.text) as { data: Record<string, unknown> }).data);
  }
  return out;
}

const isSnapshotLine = (l: ArchivedLine) => l.value.stream.endsWith("@depthSnapshot");

// ---------------------------------------------------------------------------
// A minimal reference book, from BINANCE.md alone: snapshot, then spot diffs.

type Book = { bids: Map<string, string>; asks: Map<string, string> };

function referenceTops(
  snapshotText: string,
  diffTexts: readonly string[],
  ids: ReadonlySet<number>,
  levels: number,
): Map<number, string> {
  const snapshot = JSON.parse(snapshotText);
  const book: Book = { bids: new Map(snapshot.bids), asks: new Map(snapshot.asks) };
  const tops = new Map<number, string>();
  let last = snapshot.lastUpdateId as number;
  for (const text of diffTexts) {
    const diff = JSON.parse(text);
    if (diff.u <= last) continue;
    assert.ok(diff.U <= last + 1, "the fixture's diffs are consecutive");
    for (const [p, q] of diff.b) Number(q) === 0 ? book.bids.delete(p) : book.bids.set(p, q);
    for (const [p, q] of diff.a) Number(q) === 0 ? book.asks.delete(p) : book.asks.set(p, q);
    last = diff.u;
    if (ids.has(last)) tops.set(last, topRow(book, levels));
  }
  return tops;
}

function topRow(book: Book, levels: number): string {
  const bids = [...book.bids].sort((a, b) => Number(b[0]) - Number(a[0])).slice(0, levels);
  const asks = [...book.asks].sort((a, b) => Number(a[0]) - Number(b[0])).slice(0, levels);
  return [...bids, ...asks].map(([p, q]) => `${p},${q}`).join(",");
}

/** CSV rows of `book` → update id and the levels part of the row (without `known_levels`). */
function csvRows(csv: string): Array<{ recvTs: number; updateId: number; levels: string }> {
  const [header, ...rows] = csv.trimEnd().split("\n");
  assert.match(header, /^recv_ts,update_id,bid_px_1,bid_qty_1,.*,known_levels$/);
  return rows.map((row) => {
    const cells = row.split(",");
    return {
      recvTs: Number(cells[0]),
      updateId: Number(cells[1]),
      levels: cells.slice(2, -1).join(","),
    };
  });
}

async function copyArchive(from: string, to: string): Promise<void> {
  for (const rel of await listFiles(`${from}/archive`)) {
    const target = `${to}/archive/${rel}`;
    await Deno.mkdir(target.slice(0, target.lastIndexOf("/")), { recursive: true });
    await Deno.copyFile(`${from}/archive/${rel}`, target);
  }
}

async function runBook(dataDir: string, args: string[]) {
  let out = "";
  let err = "";
  const code = await bookFromArgs(parseConfig({ DATA_DIR: dataDir }), args, {
    write: (text) => out += text,
    printError: (text) => err += text,
  });
  return { code, out, err };
}

Deno.test({
  name: "a recorded archive reads as documented: README's DuckDB queries and the book command",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using tmp = await tempDir();
    const recording = await record(tmp.path);
    await using _exchange = recording.exchange;
    await using _usdmExchange = recording.usdm.exchange;
    const diffLines = await readArchive(`${recording.diffDir}/archive`);
    const queries = await readmeQueries();
    const diffRoot = `${tmp.path}/diff`;
    const partialRoot = `${tmp.path}/partial`;
    const usdmPartialRoot = `${tmp.path}/usdm-partial`;

    await t.step("README: messages, snapshots and events per symbol match the ledger", async () => {
      const sql = query(queries, "messages, snapshots and event lines per symbol");
      const rows = await duck(sql, diffRoot);
      const eventsOf = (s: string) =>
        diffLines.filter((l) => l.value.event !== undefined && l.key.includes(`/symbol=${s}/`));
      const seen = SYMBOLS.map((s) => eventsOf(s).map((l) => l.text)).flat().join("\n");
      assert.deepEqual(
        rows.map((r) => [r.symbol, r.channel, r.messages, r.snapshots, r.events]),
        SYMBOLS.map((s) => [
          s,
          "depth@100ms",
          String(sentPayloads(recording.exchange, diffStream(s)).length),
          String(snapshotRequests(recording.exchange, s)),
          String(eventsOf(s).length),
        ]),
        `the event lines in the archive:\n${seen}`,
      );
      // Every connection the exchange accepted is bordered by the two events. Other events
      // (a `suspended` or `clock_step` when the test machine stalls) are counted above.
      for (const s of SYMBOLS) {
        const connections = recording.exchange.connections.filter((c) =>
          c.streams.includes(diffStream(s))
        ).length;
        const kinds = eventsOf(s).map((l) => l.value.event);
        assert.deepEqual(
          [
            kinds.filter((k) => k === "connected").length,
            kinds.filter((k) => k === "disconnected").length,
          ],
          [connections, connections],
          `${s}: connected and disconnected lines, one each per connection:\n${seen}`,
        );
      }
      assert.ok(rows.every((r) => Number(r.messages) === 400 && Number(r.snapshots) >= 4));
      const partial = await duck(sql, partialRoot);
      assert.deepEqual(
        partial.map((r) => [r.symbol, r.channel, r.messages, r.snapshots]),
        SYMBOLS.map((s) => [
          s,
          "depth20@100ms",
          String(sentPayloads(recording.exchange, partialStream(s)).length),
          "0",
        ]),
      );
      const usdm = await duck(sql, usdmPartialRoot);
      assert.deepEqual(
        usdm.map((r) => [r.symbol, r.channel, r.messages, r.snapshots]),
        SYMBOLS.map((s) => [
          s,
          "depth20@100ms",
          String(sentPayloads(recording.usdm.exchange, partialStream(s)).length),
          "0",
        ]),
      );
    });

    await t.step("without named columns DuckDB cannot read diffs, as README warns", async () => {
      await assert.rejects(
        () => duck("SELECT count(*) FROM read_json('data/archive/**/*.ndjson.gz')", diffRoot),
        /Duplicate name "[EeUu]"/,
      );
      // Its hint, ignore_errors, drops one of each pair: `u` reads as `U`.
      const [row] = await duck(
        "SELECT count(*) FILTER (WHERE data.u = data.U) AS same, count(data.e) AS diffs " +
          "FROM read_json('data/archive/**/*.ndjson.gz', ignore_errors = true) " +
          "WHERE data.e = 'depthUpdate'",
        diffRoot,
      );
      assert.equal(Number(row.diffs), 2 * 400);
      assert.equal(row.same, row.diffs);
      const readme = await Deno.readTextFile(README);
      assert.match(readme, /Do not follow its\s+hint `ignore_errors = true`/);
    });

    await t.step("README: diffs carry U and u exactly as the exchange sent them", async () => {
      const sql = query(queries, "diff messages");
      const rows = await duck(sql, diffRoot);
      for (const symbol of SYMBOLS) {
        const sent = sentPayloads(recording.exchange, diffStream(symbol));
        const got = rows.filter((r) => r.symbol === symbol);
        assert.deepEqual(
          got.map((r) => [Number(r.first_update_id), Number(r.last_update_id), r.event_time_ms]),
          sent.map((d) => [d.U, d.u, String(d.E)]),
        );
        assert.equal(JSON.stringify(JSON.parse(got[0].bids!)), JSON.stringify(sent[0].b));
      }
      assert.deepEqual(await duck(sql, partialRoot), []);
      // USD-M's partial books have the diffs' shape: the channel tells them apart.
      assert.deepEqual(await duck(sql, usdmPartialRoot), []);
    });

    await t.step("README: partial books give each message's best levels", async () => {
      const sql = query(queries, "partial books");
      const best = (rows: Row[], symbol: string) =>
        rows.filter((r) => r.symbol === symbol).map((r) => [
          Number(r.last_update_id),
          r.best_bid_px,
          r.best_bid_qty,
          r.best_ask_px,
          r.best_ask_qty,
        ]);
      const rows = await duck(sql, partialRoot);
      const usdmRows = await duck(sql, usdmPartialRoot);
      assert.ok(
        rows.every((r) => r.market === "spot") && usdmRows.every((r) => r.market === "usdm"),
      );
      for (const symbol of SYMBOLS) {
        const sent = sentPayloads(recording.exchange, partialStream(symbol)) as Array<
          { lastUpdateId: number; bids: string[][]; asks: string[][] }
        >;
        assert.deepEqual(
          best(rows, symbol),
          sent.map((d) => [d.lastUpdateId, d.bids[0][0], d.bids[0][1], d.asks[0][0], d.asks[0][1]]),
        );
        const usdmSent = sentPayloads(recording.usdm.exchange, partialStream(symbol)) as Array<
          { u: number; b: string[][]; a: string[][] }
        >;
        assert.ok(usdmSent.length >= 50);
        assert.deepEqual(
          best(usdmRows, symbol),
          usdmSent.map((d) => [d.u, d.b[0][0], d.b[0][1], d.a[0][0], d.a[0][1]]),
        );
      }
      assert.deepEqual(await duck(sql, diffRoot), []);
    });

    await t.step("README: snapshot lines, one per REST snapshot served", async () => {
      const rows = await duck(query(queries, "REST snapshots"), diffRoot);
      for (const symbol of SYMBOLS) {
        const got = rows.filter((r) => r.symbol === symbol);
        assert.equal(got.length, snapshotRequests(recording.exchange, symbol));
        assert.ok(got.every((r) => r.stream === `${symbol.toLowerCase()}@depthSnapshot`));
        const archived = diffLines.filter((l) =>
          l.value.stream === `${symbol.toLowerCase()}@depthSnapshot`
        ).map((l) => l.value.data as { lastUpdateId: number; bids: unknown[]; asks: unknown[] });
        assert.deepEqual(
          got.map((r) => [Number(r.last_update_id), Number(r.bid_levels), Number(r.ask_levels)]),
          archived.map((d) => [d.lastUpdateId, d.bids.length, d.asks.length]),
        );
        assert.ok(got.every((r) => Number(r.bid_levels) > 900 && Number(r.ask_levels) > 900));
      }
    });

    await t.step(
      "README: event lines, one connected and one disconnected per connection",
      async () => {
        const rows = await duck(query(queries, "event lines"), diffRoot);
        for (const symbol of SYMBOLS) {
          const connections = recording.exchange.connections.filter((c) =>
            c.streams.includes(diffStream(symbol))
          ).length;
          const got = rows.filter((r) => r.symbol === symbol);
          assert.equal(got.filter((r) => r.event === "connected").length, connections);
          const closed = got.filter((r) => r.event === "disconnected");
          assert.equal(closed.length, connections);
          assert.equal(closed.at(-1)!.cause, "shutdown");
          assert.equal(got.filter((r) => r.event === "gap").length, 0);
          assert.equal(JSON.parse(got[0].line!).stream, diffStream(symbol));
        }
      },
    );

    await t.step("README: one hour of one symbol reads only that hour", async () => {
      const first = diffLines.find((l) => l.key.includes("/symbol=BTCUSDT/"))!;
      const [, date, hour] = /\/date=([^/]+)\/hour=(\d+)\//.exec(first.key)!;
      const template = query(queries, "one hour of one symbol");
      assert.ok(
        template.includes(`DATE '${HOUR_IN_README.date}' AND hour = '${HOUR_IN_README.hour}'`),
      );
      // The recording was made today: its own date and hour replace the README's example.
      const sql = template.replace(HOUR_IN_README.date, date).replace(
        `hour = '${HOUR_IN_README.hour}'`,
        `hour = '${hour}'`,
      );
      const inHour = diffLines.filter((l) =>
        l.key.includes("/symbol=BTCUSDT/") && l.key.includes(`/date=${date}/hour=${hour}/`)
      );
      const [row] = await duck(sql, diffRoot);
      assert.equal(
        Number(row.data_lines),
        inHour.filter((l) => l.value.event === undefined).length,
      );
      assert.equal(
        Number(row.event_lines),
        inHour.filter((l) => l.value.event !== undefined).length,
      );
      assert.ok(Number(row.data_lines) > 0);
    });

    await t.step(
      "README: the Parquet export holds every data line, its data byte for byte",
      async () => {
        await duck(query(queries, "export every data line"), diffRoot);
        const rows = await duck(
          "SELECT symbol, stream, data::VARCHAR AS data FROM 'l2-archive.parquet'",
          diffRoot,
        );
        const dataLines = diffLines.filter((l) => l.value.event === undefined);
        assert.equal(rows.length, dataLines.length);
        assert.equal(
          dataLines.filter(isSnapshotLine).length,
          SYMBOLS.reduce((n, s) => n + snapshotRequests(recording.exchange, s), 0),
        );
        assert.deepEqual(rows.map((r) => r.data).sort(), dataLines.map(rawData).sort());
      },
    );

    await t.step("README: the query for stream= archives reads both layouts alike", async () => {
      const sql = query(queries, "archives written before the channel= partition");
      const oldRoot = `${tmp.path}/old`;
      for (const rel of await listFiles(`${recording.diffDir}/archive`)) {
        const target = `${oldRoot}/data/archive/${rel.replace("/channel=", "/stream=")}`;
        await Deno.mkdir(target.slice(0, target.lastIndexOf("/")), { recursive: true });
        await Deno.copyFile(`${recording.diffDir}/archive/${rel}`, target);
      }
      const expected = SYMBOLS.map((s) => [
        s,
        String(sentPayloads(recording.exchange, diffStream(s)).length),
        String(snapshotRequests(recording.exchange, s)),
      ]);
      // Both layouts in one archive: half the objects (every other one) renamed.
      const mixedRoot = `${tmp.path}/mixed`;
      const files = await listFiles(`${recording.diffDir}/archive`);
      for (const [i, rel] of files.entries()) {
        const renamed = i % 2 === 0 ? rel : rel.replace("/channel=", "/stream=");
        const target = `${mixedRoot}/data/archive/${renamed}`;
        await Deno.mkdir(target.slice(0, target.lastIndexOf("/")), { recursive: true });
        await Deno.copyFile(`${recording.diffDir}/archive/${rel}`, target);
      }
      for (const root of [oldRoot, diffRoot, mixedRoot]) {
        const rows = await duck(sql, root);
        assert.deepEqual(rows.map((r) => [r.symbol, r.messages, r.snapshots]), expected);
      }
      // The Hive queries, pointed at the new layout alone as README says, read its objects.
      const perSymbol = query(queries, "messages, snapshots and event lines per symbol");
      const newLayout = "data/archive/binance/exchange=binance/market=*/channel=*/**/*.ndjson.gz";
      assert.ok((await Deno.readTextFile(README)).includes(`'${newLayout}'`));
      const newOnly = await duck(
        perSymbol.replace("data/archive/**/*.ndjson.gz", newLayout),
        mixedRoot,
      );
      const kept = (await readArchive(`${mixedRoot}/data/archive`))
        .filter((l) => l.key.includes("/channel="));
      assert.deepEqual(
        newOnly.map((r) => [r.symbol, Number(r.messages) + Number(r.snapshots) + Number(r.events)]),
        SYMBOLS.map((s) => [s, kept.filter((l) => l.key.includes(`/symbol=${s}/`)).length]),
      );
    });

    const btc = recording.fixtures.BTCUSDT;

    await t.step("book: a row a second whose top 5 equals an independent rebuild", async () => {
      const out = await runCollector({ DATA_DIR: recording.diffDir }, {
        args: ["book", "--symbol", "BTCUSDT", "--levels", "5", "--every", "1s"],
      });
      assert.equal(out.code, 0, out.stderr);
      const checks = snapshotRequests(recording.exchange, "BTCUSDT") - 1;
      assert.ok(checks >= 3);
      assert.ok(
        out.stderr.includes(`snapshot checks ${checks} passed, 0 failed, 0 skipped; down 0 time`),
        out.stderr,
      );
      const rows = csvRows(out.stdout);
      assert.ok(rows.length >= 35, `${rows.length} rows`);
      for (let i = 1; i < rows.length; i++) {
        assert.equal(rows[i].recvTs - rows[i - 1].recvTs, 1_000_000);
      }
      const reference = referenceTops(
        btc.snapshot,
        btc.diffs,
        new Set(rows.map((r) => r.updateId)),
        5,
      );
      for (const row of rows) {
        assert.equal(row.levels, reference.get(row.updateId), `row ${row.recvTs}`);
      }
    });

    await t.step("book prints a partial-book archive's stored levels", async () => {
      const result = await runBook(recording.partialDir, [
        "--symbol",
        "ETHUSDT",
        "--levels",
        "3",
        "--every",
        "update",
      ]);
      assert.equal(result.code, 0, result.err);
      assert.match(result.err, /ETHUSDT spot\/depth20@100ms/);
      const sent = sentPayloads(recording.exchange, partialStream("ETHUSDT")) as Array<
        { lastUpdateId: number; bids: string[][]; asks: string[][] }
      >;
      const rows = csvRows(result.out);
      assert.deepEqual(
        rows.map((r) => [r.updateId, r.levels]),
        sent.map((d) => [
          d.lastUpdateId,
          [...d.bids.slice(0, 3), ...d.asks.slice(0, 3)].map(([p, q]) => `${p},${q}`).join(","),
        ]),
      );
    });

    await t.step("book reads an S3 archive the same way", async () => {
      await using s3 = await TestS3.start();
      for (const rel of await listFiles(`${recording.diffDir}/archive`)) {
        if (!rel.endsWith(".ndjson.gz")) continue;
        await s3.client.send(
          new PutObjectCommand({
            Bucket: TEST_BUCKET,
            Key: rel,
            Body: await Deno.readFile(`${recording.diffDir}/archive/${rel}`),
          }),
        );
      }
      const args = ["--symbol", "ETHUSDT", "--every", "update", "--format", "ndjson"];
      const local = await runBook(recording.diffDir, args);
      let out = "";
      let err = "";
      const config = parseConfig({
        ...s3.env(),
        DATA_DIR: `${tmp.path}/unused`,
        S3_PREFIX: "binance",
      });
      // verify's S3 reader, with the test server's client (the SDK takes credentials from the
      // process environment, not from the config).
      const reader = s3ArchiveReader(config.s3!, { client: s3.client });
      const code = await bookFromArgs(config, args, {
        write: (text) => out += text,
        printError: (text) => err += text,
        reader,
      });
      assert.equal(local.code, 0, local.err);
      assert.equal(code, 0, err);
      assert.match(err, /s3:\/\/l2-test-bucket\/binance/);
      assert.equal(out, local.out);
      const rows = out.trimEnd().split("\n").map((line) => JSON.parse(line));
      assert.ok(rows.length > 350, `${rows.length} rows`);
      assert.ok(rows.every((r) => Array.isArray(r.bids) && r.bids.length === 10));
    });

    await t.step(
      "book: a deleted object is a hole; the book restarts at the next snapshot",
      async () => {
        const dir = `${tmp.path}/holed`;
        await copyArchive(recording.diffDir, dir);
        // An object of diffs in the middle, with a snapshot stored after it.
        const btcLines = diffLines.filter((l) => l.key.includes("/symbol=BTCUSDT/"));
        const lastSnapshotTs = btcLines.filter(isSnapshotLine).at(-1)!.value.recv_ts;
        const keys = [...new Set(btcLines.map((l) => l.key))].sort().filter((key) => {
          const of = btcLines.filter((l) => l.key === key);
          return of.some((l) => l.value.event === undefined && !isSnapshotLine(l)) &&
            of.every((l) => l.value.recv_ts < lastSnapshotTs);
        });
        assert.ok(keys.length >= 3, `${keys.length} objects of diffs before the last snapshot`);
        const victim = keys[Math.floor(keys.length / 2)];
        await Deno.remove(`${dir}/archive/${victim}`);
        const lastLost = Math.max(
          ...diffLines.filter((l) => l.key === victim).map((l) => l.value.recv_ts),
        );
        const restartAt = diffLines.find((l) =>
          l.key.includes("/symbol=BTCUSDT/") && isSnapshotLine(l) && l.value.recv_ts > lastLost
        )!;
        const restartId = (restartAt.value.data as { lastUpdateId: number }).lastUpdateId;

        const result = await runBook(dir, ["--symbol", "BTCUSDT", "--levels", "5"]);
        assert.equal(result.code, 1, result.err);
        assert.match(
          result.err,
          /DOWN {2}the book cannot be rebuilt from here: update ids \d+\.\.\d+ missing, no event line explains it/,
        );
        assert.ok(result.err.includes(`restarted from snapshot ${restartId}`), result.err);
        const rows = csvRows(result.out);
        const reference = referenceTops(
          btc.snapshot,
          btc.diffs,
          new Set(rows.map((r) => r.updateId)),
          5,
        );
        for (const row of rows) assert.equal(row.levels, reference.get(row.updateId));
        // No row for the time the book was unknown, and rows again after the restart.
        const firstLost = Math.min(
          ...diffLines.filter((l) => l.key === victim).map((l) => l.value.recv_ts),
        );
        assert.ok(!rows.some((r) => r.recvTs > firstLost && r.recvTs < restartAt.value.recv_ts));
        assert.ok(rows.some((r) => r.recvTs > restartAt.value.recv_ts));
      },
    );

    await t.step(
      "book: a changed quantity fails the next snapshot check, naming the level",
      async () => {
        const dir = `${tmp.path}/corrupt`;
        await copyArchive(recording.diffDir, dir);
        const btcLines = diffLines.filter((l) => l.key.includes("/symbol=BTCUSDT/"));
        const snapshots = btcLines.filter(isSnapshotLine);
        const firstSnapshot = snapshots[0].value.data as { bids: string[][] };
        const firstLowBid = Number(firstSnapshot.bids.at(-1)![0]);
        // A bid set by a diff after the second snapshot and never touched again.
        const after = btcLines.indexOf(snapshots[1]);
        let chosen: { line: ArchivedLine; price: string; qty: string } | undefined;
        for (let i = after + 1; i < btcLines.length && !chosen; i++) {
          const line = btcLines[i];
          if (line.value.event !== undefined || isSnapshotLine(line)) continue;
          const later = btcLines.slice(i + 1).filter((l) =>
            l.value.event === undefined && !isSnapshotLine(l)
          );
          const touched = new Set(
            later.flatMap((l) => (l.value.data as { b: string[][] }).b.map((b) => b[0])),
          );
          for (const [price, qty] of (line.value.data as { b: string[][] }).b) {
            if (Number(qty) === 0 || touched.has(price) || Number(price) < firstLowBid) continue;
            const check = snapshots.find((s) => s.value.recv_ts > line.value.recv_ts);
            if (!check) break;
            const checkBids = (check.value.data as { bids: string[][] }).bids;
            if (Number(price) < Number(checkBids.at(-1)![0])) continue;
            chosen = { line, price, qty };
            break;
          }
        }
        assert.ok(chosen, "a diff level to corrupt");
        const corrupted = chosen.qty.slice(0, -1) + (chosen.qty.endsWith("7") ? "3" : "7");
        const path = `${dir}/archive/${chosen.line.key}`;
        const text = new TextDecoder().decode(gunzipSync(await Deno.readFile(path)));
        const changed = chosen.line.text.replace(
          `["${chosen.price}","${chosen.qty}"]`,
          `["${chosen.price}","${corrupted}"]`,
        );
        assert.notEqual(changed, chosen.line.text);
        await Deno.writeFile(
          path,
          gzipSync(new TextEncoder().encode(text.replace(chosen.line.text, changed))),
        );

        const result = await runBook(dir, ["--symbol", "BTCUSDT", "--levels", "5"]);
        assert.equal(result.code, 1, result.err);
        assert.ok(
          result.err.includes(
            `bid ${chosen.price}: rebuilt "${corrupted}", snapshot "${chosen.qty}"`,
          ),
          result.err,
        );
        assert.match(result.err, /MISMATCH/);
        assert.match(result.err, /snapshot checks \d passed, 1 failed/);
      },
    );
  },
});
