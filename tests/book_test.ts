import assert from "node:assert/strict";
import {
  type BookNote,
  BookRebuilder,
  type BookRow,
  type DepthDiff,
  type RebuildOptions,
} from "../src/book/rebuild.ts";
import { depthBookOf, depthDiffOf } from "../src/book/payload.ts";
import { Side } from "../src/book/side.ts";
import { dataLine, gzipLines } from "../src/archive/encode.ts";
import { planKey } from "../src/archive/keys.ts";
import { bookFromArgs, bookOptionsFromCli, csvHeader, csvRow, ndjsonRow } from "../src/cli/book.ts";
import { parseConfig } from "../src/config.ts";
import { isoMicros } from "../src/verify/audit.ts";
import { tempDir } from "./support/temp.ts";

function rebuilder(options: Partial<RebuildOptions> = {}) {
  const rows: BookRow[] = [];
  const notes: BookNote[] = [];
  const book = new BookRebuilder({
    rule: "spot-diff",
    levels: 3,
    onRow: (row) => rows.push(row),
    onNote: (note) => notes.push(note),
    ...options,
  });
  return { book, rows, notes };
}

const snapshot = (lastUpdateId: number, bids: Levels, asks: Levels) => ({
  lastUpdateId,
  bids,
  asks,
});

type Levels = Array<[string, string]>;
const diff = (U: number, u: number, b: Levels = [], a: Levels = [], pu?: number): DepthDiff => ({
  U,
  u,
  b,
  a,
  ...(pu === undefined ? {} : { pu }),
});

const BASE = snapshot(100, [["10.00", "1"], ["9.00", "2"], ["8.00", "3"]], [
  ["11.00", "1"],
  ["12.00", "2"],
  ["13.00", "3"],
]);

Deno.test("a book side orders by price, keeps the texts, and a zero quantity in any form removes", () => {
  const bids = new Side("bid");
  bids.set("10.50000000", "1.00000000");
  bids.set("9.5", "2");
  bids.set("11", "3");
  assert.deepEqual(bids.top(2), [["11", "3"], ["10.50000000", "1.00000000"]]);
  bids.set("10.5", "0.00000000"); // the same level, written differently
  assert.deepEqual(bids.levels(), [["11", "3"], ["9.5", "2"]]);
  bids.set("9.5", "0");
  bids.set("11", "0.000");
  assert.equal(bids.size, 0);
  const asks = new Side("ask");
  for (const p of ["3", "1", "2"]) asks.set(p, "1");
  assert.deepEqual(asks.top(5).map((l) => l[0]), ["1", "2", "3"]);
  assert.equal(asks.worstValue, 3);
  assert.deepEqual(asks.within(2).map((l) => l[0]), ["1", "2"]);
  asks.clearWithin(2);
  assert.deepEqual(asks.levels(), [["3", "1"]]);
});

Deno.test("spot: the book starts at a snapshot, drops older diffs, applies the one that straddles it", () => {
  const { book, rows, notes } = rebuilder();
  book.diff(1, diff(90, 99, [["10.00", "5"]])); // before any snapshot: ignored
  book.snapshot(2, BASE);
  book.diff(3, diff(95, 100, [["10.00", "7"]])); // u <= L: already in the snapshot
  book.diff(4, diff(99, 103, [["10.00", "0.00000000"]], [["10.50", "4"]])); // U <= L+1 <= u
  book.diff(5, diff(104, 104, [["9.50", "1"]]));
  const summary = book.finish();
  assert.deepEqual(rows.map((r) => [r.recvTs, r.updateId]), [[4, 103], [5, 104]]);
  assert.deepEqual(rows[1].bids, [["9.50", "1"], ["9.00", "2"], ["8.00", "3"]]);
  assert.deepEqual(rows[1].asks, [["10.50", "4"], ["11.00", "1"], ["12.00", "2"]]);
  assert.equal(summary.failing, 0);
  assert.equal(notes[0].kind, "start");
});

Deno.test("a symbol stopped and listed again with lower update ids: the book restarts from its new snapshot, nothing called stored again", () => {
  const { book, rows, notes } = rebuilder();
  book.snapshot(1, BASE);
  book.diff(2, diff(101, 102, [["10.00", "4"]]));
  book.diff(3, diff(103, 104));
  // A diff received before the stop (kept while down) must not join the new chain.
  book.event(4, "stopped", { reason: "no longer listed" });
  book.event(10, "connected", {});
  book.diff(11, diff(6, 7, [["5.00", "1"]]));
  book.snapshot(12, snapshot(5, [["5.00", "2"]], [["6.00", "2"]]));
  book.diff(13, diff(8, 8, [], [["6.00", "3"]]));
  const summary = book.finish();
  assert.deepEqual(rows.map((r) => [r.recvTs, r.updateId]), [[2, 102], [3, 104], [12, 7], [13, 8]]);
  assert.deepEqual(rows.at(-1)!.bids, [["5.00", "1"]]);
  assert.deepEqual(rows.at(-1)!.asks, [["6.00", "3"]]);
  assert.equal(summary.failing, 0, JSON.stringify(notes));
  assert.equal(summary.unexplainedDowns, 0);
  assert.ok(!notes.some((n) => /stored again/.test(n.detail)), JSON.stringify(notes));
  assert.ok(notes.some((n) => n.kind === "start" && /restarted from snapshot 5/.test(n.detail)));
});

Deno.test("a partial book stopped and listed again with lower ids: its pushes are rows again", () => {
  const { book, rows, notes } = rebuilder({ rule: "partial" });
  book.partial(1, snapshot(50_000, [["10.00", "1"]], [["11.00", "1"]]));
  book.event(2, "stopped", {});
  book.partial(10, snapshot(12, [["5.00", "1"]], [["6.00", "1"]]));
  book.partial(11, snapshot(15, [["5.00", "2"]], [["6.00", "1"]]));
  assert.deepEqual(rows.map((r) => [r.recvTs, r.updateId]), [[1, 50_000], [10, 12], [11, 15]]);
  assert.equal(book.finish().failing, 0, JSON.stringify(notes));
});

Deno.test("spot: a snapshot older than the next diff waits for the next snapshot", () => {
  const { book, rows, notes } = rebuilder();
  book.snapshot(1, BASE);
  book.diff(2, diff(105, 106));
  assert.equal(rows.length, 0);
  assert.match(
    notes.at(-1)!.detail,
    /snapshot 100 is older than the first diff after it \(U=105\)/,
  );
  book.snapshot(3, snapshot(106, [["10.00", "1"]], [["11.00", "1"]]));
  book.diff(4, diff(107, 107));
  assert.deepEqual(rows.map((r) => r.updateId), [107]);
});

Deno.test("diffs received before the snapshot line count: the one that straddles it often comes first", () => {
  const { book, rows, notes } = rebuilder();
  book.diff(1, diff(90, 99, [["10.00", "9"]]));
  book.diff(2, diff(100, 104, [["10.00", "5"]])); // straddles 102, received before the snapshot
  book.snapshot(3, snapshot(102, [["10.00", "1"]], [["11.00", "1"]]));
  book.diff(4, diff(105, 106, [], [["11.00", "2"]]));
  const summary = book.finish();
  assert.equal(summary.failing, 0, JSON.stringify(notes));
  // A row when the snapshot arrived (diff 100..104 applied), then one per diff.
  assert.deepEqual(rows.map((r) => [r.recvTs, r.updateId]), [[3, 104], [4, 106]]);
  assert.deepEqual(rows[1].bids, [["10.00", "5"]]);
  assert.deepEqual(rows[1].asks, [["11.00", "2"]]);
});

Deno.test("a break no event line explains fails; a gap event is explained; both restart at the next snapshot", () => {
  const { book, rows, notes } = rebuilder();
  book.snapshot(1, BASE);
  book.diff(2, diff(101, 102));
  book.diff(3, diff(110, 111)); // ids 103..109 missing, nothing says why
  book.diff(4, diff(112, 112));
  book.snapshot(5, snapshot(112, [["10.00", "1"]], [["11.00", "1"]]));
  book.diff(6, diff(113, 113));
  book.event(7, "gap", { expected: 114, received: 120 });
  book.diff(8, diff(120, 121));
  book.snapshot(9, snapshot(121, [["10.00", "1"]], [["11.00", "1"]]));
  book.diff(10, diff(122, 122));
  const summary = book.finish();
  assert.deepEqual(rows.map((r) => r.updateId), [102, 113, 122]);
  const downs = notes.filter((n) => n.kind === "down");
  assert.equal(downs.length, 2);
  assert.match(downs[0].detail, /update ids 103\.\.109 missing, no event line explains it/);
  assert.equal(downs[0].failing, true);
  assert.match(downs[1].detail, /gap event \(expected 114, received 120\)/);
  assert.equal(downs[1].failing, false);
  assert.deepEqual([summary.downs, summary.unexplainedDowns, summary.failing], [2, 1, 1]);
  assert.match(notes.filter((n) => n.kind === "start")[1].detail, /restarted from snapshot 112/);
});

Deno.test("after a disconnected line the book goes on when the next diff continues the chain", () => {
  const { book, rows, notes } = rebuilder();
  book.snapshot(1, BASE);
  book.diff(2, diff(101, 102));
  book.event(3, "disconnected", { cause: "error" });
  book.event(4, "connected", {});
  book.diff(5, diff(103, 104));
  book.event(6, "disconnected", { cause: "error" });
  book.diff(7, diff(110, 111));
  assert.deepEqual(rows.map((r) => r.updateId), [102, 104]);
  const down = notes.find((n) => n.kind === "down")!;
  assert.equal(down.failing, false);
  assert.match(down.detail, /after a disconnected event/);
});

Deno.test("book explains a break by the event lines verify does: stopped, then connected, then a new chain", () => {
  // A symbol that leaves the recorded set and comes back (or a process that
  // starts again) starts a new chain after a `connected` line, with no `gap`.
  // The book goes down at the `stopped` line itself: a new chain follows it.
  for (const event of ["connected", "rotated", "suspended", "clock_step"]) {
    const { book, notes } = rebuilder();
    book.snapshot(1, BASE);
    book.diff(2, diff(101, 102));
    book.event(3, "stopped", { reason: "delisted" });
    book.event(4, event, {});
    book.diff(5, diff(500, 501));
    const downs = notes.filter((n) => n.kind === "down");
    assert.equal(downs.length, 1, event);
    assert.equal(downs[0].failing, false, event);
    assert.match(downs[0].detail, /the stream stopped/);
    assert.equal(book.finish().unexplainedDowns, 0);
  }
  // Without `stopped`, the event line before the break is what explains it.
  for (const event of ["connected", "rotated", "suspended", "clock_step"]) {
    const { book, notes } = rebuilder();
    book.snapshot(1, BASE);
    book.diff(2, diff(101, 102));
    book.event(4, event, {});
    book.diff(5, diff(500, 501));
    const down = notes.find((n) => n.kind === "down")!;
    assert.equal(down.failing, false, event);
    assert.match(down.detail, new RegExp(`after a ${event} event`));
    assert.equal(book.finish().unexplainedDowns, 0);
  }
});

Deno.test("a gap line while the book waits on a loaded snapshot keeps it: the first diff after it decides", () => {
  // The REST answer is ahead of the WebSocket; diffs 105..109 are then lost.
  const { book, rows, notes } = rebuilder();
  book.diff(1, diff(101, 104));
  book.snapshot(2, snapshot(120, [["10.00", "1"]], [["11.00", "1"]]));
  book.event(3, "gap", { expected: 105, received: 110 });
  book.diff(4, diff(110, 125));
  book.diff(5, diff(126, 126));
  assert.deepEqual(rows.map((r) => r.updateId), [125, 126]);
  assert.equal(notes.filter((n) => n.kind === "down").length, 0);
  // A snapshot older than the new chain cannot start it: down, explained by the gap.
  const older = rebuilder();
  older.book.snapshot(1, snapshot(120, [["10.00", "1"]], [["11.00", "1"]]));
  older.book.event(2, "gap", { expected: 105, received: 130 });
  older.book.diff(3, diff(130, 131));
  const down = older.notes.find((n) => n.kind === "down")!;
  assert.equal(down.failing, false);
  assert.equal(older.rows.length, 0);
});

Deno.test("USD-M: drops u < L, applies U <= L <= u first, then follows pu", () => {
  const { book, rows, notes } = rebuilder({ rule: "usdm-diff" });
  book.snapshot(1, BASE);
  book.diff(2, diff(90, 99, [["10.00", "9"]], [], 80));
  book.diff(3, diff(99, 100, [["10.00", "8"]], [], 98)); // u == L: applied (USD-M)
  book.diff(4, diff(105, 110, [], [], 100)); // U skips ahead, pu follows: fine on futures
  book.diff(5, diff(115, 118, [], [], 111)); // pu != previous u
  assert.deepEqual(rows.map((r) => r.updateId), [100, 110]);
  assert.deepEqual(rows[0].bids[0], ["10.00", "8"]);
  assert.match(notes.at(-1)!.detail, /pu=111 after u=110/);
});

Deno.test("a later snapshot is rolled forward to the book and compared; a difference names the level", () => {
  const { book, notes } = rebuilder();
  book.snapshot(1, BASE);
  book.diff(2, diff(101, 102, [["9.00", "2.5"]]));
  book.diff(3, diff(103, 104, [["8.00", "0"]], [["12.00", "2.2"]]));
  // Taken at 102 but stored after the diff to 104 arrived: rolled through 103..104.
  book.snapshot(
    4,
    snapshot(102, [["10.00", "1.0"], ["9.00", "2.50"], ["8.00", "3"]], [
      ["11.00", "1"],
      ["12.00", "2"],
      ["13.00", "3"],
    ]),
  );
  assert.equal(notes.at(-1)!.kind, "check");
  assert.match(notes.at(-1)!.detail, /snapshot 102 agrees with the rebuilt book at 104/);
  // Ahead of the book: checked once the book reaches it. The rebuilt book has 9.00 at 2.5.
  book.snapshot(5, snapshot(105, [["10.00", "1"], ["9.00", "2.4"]], [["11.00", "1"]]));
  book.diff(6, diff(105, 105));
  const mismatch = notes.at(-1)!;
  assert.equal(mismatch.kind, "mismatch");
  assert.equal(mismatch.failing, true);
  assert.match(mismatch.detail, /bid 9\.00: rebuilt "2\.50", snapshot "2\.4"/);
  // Only within both ranges: the rebuilt 8.00 bid is gone, and asks beyond 11.00 are not compared.
  assert.doesNotMatch(mismatch.detail, /12\.00|13\.00/);
  // The book took the snapshot's levels: the next check of the same levels passes.
  book.snapshot(7, snapshot(105, [["10.00", "1"], ["9.00", "2.4"]], [["11.00", "1"]]));
  assert.equal(notes.at(-1)!.kind, "check");
  // A level only the rebuilt book has counts among the levels compared: never more
  // differences than levels.
  book.diff(8, diff(106, 106, [["10.50", "7"]]));
  book.snapshot(9, snapshot(106, [["10.00", "1"]], [["11.00", "1"]]));
  assert.match(
    notes.at(-1)!.detail,
    /on 1 of 2 bid and 1 ask levels: bid 10\.50: the rebuilt book has/,
  );
  assert.equal(book.finish().checksFailed, 2);
});

Deno.test("--every samples the book on whole periods; partial books print the stored levels", () => {
  const { book, rows } = rebuilder({ rule: "partial", everyUs: 1_000_000, levels: 1 });
  const msg = (id: number, bid: string) => snapshot(id, [[bid, "1"]], [["99", "1"]]);
  book.partial(1_500_000, msg(1, "10"));
  book.partial(2_000_000, msg(2, "11")); // at the sample time: included in it
  book.partial(2_100_000, msg(3, "12"));
  book.partial(4_200_000, msg(4, "13"));
  book.finish();
  assert.deepEqual(rows.map((r) => [r.recvTs, r.updateId, r.bids[0][0]]), [
    [2_000_000, 2, "11"],
    [3_000_000, 3, "12"],
    [4_000_000, 3, "12"],
  ]);
});

Deno.test("rows as CSV keep the texts and leave missing levels empty", () => {
  assert.equal(
    csvHeader(2),
    "recv_ts,update_id,bid_px_1,bid_qty_1,bid_px_2,bid_qty_2,ask_px_1,ask_qty_1,ask_px_2,ask_qty_2," +
      "known_levels\n",
  );
  assert.equal(
    csvRow({
      recvTs: 5,
      updateId: 7,
      bids: [["1.10000000", "0.50000000"]],
      asks: [],
      knownLevels: 0,
    }, 2),
    "5,7,1.10000000,0.50000000,,,,,,,0\n",
  );
});

Deno.test("book: usage errors exit 2, an archive without the symbol exits 1", async () => {
  await using tmp = await tempDir();
  const config = parseConfig({ DATA_DIR: tmp.path });
  const run = async (args: string[]) => {
    let err = "";
    const code = await bookFromArgs(config, args, {
      write: () => {},
      printError: (text) => err += text,
    });
    return { code, err };
  };
  for (
    const [args, message] of [
      [[], /exactly one symbol/],
      [["--symbol", "BTCUSDT,ETHUSDT"], /exactly one symbol/],
      [["--symbol", "BTCUSDT", "--every", "often"], /--every/],
      [["--symbol", "BTCUSDT", "--format", "xml"], /--format/],
      [["--symbol", "BTCUSDT", "--levels", "0"], /--levels/],
      [["--symbol", "BTCUSDT", "--from", "2026-01-02", "--to", "2026-01-01"], /not before/],
      [["--symbol", "BTCUSDT", "--bogus"], /bogus/],
      [["--symbol", "BTCUSDT", "--channel", "trade"], /--channel: a depth stream type/],
    ] as const
  ) {
    const result = await run([...args]);
    assert.equal(result.code, 2, `${args.join(" ")}: ${result.err}`);
    assert.match(result.err, message);
  }
  const empty = await run(["--symbol", "BTCUSDT"]);
  assert.equal(empty.code, 1);
  assert.match(empty.err, /no object of BTCUSDT/);
});

Deno.test("book: a line that is not a depth message is reported and nothing of it is applied", async () => {
  assert.equal(depthDiffOf({ U: 1, u: 2, b: [["x", "1"]], a: [] }), undefined);
  assert.equal(depthDiffOf({ U: 1, u: "2", b: [], a: [] }), undefined);
  assert.deepEqual(depthDiffOf({ e: "depthUpdate", U: 1, u: 2, pu: 0, b: [], a: [] }), {
    U: 1,
    u: 2,
    pu: 0,
    b: [],
    a: [],
  });
  assert.deepEqual(depthBookOf({ u: 7, b: [["1.0", "2"]], a: [] }), {
    lastUpdateId: 7,
    bids: [["1.0", "2"]],
    asks: [],
  });
  assert.equal(depthBookOf({ lastUpdateId: 7, bids: "none", asks: [] }), undefined);

  await using tmp = await tempDir();
  const t0 = Date.UTC(2026, 0, 1) * 1000;
  const stream = "btcusdt@depth@100ms";
  const lines = [
    dataLine(
      t0,
      "btcusdt@depthSnapshot",
      '{"lastUpdateId":10,"bids":[["9","1"]],"asks":[["11","1"]]}',
    ),
    dataLine(t0 + 1, stream, '{"e":"depthUpdate","U":11,"u":12,"b":[["9","2"]],"a":[]}'),
    dataLine(t0 + 2, stream, '{"e":"depthUpdate","U":13,"u":14,"b":[["nine","3"]],"a":[]}'),
    dataLine(t0 + 3, stream, '{"e":"depthUpdate","U":15,"u":16,"b":[],"a":[]}'),
  ];
  const key = planKey({
    prefix: "binance",
    market: "spot",
    streamType: "depth@100ms",
    symbol: "BTCUSDT",
    firstRecvTs: t0,
    instanceId: "t",
    seq: 0,
  });
  const path = `${tmp.path}/archive/${key}`;
  await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  await Deno.writeFile(path, await gzipLines(lines, 1));
  let out = "";
  let err = "";
  const code = await bookFromArgs(
    parseConfig({ DATA_DIR: tmp.path }),
    ["--symbol", "BTCUSDT", "--every", "update", "--levels", "1"],
    { write: (text) => out += text, printError: (text) => err += text },
  );
  assert.equal(code, 1);
  assert.match(err, /DAMAGED {2}.*:3 is not a depth diff/);
  assert.match(err, /DOWN {2}the book cannot be rebuilt from here: update ids 13\.\.14 missing/);
  assert.deepEqual(out.trimEnd().split("\n").slice(1), [`${t0 + 1},12,9,2,11,1,1`]);
});

Deno.test("a snapshot fetched before a gap but stored after it: the gap line still explains the break", () => {
  // The REST answer comes late: its line lands after the gap and after diffs
  // that follow it; replaying those diffs meets the break the gap line named.
  const { book, notes } = rebuilder();
  book.snapshot(1, BASE);
  book.diff(2, diff(101, 105));
  book.event(3, "gap", { expected: 106, received: 107 });
  book.diff(4, diff(107, 108));
  book.diff(5, diff(109, 110));
  book.snapshot(6, snapshot(104, [["10.00", "1"]], [["11.00", "1"]]));
  book.diff(7, diff(111, 112));
  book.snapshot(8, snapshot(110, [["10.00", "1"]], [["11.00", "1"]]));
  book.diff(9, diff(111, 113));
  const summary = book.finish();
  assert.deepEqual(
    notes.filter((n) => n.failing).map((n) => n.detail),
    [],
    "every break is explained by the gap line",
  );
  assert.equal(summary.unexplainedDowns, 0);
  assert.ok(summary.downs >= 1);
});

Deno.test("a dropped line stored after the diffs that follow the loss explains the break", () => {
  // holes.ts writes `dropped` into the stream's next stored batch.
  const { book, notes } = rebuilder();
  book.snapshot(1, BASE);
  book.diff(2, diff(101, 102));
  book.diff(10, diff(110, 111)); // 103..109 lost between t=2 and t=10
  book.diff(11, diff(112, 112));
  book.event(12, "dropped", {
    messages: 7,
    reason: "spool full",
    first_recv_ts: 3,
    last_recv_ts: 9,
  });
  const summary = book.finish();
  assert.deepEqual([summary.downs, summary.unexplainedDowns, summary.failing], [1, 0, 0]);
  const explained = notes.filter((n) => n.kind === "down" && !n.failing).at(-1)!;
  assert.equal(explained.recvTs, 10);
  assert.match(explained.detail, /explained by a dropped line stored after it: 7 messages lost/);

  // One that counts messages outside the break explains nothing.
  const other = rebuilder();
  other.book.snapshot(1, BASE);
  other.book.diff(2, diff(101, 102));
  other.book.diff(10, diff(110, 111));
  other.book.event(12, "dropped", { messages: 7, reason: "x", first_recv_ts: 0, last_recv_ts: 9 });
  assert.deepEqual(other.book.finish().unexplainedDowns, 1);
});

Deno.test("book --symbol takes symbols in any script, as verify does, and refuses a path", () => {
  const symbolOf = (text: string) => {
    const parsed = bookOptionsFromCli({ symbol: [text] });
    return "problem" in parsed ? parsed.problem : parsed.options.symbol;
  };
  assert.equal(symbolOf("btcusdt"), "BTCUSDT");
  assert.equal(symbolOf("币安人生usdt"), "币安人生USDT");
  assert.match(symbolOf("BTC/USDT"), /not a symbol/);
  assert.match(symbolOf("symbol=X"), /not a symbol/);
});

Deno.test("a break met again when an older snapshot stored after it replays the kept diffs counts once", () => {
  const { book, notes } = rebuilder();
  book.snapshot(1, BASE);
  book.diff(2, diff(101, 102));
  book.diff(3, diff(103, 105));
  book.diff(10, diff(110, 111)); // 106..109 lost between t=3 and t=10
  // A snapshot older than the applied diffs (fetched before the loss, answered late).
  book.snapshot(11, snapshot(102, [["10.00", "1"]], [["11.00", "1"]]));
  book.event(12, "dropped", {
    messages: 4,
    reason: "spool full",
    first_recv_ts: 4,
    last_recv_ts: 9,
  });
  const summary = book.finish();
  const downs = notes.filter((n) => n.kind === "down" && n.failing);
  assert.equal(downs.length, 1, downs.map((n) => n.detail).join("\n"));
  assert.deepEqual([summary.downs, summary.unexplainedDowns, summary.failing], [1, 0, 0]);
});

Deno.test("a second break first met in a replay counts, even at the receive time of the first", () => {
  // After the wall clock steps back, the receive clock holds: lines share one µs.
  const { book } = rebuilder();
  book.snapshot(1, BASE);
  book.diff(2, diff(101, 102));
  book.diff(10, diff(110, 111)); // break 1: 103..109 missing
  book.diff(10, diff(112, 113));
  book.diff(10, diff(120, 121)); // break 2 (114..119), met only when the snapshot replays
  book.snapshot(11, snapshot(111, [["10.00", "1"]], [["11.00", "1"]]));
  const summary = book.finish();
  assert.deepEqual([summary.downs, summary.unexplainedDowns], [2, 2]);
});

Deno.test("book --from reads back to the snapshot before the range: rows from --from, a break before it does not fail the range", async () => {
  await using tmp = await tempDir();
  const t0 = Date.UTC(2026, 5, 1) * 1000;
  const stream = "btcusdt@depth@100ms";
  const minute = 60_000_000;
  // One snapshot at 00:00:05, then a diff a second; a break no line explains at 00:02:30,
  // and a second snapshot at 00:03:00 that restarts the book; one object per minute.
  const byMinute: string[][] = [];
  let id = 1000;
  for (let s = 1; s < 20 * 60; s++) {
    const ts = t0 + s * 1_000_000;
    if (s === 150) id += 10;
    const diffText = `{"e":"depthUpdate","U":${id},"u":${id},"b":[["100.0","${id}"]],"a":[]}`;
    const lines = (byMinute[Math.floor(s / 60)] ??= []);
    lines.push(dataLine(ts, stream, diffText));
    if (s === 5 || s === 180) {
      const snapshot = `{"lastUpdateId":${id},"bids":[["100.0","${id}"]],"asks":[["101.0","1"]]}`;
      lines.push(dataLine(ts + 1, "btcusdt@depthSnapshot", snapshot));
    }
    id++;
  }
  const keyAt = (firstRecvTs: number, seq: number) =>
    planKey({
      prefix: "binance",
      market: "spot",
      streamType: "depth@100ms",
      symbol: "BTCUSDT",
      firstRecvTs,
      instanceId: "t",
      seq,
    });
  for (const [m, lines] of byMinute.entries()) {
    const key = keyAt(t0 + m * minute + (m === 0 ? 1_000_000 : 0), m);
    const path = `${tmp.path}/archive/${key}`;
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    await Deno.writeFile(path, await gzipLines(lines, 1));
  }
  const run = async (from: string, to: string) => {
    let out = "";
    let err = "";
    const code = await bookFromArgs(
      parseConfig({ DATA_DIR: tmp.path, SNAPSHOT_INTERVAL_SECONDS: "300" }),
      ["--symbol", "BTCUSDT", "--every", "1m", "--levels", "1", "--from", from, "--to", to],
      { write: (text) => out += text, printError: (text) => err += text },
    );
    return { code, err, rows: out.trimEnd().split("\n").slice(1) };
  };
  // An unreadable object in the lookback, before any line: damage before the range, not in it.
  const broken = keyAt(t0 - 2 * minute, 99);
  await Deno.mkdir(`${tmp.path}/archive/${broken.slice(0, broken.lastIndexOf("/"))}`, {
    recursive: true,
  });
  await Deno.writeTextFile(`${tmp.path}/archive/${broken}`, "not gzip");
  const later = await run("2026-06-01T00:05:00Z", "2026-06-01T00:15:00Z");
  assert.equal(later.code, 0, later.err);
  assert.equal(later.rows.length, 10, later.err);
  assert.equal(later.rows[0].split(",")[0], String(t0 + 5 * minute));
  // The range starts after the unexplained break and the snapshot that restarted the book.
  const across = await run("2026-06-01T00:02:00Z", "2026-06-01T00:04:00Z");
  assert.equal(across.code, 1, "the break inside the range fails it");
  const after = await run("2026-06-01T00:03:30Z", "2026-06-01T00:04:00Z");
  assert.equal(after.code, 0, after.err);
  assert.match(after.err, /down {2}before the range: update ids/);
});

Deno.test("--every writes no row for the time between the last good diff and a break: a disconnect, a gap", () => {
  const { book, rows } = rebuilder({ everyUs: 1_000_000 });
  book.snapshot(500_000, BASE);
  book.diff(900_000, diff(101, 102));
  book.diff(1_500_000, diff(103, 104)); // row at 1 s: 102
  book.event(2_200_000, "disconnected", { cause: "stale" }); // silent from 1.5 s; lost messages
  book.event(7_300_000, "connected", {});
  book.event(7_400_000, "gap", { expected: 105, received: 190 });
  book.snapshot(7_500_000, snapshot(200, [["10.50", "1"]], [["11.00", "1"]]));
  book.diff(7_600_000, diff(195, 201));
  book.diff(9_100_000, diff(202, 203));
  book.finish();
  // 2 s to 7 s: the book was unknown (ids 105..194 lost), never printed as 104.
  assert.deepEqual(rows.map((r) => [r.recvTs, r.updateId]), [[1_000_000, 102], [8_000_000, 201], [
    9_000_000,
    201,
  ]]);

  // The chain goes on after the reconnect: the rows held at the event lines are written.
  const { book: on, rows: onRows } = rebuilder({ everyUs: 1_000_000 });
  on.snapshot(500_000, BASE);
  on.diff(900_000, diff(101, 102));
  on.event(2_200_000, "disconnected", { cause: "error" });
  on.event(2_300_000, "connected", {});
  on.diff(3_500_000, diff(103, 104));
  on.finish();
  assert.deepEqual(onRows.map((r) => [r.recvTs, r.updateId]), [[1_000_000, 102], [2_000_000, 102], [
    3_000_000,
    102,
  ]]);
});

Deno.test("--every: a partial book cut by a disconnect is not printed until the next push", () => {
  const { book, rows } = rebuilder({ rule: "partial", everyUs: 1_000_000, levels: 1 });
  const msg = (id: number, bid: string) => snapshot(id, [[bid, "1"]], [["99", "1"]]);
  book.partial(500_000, msg(1, "10"));
  book.partial(1_500_000, msg(2, "11"));
  book.event(4_600_000, "stale", {});
  book.partial(6_300_000, msg(9, "15"));
  book.partial(7_200_000, msg(10, "16"));
  book.finish();
  assert.deepEqual(rows.map((r) => [r.recvTs, r.updateId]), [[1_000_000, 1], [7_000_000, 9]]);
});

Deno.test("a partial book whose id goes back is a message stored again: skipped and noted, never printed as the book", () => {
  const { book, rows, notes } = rebuilder({ rule: "partial", levels: 1 });
  const msg = (id: number, bid: string) => snapshot(id, [[bid, "1"]], [["99", "1"]]);
  book.partial(1, msg(7, "10"));
  book.partial(2, msg(9, "11"));
  book.partial(3, msg(7, "10")); // an old message stored again
  book.partial(4, msg(9, "11")); // the same id again later: a push of its own
  book.finish();
  assert.deepEqual(rows.map((r) => [r.recvTs, r.updateId]), [[1, 7], [2, 9], [4, 9]]);
  const damaged = notes.filter((n) => n.kind === "damaged");
  assert.equal(damaged.length, 1);
  assert.equal(damaged[0].failing, true);
  assert.match(damaged[0].detail, /id 7 after 9/);
});

/** Writes one stored object of BTCUSDT's stream `streamType` (key from its first line's time). */
async function writeObject(
  dataDir: string,
  options: { firstRecvTs: number; seq: number; streamType?: string; market?: "spot" | "usdm" },
  lines: readonly string[],
): Promise<void> {
  const key = planKey({
    prefix: "binance",
    market: options.market ?? "spot",
    streamType: options.streamType ?? "depth@100ms",
    symbol: "BTCUSDT",
    firstRecvTs: options.firstRecvTs,
    instanceId: "t",
    seq: options.seq,
  });
  const path = `${dataDir}/archive/${key}`;
  await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  await Deno.writeFile(path, await gzipLines(lines, 1));
}

/** `book` over DATA_DIR `dataDir`: exit code, stderr and the CSV rows (without the header). */
async function runBook(dataDir: string, args: readonly string[]) {
  let out = "";
  let err = "";
  const code = await bookFromArgs(parseConfig({ DATA_DIR: dataDir }), [...args], {
    write: (text) => out += text,
    printError: (text) => err += text,
  });
  return { code, err, rows: out.trimEnd().split("\n").slice(1) };
}

const spotDiff = (U: number, u: number, bid = "9") =>
  `{"e":"depthUpdate","U":${U},"u":${u},"b":[["${bid}","${u}"]],"a":[]}`;

Deno.test("--every with --to: every sample before --to whose book is known gets a row, decided by the first diff after it", async () => {
  const t0 = Date.UTC(2026, 0, 1) * 1000;
  const s = (seconds: number) => t0 + Math.round(seconds * 1_000_000);
  const stream = "btcusdt@depth@100ms";
  const snapshotLine = dataLine(
    s(0.1),
    "btcusdt@depthSnapshot",
    '{"lastUpdateId":10,"bids":[["9","1"]],"asks":[["11","1"]]}',
  );
  const range = ["--symbol", "BTCUSDT", "--every", "1s", "--levels", "1"];
  const to = (seconds: number) => ["--to", isoMicros(s(seconds))];
  // Diffs at 0.2, 1.2 and 2.2 s; the range ends at 3.5 s.
  const inRange = [
    snapshotLine,
    dataLine(s(0.2), stream, spotDiff(11, 11)),
    dataLine(s(1.2), stream, spotDiff(12, 12)),
    dataLine(s(2.2), stream, spotDiff(13, 13)),
  ];
  // The last cell: known_levels (all levels within the snapshot's range).
  const expected = [`${s(1)},11,9,11,11,1,1`, `${s(2)},12,9,12,11,1,1`, `${s(3)},13,9,13,11,1,1`];

  /** `book` up to `toSeconds` over these objects (first line's second, lines), each its own key. */
  const bookOver = async (objects: Array<[number, string[]]>, toSeconds: number) => {
    await using dir = await tempDir();
    for (const [seq, [first, lines]] of objects.entries()) {
      await writeObject(dir.path, { firstRecvTs: s(first), seq }, lines);
    }
    return await runBook(dir.path, [...range, ...to(toSeconds)]);
  };

  // The next diff, after --to, in the same object: the 3 s sample is known.
  const sameObject = [...inRange, dataLine(s(3.7), stream, spotDiff(14, 14))];
  const same = await bookOver([[0.1, sameObject]], 3.5);
  assert.equal(same.code, 0, same.err);
  assert.deepEqual(same.rows, expected);
  // --to exclusive: a sample at --to itself is not in the range.
  const atTo = await bookOver([[0.1, sameObject]], 3);
  assert.deepEqual(atTo.rows, expected.slice(0, 2));

  // The next diff is in the next object, which begins after --to (damage there is outside the
  // range).
  const nextObject = await bookOver([
    [0.1, inRange],
    [3.7, ["not json", dataLine(s(3.7), stream, spotDiff(14, 14))]],
  ], 3.5);
  assert.equal(nextObject.code, 0, nextObject.err);
  assert.deepEqual(nextObject.rows, expected);

  // The next diff after --to breaks the chain: the book at 3 s is unknown. The break is
  // outside the range: it does not fail it.
  const brokenAfter = await bookOver(
    [[0.1, [...inRange, dataLine(s(3.7), stream, spotDiff(20, 20))]]],
    3.5,
  );
  assert.equal(brokenAfter.code, 0, brokenAfter.err);
  assert.deepEqual(brokenAfter.rows, expected.slice(0, 2));

  // Nothing after the last line: the record ends there, and so do the rows.
  const recordEnds = await bookOver([[0.1, inRange]], 3.5);
  assert.equal(recordEnds.code, 0, recordEnds.err);
  assert.deepEqual(recordEnds.rows, expected.slice(0, 2));
});

Deno.test("--to on partial books: the first line after it decides the last samples, as inside the range", () => {
  const msg = (id: number) => snapshot(id, [["10", "1"]], [["99", "1"]]);
  const run = (...after: Parameters<BookRebuilder["afterRange"]>[1][]) => {
    const { book, rows } = rebuilder({ rule: "partial", everyUs: 1_000_000, levels: 1 });
    book.partial(500_000, msg(1));
    book.partial(1_500_000, msg(2));
    const decided = after.map((line) => book.afterRange(3_500_000, line));
    return { decided, rows: rows.map((r) => r.recvTs) };
  };
  // The next push: the book stood until then (2 and 3 s; not 4 s, past --to).
  assert.deepEqual(run({ kind: "partial", book: msg(3) }), {
    decided: [true],
    rows: [1_000_000, 2_000_000, 3_000_000],
  });
  // A message stored again decides nothing; the feed was cut: the book is unknown.
  assert.deepEqual(run({ kind: "partial", book: msg(1) }, { kind: "event", name: "stale" }), {
    decided: [false, true],
    rows: [1_000_000],
  });
});

Deno.test("book --channel the symbol's record does not hold, or none when it holds several: exit 2 naming what it holds", async () => {
  await using tmp = await tempDir();
  const t0 = Date.UTC(2026, 0, 1) * 1000;
  const partialBook = '{"lastUpdateId":10,"bids":[["9","1"]],"asks":[["11","1"]]}';
  await writeObject(tmp.path, { firstRecvTs: t0, seq: 0, streamType: "depth20@100ms" }, [
    dataLine(t0, "btcusdt@depth20@100ms", partialBook),
  ]);
  await writeObject(tmp.path, { firstRecvTs: t0, seq: 1, streamType: "trade" }, [
    dataLine(t0, "btcusdt@trade", '{"e":"trade","t":1,"p":"9","q":"1"}'),
  ]);
  const missing = await runBook(tmp.path, ["--symbol", "BTCUSDT", "--channel", "depth@100ms"]);
  assert.equal(missing.code, 2, missing.err);
  assert.match(
    missing.err,
    /--channel depth@100ms: BTCUSDT has no such stream in the range; it has spot\/depth20@100ms\n/,
  );
  assert.equal(missing.rows.length, 0);
  // The one depth stream is read; a trade stream is no book.
  const only = await runBook(tmp.path, ["--symbol", "BTCUSDT", "--every", "update"]);
  assert.equal(only.code, 0, only.err);
  assert.match(only.err, /BTCUSDT spot\/depth20@100ms/);
  await writeObject(tmp.path, { firstRecvTs: t0, seq: 2, streamType: "depth5@100ms" }, [
    dataLine(t0, "btcusdt@depth5@100ms", partialBook),
  ]);
  const several = await runBook(tmp.path, ["--symbol", "BTCUSDT"]);
  assert.equal(several.code, 2, several.err);
  assert.match(
    several.err,
    /BTCUSDT has spot\/depth20@100ms, spot\/depth5@100ms in the range: choose one with --channel/,
  );

  // Both markets: the same type on spot and USD-M is chosen by `market/type`, never silently.
  const DIFF_101 = '{"e":"depthUpdate","U":101,"u":101,"pu":100,"b":[],"a":[]}';
  await using markets = await tempDir();
  for (const market of ["spot", "usdm"] as const) {
    for (const [seq, streamType] of [[0, "depth@100ms"], [1, "depth20@100ms"]] as const) {
      const stream = `btcusdt@${streamType}`;
      await writeObject(markets.path, { firstRecvTs: t0, seq, streamType, market }, [
        dataLine(t0, stream, streamType === "depth@100ms" ? DIFF_101 : partialBook),
      ]);
    }
  }
  const ambiguous = await runBook(markets.path, ["--symbol", "BTCUSDT"]);
  assert.equal(ambiguous.code, 2, ambiguous.err);
  assert.match(
    ambiguous.err,
    /BTCUSDT has spot\/depth@100ms, usdm\/depth@100ms in the range: choose one with --channel/,
  );
  const typeOnly = await runBook(markets.path, [
    "--symbol",
    "BTCUSDT",
    "--channel",
    "depth20@100ms",
  ]);
  assert.equal(typeOnly.code, 2, typeOnly.err);
  assert.match(typeOnly.err, /choose one with --channel spot\/depth20@100ms/);
  const usdm = await runBook(markets.path, [
    "--symbol",
    "BTCUSDT",
    "--channel",
    "usdm/depth20@100ms",
    "--every",
    "update",
  ]);
  assert.equal(usdm.code, 0, usdm.err);
  assert.match(usdm.err, /BTCUSDT usdm\/depth20@100ms/);
  assert.equal(usdm.rows.length, 1);

  // No depth stream of the symbol at all: no book can be built (exit 1), as for an absent symbol.
  await using trades = await tempDir();
  await writeObject(trades.path, { firstRecvTs: t0, seq: 0, streamType: "trade" }, [
    dataLine(t0, "btcusdt@trade", '{"e":"trade","t":1,"p":"9","q":"1"}'),
  ]);
  for (const args of [[], ["--channel", "depth@100ms"]]) {
    const none = await runBook(trades.path, ["--symbol", "BTCUSDT", ...args]);
    assert.equal(none.code, 1, none.err);
    assert.match(none.err, /no depth stream of BTCUSDT in the range .*\(it has spot\/trade\)/);
  }
});

Deno.test("a diff stored again (u not past the book) is skipped and noted as damage, a run of them once; spot and USD-M", () => {
  // Spot: the repeat is ignored (BINANCE.md: ids must go on), the next diff continues the chain.
  const spot = rebuilder({ everyUs: 1_000_000 });
  spot.book.snapshot(500_000, BASE);
  spot.book.diff(600_000, diff(101, 102, [["10.00", "4"]]));
  spot.book.diff(1_500_000, diff(103, 104, [["10.00", "5"]]));
  spot.book.diff(2_500_000, diff(101, 102, [["10.00", "4"]])); // stored again
  spot.book.diff(3_500_000, diff(105, 105));
  const spotSummary = spot.book.finish();
  // The repeat is not the book: rows go on from 104; it proves nothing of the time before it.
  assert.deepEqual(spot.rows.map((r) => [r.recvTs, r.updateId, r.bids[0][1]]), [
    [1_000_000, 102, "4"],
    [2_000_000, 104, "5"],
    [3_000_000, 104, "5"],
  ]);
  const spotDamage = spot.notes.filter((n) => n.kind === "damaged");
  assert.deepEqual(spotDamage.map((n) => [n.recvTs, n.failing]), [[2_500_000, true]]);
  assert.match(spotDamage[0].detail, /diff 101\.\.102 after 104: a message stored again, skipped/);
  assert.deepEqual([spotSummary.downs, spotSummary.failing], [0, 1]);

  // USD-M: a repeat's pu is behind the book, yet it is no break: the next diff's pu is the
  // book's u. An object stored twice: one note for the run.
  const usdm = rebuilder({ rule: "usdm-diff" });
  usdm.book.snapshot(1, BASE);
  usdm.book.diff(2, diff(99, 100, [], [], 98));
  usdm.book.diff(3, diff(101, 105, [], [], 100));
  usdm.book.diff(4, diff(106, 108, [], [], 105));
  usdm.book.diff(5, diff(101, 105, [], [], 100)); // the object again
  usdm.book.diff(6, diff(106, 108, [], [], 105));
  usdm.book.diff(7, diff(109, 110, [], [], 108));
  const usdmSummary = usdm.book.finish();
  assert.deepEqual(usdm.rows.map((r) => [r.recvTs, r.updateId]), [[2, 100], [3, 105], [4, 108], [
    7,
    110,
  ]]);
  const usdmDamage = usdm.notes.filter((n) => n.kind === "damaged");
  assert.equal(usdmDamage.length, 1);
  assert.match(
    usdmDamage[0].detail,
    /2 messages stored again, skipped: diff 101\.\.105 to diff 106\.\.108, after 108/,
  );
  assert.deepEqual([usdmSummary.downs, usdmSummary.failing], [0, 1]);

  // Before --from a repeat is noted, not failed; a repeat at the very end is noted too.
  const early = rebuilder({ from: 10 });
  early.book.snapshot(1, BASE);
  early.book.diff(2, diff(101, 102));
  early.book.diff(3, diff(101, 102));
  early.book.diff(11, diff(103, 104));
  early.book.diff(12, diff(103, 104));
  const earlySummary = early.book.finish();
  assert.deepEqual(
    early.notes.filter((n) => n.kind === "damaged").map((n) => [n.recvTs, n.failing]),
    [[3, false], [12, true]],
  );
  assert.equal(earlySummary.failing, 1);
});

Deno.test("known_levels: how many levels a side from the best lie within the price range a snapshot covered", () => {
  const { book, rows } = rebuilder({ levels: 3 });
  // The snapshot lists 10.00..8.00 and 11.00..13.00: beyond them the book is not known.
  book.snapshot(1, BASE);
  book.diff(2, diff(101, 101, [["9.50", "1"]])); // within: all 3 levels known
  book.diff(3, diff(102, 102, [["10.00", "0"], ["9.50", "0"]])); // bids 9.00, 8.00: a side short
  book.diff(4, diff(103, 103, [["7.00", "4"]])); // a level beyond 8.00 set by a diff
  book.diff(5, diff(104, 104, [["10.50", "1"]], [["11.00", "0"], ["14.00", "2"]]));
  // A later snapshot reaching lower: the book knows down to 6.00 and up to 14.00 from here.
  book.snapshot(
    6,
    snapshot(104, [["10.50", "1"], ["9.00", "2"], ["8.00", "3"], ["7.00", "4"], [
      "6.00",
      "5",
    ]], [["12.00", "2"], ["13.00", "3"], ["14.00", "2"]]),
  );
  book.diff(7, diff(105, 105));
  book.finish();
  assert.deepEqual(rows.map((r) => [r.updateId, r.knownLevels]), [
    [101, 3],
    [102, 2], // 9.00, 8.00 and an empty cell: levels below 8.00 were never listed
    [103, 2], // 7.00 is known, but not whether a level lay between it and 8.00
    [104, 2], // asks 12.00, 13.00 known; 14.00 beyond 13.00
    [105, 3],
  ]);
  assert.equal(
    csvHeader(1),
    "recv_ts,update_id,bid_px_1,bid_qty_1,ask_px_1,ask_qty_1,known_levels\n",
  );
  assert.equal(csvRow(rows[1], 3), "3,102,9.00,2,8.00,3,,,11.00,1,12.00,2,13.00,3,2\n");
  assert.deepEqual(Object.keys(JSON.parse(ndjsonRow(rows[1]))), [
    "recv_ts",
    "update_id",
    "bids",
    "asks",
    "known_levels",
  ]);

  // Partial books: the message's own levels (depth20 with --levels 30: 20 known); a side the
  // snapshot or message lists empty is the whole side.
  const partial = rebuilder({ rule: "partial", levels: 3 });
  partial.book.partial(1, snapshot(7, [["10", "1"], ["9", "1"]], [["11", "1"], ["12", "1"]]));
  partial.book.partial(2, snapshot(8, [["10", "1"], ["9", "1"], ["8", "1"]], []));
  partial.book.finish();
  assert.deepEqual(partial.rows.map((r) => r.knownLevels), [2, 3]);
});
