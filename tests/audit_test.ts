/**
 * The auditor (src/verify/audit.ts) fed lines straight, with no file, gzip
 * or S3: each case is a few literal lines (the line format of docs/DESIGN.md
 * "The archive", spot diffs as BINANCE.md shows them) under a literal key,
 * and asserts the exact finding.
 */

import assert from "node:assert/strict";
import {
  type AuditOptions,
  Auditor,
  longestSilence,
  type Problem,
  type Report,
} from "../src/verify/audit.ts";

const DIR = "binance/exchange=binance/market=spot/channel=depth@100ms/symbol=BTCUSDT/" +
  "date=2026-11-02/hour=10";
const KEY = `${DIR}/1793613600000000_box_000000.ndjson.gz`;
const STREAM = "btcusdt@depth@100ms";
/** 2026-11-02T10:00:00Z in microseconds. */
const T0 = 1_793_613_600_000_000;
const MS = 1000;

/** A spot diff line, update ids U..u, as Binance sends the payload. */
function diff(U: number, u: number, recvTs: number): string {
  const data = `{"e":"depthUpdate","E":${Math.floor(recvTs / MS)},"s":"BTCUSDT","U":${U},` +
    `"u":${u},"b":[["69000.01000000","0.50000000"]],"a":[]}`;
  return `{"recv_ts":${recvTs},"stream":"${STREAM}","data":${data}}`;
}

/** A REST depth snapshot stored with the diff stream. */
function snapshot(lastUpdateId: number, recvTs: number): string {
  return `{"recv_ts":${recvTs},"stream":"btcusdt@depthSnapshot",` +
    `"data":{"lastUpdateId":${lastUpdateId},"bids":[["69000.01000000","1.00000000"]],"asks":[]}}`;
}

/** Audits `objects` (key, lines) in order. */
function audit(objects: ReadonlyArray<[string, string[]]>, options: AuditOptions = {}): Report {
  const auditor = new Auditor(options);
  for (const [key, lines] of objects) {
    if (!auditor.beginObject(key)) continue;
    lines.forEach((text, i) => auditor.line(text, i + 1));
    auditor.endObject();
  }
  return auditor.report();
}

function onlyStream(report: Report) {
  assert.equal(report.streams.length, 1);
  return report.streams[0];
}

Deno.test("audit: a clean chain with an overlapping snapshot finds nothing", () => {
  const report = audit([[KEY, [
    snapshot(2, T0),
    diff(1, 3, T0),
    diff(4, 6, T0 + 100 * MS),
    diff(7, 9, T0 + 200 * MS),
  ]]]);
  assert.deepEqual(report.problems, []);
  assert.equal(report.ok, true);
  assert.equal(report.lines, 4);
  const s = onlyStream(report);
  assert.deepEqual(
    {
      stream: s.stream,
      market: s.market,
      streamType: s.streamType,
      symbol: s.symbol,
      objects: s.objects,
      messages: s.messages,
      snapshots: s.snapshots,
      breaks: s.breaks,
      holes: s.holes,
      duplicates: s.duplicates,
      firstUpdateId: s.firstUpdateId,
      lastUpdateId: s.lastUpdateId,
      firstRecvTs: s.firstRecvTs,
      lastRecvTs: s.lastRecvTs,
      instances: s.instances,
      notRebuildable: s.notRebuildable,
    },
    {
      stream: STREAM,
      market: "spot",
      streamType: "depth@100ms",
      symbol: "BTCUSDT",
      objects: 1,
      messages: 3,
      snapshots: 1,
      breaks: 0,
      holes: 0,
      duplicates: 0,
      firstUpdateId: 1,
      lastUpdateId: 9,
      firstRecvTs: T0,
      lastRecvTs: T0 + 200 * MS,
      instances: ["box"],
      notRebuildable: [],
    },
  );
});

Deno.test("audit: a gap in the update ids is an unexplained break", () => {
  const report = audit([[KEY, [diff(1, 3, T0), diff(7, 9, T0 + 100 * MS)]]]);
  assert.deepEqual(
    report.problems,
    [
      {
        kind: "break",
        market: "spot",
        stream: STREAM,
        key: KEY,
        line: 2,
        time: "2026-11-02T10:00:00.100000Z",
        recvTs: T0 + 100 * MS,
        detail: `U 7 skips ahead of 4; previous message 2026-11-02T10:00:00.000000Z (${KEY}:1)`,
        explained: false,
      },
    ] satisfies Problem[],
  );
  assert.equal(report.ok, false);
  assert.equal(onlyStream(report).unexplainedBreaks, 1);
});

Deno.test("audit: a dropped line explains the hole and the break before it", () => {
  const dropped = `{"recv_ts":${T0 + 3000 * MS + 1},"stream":"${STREAM}","event":"dropped",` +
    `"reason":"spool full","messages":6,"first_recv_ts":${T0 + 1000 * MS},` +
    `"last_recv_ts":${T0 + 2000 * MS}}`;
  const lines = [diff(1, 3, T0), diff(10, 12, T0 + 3000 * MS)];
  const note = "; explained by a dropped line: 6 messages lost (spool full)";
  const hole: Problem = {
    kind: "hole",
    market: "spot",
    stream: STREAM,
    key: KEY,
    line: 2,
    time: "2026-11-02T10:00:00.000000Z",
    recvTs: T0,
    untilRecvTs: T0 + 3000 * MS,
    cause: undefined,
    detail: "no line for 3 s (threshold 1 s), " +
      `2026-11-02T10:00:00.000000Z (${KEY}:1) to 2026-11-02T10:00:03.000000Z`,
    explained: false,
  };
  const brk: Problem = {
    kind: "break",
    market: "spot",
    stream: STREAM,
    key: KEY,
    line: 2,
    time: "2026-11-02T10:00:03.000000Z",
    recvTs: T0 + 3000 * MS,
    detail: `U 10 skips ahead of 4; previous message 2026-11-02T10:00:00.000000Z (${KEY}:1)`,
    explained: false,
  };

  // Without the dropped line both are failures; with it, both are explained.
  const without = audit([[KEY, lines]]);
  assert.deepEqual(without.problems, [hole, brk]);
  assert.equal(without.ok, false);

  const report = audit([[KEY, [...lines, dropped]]]);
  assert.deepEqual(report.problems, [
    { ...hole, detail: hole.detail + note, explained: true },
    { ...brk, detail: brk.detail + note, explained: true },
  ]);
  assert.equal(report.ok, true);
  const s = onlyStream(report);
  assert.deepEqual(
    [s.holes, s.unexplainedHoles, s.breaks, s.unexplainedBreaks, s.events],
    [1, 0, 1, 0, { dropped: 1 }],
  );
});

Deno.test("audit: a snapshot older than the chain leaves the book not rebuildable", () => {
  const chain = (snapshotId: number) => [
    diff(100, 110, T0),
    diff(111, 120, T0 + 100 * MS),
    snapshot(snapshotId, T0 + 150 * MS),
    diff(121, 130, T0 + 200 * MS),
  ];
  const stale = audit([[KEY, chain(50)]]);
  assert.deepEqual(stale.problems, []);
  assert.deepEqual(onlyStream(stale).notRebuildable, [
    {
      from: "2026-11-02T10:00:00.000000Z",
      to: "2026-11-02T10:00:00.200000Z",
      fromRecvTs: T0,
      toRecvTs: T0 + 200 * MS,
    },
  ]);
  assert.equal(onlyStream(stale).snapshots, 1);

  // The same place with a snapshot inside the chain: rebuildable from that snapshot on.
  const overlapping = audit([[KEY, chain(115)]]);
  assert.deepEqual(onlyStream(overlapping).notRebuildable, [
    {
      from: "2026-11-02T10:00:00.000000Z",
      to: "2026-11-02T10:00:00.150000Z",
      fromRecvTs: T0,
      toRecvTs: T0 + 150 * MS,
    },
  ]);
});

Deno.test("audit: the old stream= layout is read; a key outside the layout is a bad key", () => {
  const legacy = KEY.replace("/channel=", "/stream=");
  const outside = `${DIR}/notes.ndjson.gz`;
  const report = audit([
    [legacy, [diff(1, 3, T0), diff(4, 6, T0 + 100 * MS)]],
    [outside, [diff(7, 9, T0 + 200 * MS)]],
  ]);
  assert.deepEqual(
    report.problems,
    [
      {
        kind: "bad-key",
        key: outside,
        detail: "the key does not follow the archive layout (exchange=binance/market=…/channel=…/" +
          "symbol=…/date=…/hour=…/<µs>_<instance>_<seq>.ndjson.gz)",
        explained: false,
      },
    ] satisfies Problem[],
  );
  assert.equal(report.ok, false);
  const s = onlyStream(report);
  assert.deepEqual(
    [s.stream, s.market, s.streamType, s.symbol, s.objects, s.messages, s.lastUpdateId],
    [STREAM, "spot", "depth@100ms", "BTCUSDT", 1, 2, 6],
  );
});

Deno.test("audit: a message stored twice is one duplicate", () => {
  const report = audit([[KEY, [
    diff(1, 3, T0),
    diff(4, 6, T0 + 100 * MS),
    diff(4, 6, T0 + 200 * MS),
    diff(7, 9, T0 + 300 * MS),
  ]]]);
  assert.deepEqual(
    report.problems,
    [
      {
        kind: "duplicate",
        market: "spot",
        stream: STREAM,
        key: KEY,
        line: 3,
        time: "2026-11-02T10:00:00.200000Z",
        recvTs: T0 + 200 * MS,
        detail: "1 message(s) stored again (update ids 6, already at 6)",
        explained: false,
      },
    ] satisfies Problem[],
  );
  assert.equal(report.ok, false);
  const s = onlyStream(report);
  assert.deepEqual([s.duplicates, s.messages, s.breaks], [1, 4, 0]);
});

Deno.test("audit: damaged lines are malformed, each with its reason; the rest still counts", () => {
  const cut = diff(4, 6, T0 + 100 * MS).slice(0, 60);
  let notJson = "";
  try {
    JSON.parse(cut);
  } catch (error) {
    notJson = `not JSON: ${(error as Error).message}`;
  }
  assert.notEqual(notJson, "");
  const report = audit([[KEY, [
    diff(1, 3, T0),
    cut,
    "[1,2]",
    `{"recv_ts":${T0 + 150 * MS}.5,"stream":"${STREAM}","data":{}}`,
    `{"recv_ts":${T0 + 160 * MS},"stream":"${STREAM}","data":[1]}`,
    diff(4, 6, T0 + 200 * MS),
  ]]]);
  const malformed = (line: number, detail: string): Problem => ({
    kind: "malformed",
    market: "spot",
    stream: STREAM,
    key: KEY,
    line,
    detail,
    explained: false,
  });
  assert.deepEqual(report.problems, [
    malformed(2, notJson),
    malformed(3, "not a JSON object"),
    malformed(4, "no integer recv_ts or no string stream"),
    malformed(5, "neither an event nor a data object"),
  ]);
  assert.equal(report.ok, false);
  const s = onlyStream(report);
  assert.deepEqual([s.malformedLines, s.messages, s.breaks, s.lastUpdateId], [4, 2, 0, 6]);
});

const PARTIAL_KEY = KEY.replace("channel=depth@100ms", "channel=depth20@100ms");
const PARTIAL = "btcusdt@depth20@100ms";

/** A partial-book line (BINANCE.md "Partial book depth": lastUpdateId, bids, asks). */
function partial(lastUpdateId: number, recvTs: number): string {
  return `{"recv_ts":${recvTs},"stream":"${PARTIAL}","data":{"lastUpdateId":${lastUpdateId},` +
    `"bids":[["69000.01000000","0.50000000"]],"asks":[]}}`;
}

Deno.test("audit: a partial book's repeated id is a push of its own; the same line twice is a duplicate", () => {
  // Binance pushes the same lastUpdateId while the book does not change; the
  // recorder stores each push (README, "Partial books and diff streams").
  const repeats = audit([[PARTIAL_KEY, [
    partial(7, T0),
    partial(7, T0 + 100 * MS),
    partial(7, T0 + 200 * MS),
    partial(9, T0 + 300 * MS),
  ]]]);
  assert.deepEqual(repeats.problems, []);
  assert.equal(repeats.ok, true);
  assert.deepEqual([onlyStream(repeats).messages, onlyStream(repeats).duplicates], [4, 0]);

  // The same line twice (same id, same receive time), and an older id: stored again.
  const twice = audit([[PARTIAL_KEY, [
    partial(7, T0),
    partial(7, T0),
    partial(9, T0 + 100 * MS),
    partial(8, T0 + 200 * MS),
  ]]]);
  assert.deepEqual(twice.problems.map((p) => [p.kind, p.line]), [["duplicate", 2], [
    "duplicate",
    4,
  ]]);
  assert.equal(onlyStream(twice).duplicates, 2);
});

Deno.test("audit: the same stream name in both markets is two streams, each with its own chain", () => {
  // The key's time is its first line's (the collector's keys always are).
  const usdmKey = KEY.replace("market=spot", "market=usdm")
    .replace(`${T0}_box_`, `${T0 + 50 * MS}_other_`);
  // USD-M diffs chain by pu (BINANCE.md "Diff depth, USD-M"); ids far from spot's.
  const usdm = (U: number, u: number, pu: number, recvTs: number) =>
    `{"recv_ts":${recvTs},"stream":"${STREAM}","data":{"e":"depthUpdate","E":1,"T":1,` +
    `"s":"BTCUSDT","U":${U},"u":${u},"pu":${pu},"b":[],"a":[]}}`;
  const report = audit([
    [KEY, [diff(1, 3, T0), diff(4, 6, T0 + 100 * MS), diff(7, 9, T0 + 200 * MS)]],
    [usdmKey, [
      usdm(9_000_001, 9_000_005, 9_000_000, T0 + 50 * MS),
      usdm(9_000_006, 9_000_010, 9_000_005, T0 + 150 * MS),
    ]],
  ]);
  assert.deepEqual(report.problems, []);
  assert.equal(report.ok, true);
  assert.deepEqual(
    report.streams.map((s) => [s.market, s.stream, s.messages, s.lastUpdateId, s.instances]),
    [["spot", STREAM, 3, 9, ["box"]], ["usdm", STREAM, 2, 9_000_010, ["other"]]],
  );
});

Deno.test("audit: a dropped line explains only the silence it accounts for", () => {
  const dropped = (first: number, last: number, messages: number, at = 600_001) =>
    `{"recv_ts":${T0 + at * MS},"stream":"${STREAM}","event":"dropped",` +
    `"reason":"spool full","messages":${messages},"first_recv_ts":${T0 + first * MS},` +
    `"last_recv_ts":${T0 + last * MS}}`;
  // Ten minutes missing (0:00.1 to 10:00); the line accounts for the first minute only.
  const lines = [diff(1, 3, T0), diff(6001, 6003, T0 + 600_000 * MS)];
  const partly = audit([[KEY, [...lines, dropped(100, 60_000, 600)]]]);
  assert.deepEqual(
    partly.problems.map((p) => [p.kind, p.explained]),
    [["hole", false], ["break", true]],
  );
  assert.equal(partly.ok, false);

  // Two lines that together leave no silence over the threshold (1 s) explain it.
  const both = audit([[KEY, [
    ...lines,
    dropped(100, 300_000, 3000),
    dropped(300_100, 599_900, 2997),
  ]]]);
  assert.deepEqual(both.problems.map((p) => [p.kind, p.explained]), [["hole", true], [
    "break",
    true,
  ]]);
  assert.equal(both.ok, true);
  assert.deepEqual([onlyStream(both).unexplainedHoles, onlyStream(both).unexplainedBreaks], [0, 0]);

  // Messages lost before the break's first message do not explain it.
  const before = audit([[KEY, [
    diff(1, 3, T0),
    diff(4, 6, T0 + 100 * MS),
    diff(10, 12, T0 + 200 * MS),
    dropped(-500, 50, 5, 201),
  ]]]);
  assert.deepEqual(before.problems.map((p) => [p.kind, p.explained]), [["break", false]]);
});

Deno.test("longestSilence: the longest stretch left between the spans", () => {
  assert.equal(longestSilence(0, 100, []), 100);
  assert.equal(longestSilence(0, 100, [[10, 20]]), 80);
  assert.equal(longestSilence(0, 100, [[60, 90], [5, 50]]), 10);
  assert.equal(longestSilence(0, 100, [[0, 60], [40, 100]]), 0);
});

Deno.test("audit: silence at either end of the asked range is a hole, unless the recorder said why", () => {
  const lines = [diff(1, 3, T0), diff(4, 6, T0 + 100 * MS), diff(7, 9, T0 + 200 * MS)];
  const range = { from: T0 - 10_000 * MS, to: T0 + 10_000 * MS };
  const event = (name: string, recvTs: number) =>
    `{"recv_ts":${recvTs},"stream":"${STREAM}","event":"${name}","conn":1}`;
  const edges = (report: Report) =>
    report.problems.map((p) => [p.kind, p.recvTs! - T0, p.untilRecvTs! - T0, p.explained, p.cause]);

  // Objects at both ends gone: 10 s before the first line, 9.8 s after the last.
  const cut = audit([[KEY, lines]], range);
  assert.deepEqual(edges(cut), [
    ["hole", -10_000 * MS, 0, false, undefined],
    ["hole", 200 * MS, 10_000 * MS, false, undefined],
  ]);
  assert.equal(cut.ok, false);
  assert.deepEqual([onlyStream(cut).holes, onlyStream(cut).unexplainedHoles], [2, 2]);

  // The stream started (connected) and left the recorded set (stopped) inside the range.
  const said = audit([[KEY, [
    event("connected", T0),
    ...lines,
    `{"recv_ts":${T0 + 201 * MS},"stream":"${STREAM}","event":"stopped","reason":"delisted"}`,
  ]]], range);
  assert.deepEqual(edges(said), [
    ["hole", -10_000 * MS, 0, true, "connected"],
    ["hole", 201 * MS, 10_000 * MS, true, "stopped"],
  ]);
  assert.equal(said.ok, true);

  // Lines received after `settledUntil` may not be stored yet: no trailing hole up to there.
  const live = audit([[KEY, lines]], { ...range, from: T0, settledUntil: T0 + 1_000 * MS });
  assert.deepEqual(live.problems, []);
  // Without a range nothing is judged at the ends.
  assert.deepEqual(audit([[KEY, lines]]).problems, []);
});

Deno.test("audit: a partial book's object stored twice is found, even while the book stood still", () => {
  const key2 = PARTIAL_KEY.replace("_box_000000", "_box_000001");
  const still = [partial(7, T0), partial(7, T0 + 100 * MS), partial(7, T0 + 200 * MS)];
  const report = audit([[PARTIAL_KEY, still], [key2, still]]);
  assert.deepEqual([onlyStream(report).messages, onlyStream(report).duplicates], [6, 3]);
  assert.equal(report.ok, false);

  const growing = [partial(5, T0), partial(6, T0 + 100 * MS), partial(7, T0 + 200 * MS)];
  const twice = audit([[PARTIAL_KEY, growing], [key2, growing]]);
  assert.equal(onlyStream(twice).duplicates, 3);
});

Deno.test("audit: a trade stream has no book to rebuild; its break names the trade id t", () => {
  const dir =
    "binance/exchange=binance/market=spot/channel=trade/symbol=BTCUSDT/date=2026-11-02/hour=10";
  const key = `${dir}/1793613600000000_box_000000.ndjson.gz`;
  const trade = (t: number, recvTs: number) =>
    `{"recv_ts":${recvTs},"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT",` +
    `"t":${t},"p":"69000.01","q":"0.1","T":1,"m":true,"M":true}}`;
  const report = audit([[key, [trade(1050, T0), trade(1051, T0 + MS), trade(1060, T0 + 2 * MS)]]]);
  const stream = onlyStream(report);
  assert.equal(stream.notRebuildable, undefined, "no book, as for a partial book");
  assert.equal(report.problems.length, 1);
  assert.match(report.problems[0].detail, /^t 1060 skips ahead of 1052/);
});

/** The key of an object of the diff stream whose first line is at `ts`. */
const keyAt = (ts: number, seq = 0) =>
  KEY.replace("hour=10", `hour=${new Date(ts / MS).toISOString().slice(11, 13)}`)
    .replace(`${T0}_box_000000`, `${ts}_box_${String(seq).padStart(6, "0")}`);

Deno.test("audit: a silence at the range's end is explained by the line after it, or a loss counted after it", () => {
  const event = (name: string, recvTs: number) =>
    `{"recv_ts":${recvTs},"stream":"${STREAM}","event":"${name}","conn":1}`;
  const inside = [diff(1, 3, T0), diff(4, 6, T0 + 100 * MS)];
  const range = { from: T0, to: T0 + 5_000 * MS };
  const endHole = (report: Report) =>
    report.problems.filter((p) => p.kind === "hole").map((p) => [p.explained, p.cause]);

  // The Mac slept across `to`: the `suspended` line after it, in the next object, says so.
  const slept = audit([
    [KEY, inside],
    [keyAt(T0 + 9_000 * MS, 1), [event("suspended", T0 + 9_000 * MS), diff(7, 9, T0 + 9_100 * MS)]],
  ], range);
  assert.deepEqual(endHole(slept), [[true, "suspended"]]);
  assert.equal(slept.ok, true, JSON.stringify(slept.problems));
  assert.equal(slept.objects, 1, "the object after the range is not counted");
  assert.equal(onlyStream(slept).messages, 2);

  // Data after `to` with nothing said: the silence stays unexplained.
  const silent = audit(
    [[KEY, inside], [keyAt(T0 + 9_000 * MS, 1), [diff(7, 9, T0 + 9_000 * MS)]]],
    range,
  );
  assert.deepEqual(endHole(silent), [[false, undefined]]);

  // The lost messages are counted by a `dropped` line after `to`.
  const droppedAfter = `{"recv_ts":${T0 + 9_001 * MS},"stream":"${STREAM}","event":"dropped",` +
    `"reason":"queue full","messages":80,"first_recv_ts":${T0 + 200 * MS},` +
    `"last_recv_ts":${T0 + 8_900 * MS}}`;
  const lost = audit([
    [KEY, inside],
    [keyAt(T0 + 9_000 * MS, 1), [diff(800, 802, T0 + 9_000 * MS), droppedAfter]],
  ], range);
  assert.deepEqual(endHole(lost), [[true, "dropped"]]);
  assert.equal(lost.ok, true);

  // The object after the range is never judged: unreadable or malformed, it fails nothing.
  const auditor = new Auditor(range);
  auditor.beginObject(KEY);
  inside.forEach((line, i) => auditor.line(line, i + 1));
  auditor.endObject();
  auditor.beginObject(keyAt(T0 + 5_000 * MS, 1));
  auditor.line("not json", 1);
  auditor.unreadable(keyAt(T0 + 5_000 * MS, 1), new Error("corrupt deflate stream"));
  const next = auditor.report();
  assert.deepEqual(next.problems.map((p) => p.kind), ["hole"]);
});

Deno.test("audit: a silence at the range's start is explained by the line before it, or by a loss counted", () => {
  const range = { from: T0, to: T0 + 10_000 * MS };
  const start = (report: Report) =>
    report.problems.filter((p) => p.kind === "hole").map((p) => [p.explained, p.cause]);
  const late = [diff(50, 52, T0 + 9_000 * MS), diff(53, 55, T0 + 9_500 * MS)];
  // A `disconnected` line just before `from` (in the object that runs into the range).
  const before = `{"recv_ts":${T0 - 500 * MS},"stream":"${STREAM}","event":"disconnected",` +
    `"conn":1,"cause":"error"}`;
  const cut = audit([[keyAt(T0 - 500 * MS), [before]], [keyAt(T0 + 9_000 * MS, 1), late]], range);
  assert.deepEqual(start(cut), [[true, "disconnected"]]);
  // A `dropped` line in the range counting what was lost from the range's start.
  const dropped = `{"recv_ts":${T0 + 9_600 * MS},"stream":"${STREAM}","event":"dropped",` +
    `"reason":"queue full","messages":90,"first_recv_ts":${T0 - 300 * MS},` +
    `"last_recv_ts":${T0 + 8_900 * MS}}`;
  const lost = audit([[keyAt(T0 + 9_000 * MS, 1), [...late, dropped]]], range);
  assert.deepEqual(start(lost), [[true, "dropped"]]);
  assert.equal(lost.ok, true, JSON.stringify(lost.problems));
  // Without either, the silence fails the audit.
  assert.deepEqual(start(audit([[keyAt(T0 + 9_000 * MS, 1), late]], range)), [[false, undefined]]);
});

Deno.test("audit: another stream's object in this partition is named as misplaced, and the other stream's own objects are not blamed", () => {
  const ETH = "ethusdt@depth@100ms";
  const ethDir = DIR.replace("symbol=BTCUSDT", "symbol=ETHUSDT");
  const ethKey = (ts: number, seq: number) =>
    `${ethDir}/${ts}_box_${String(seq).padStart(6, "0")}.ndjson.gz`;
  const eth = (U: number, u: number, recvTs: number) => diff(U, u, recvTs).replace(STREAM, ETH);
  const ethLines = [eth(1, 3, T0 + 10 * MS), eth(4, 6, T0 + 110 * MS)];
  // A copy of an ETH object put under BTC's partition, at a BTC key time.
  const stray = keyAt(T0 + 10 * MS, 1);
  const report = audit([
    [KEY, [diff(1, 3, T0), diff(4, 6, T0 + 100 * MS)]],
    [stray, ethLines],
    [ethKey(T0 + 10 * MS, 0), ethLines],
  ]);
  assert.deepEqual(
    report.problems.map((p) => [p.kind, p.key, p.line]),
    [["misplaced", stray, 1]],
  );
  assert.match(report.problems[0].detail, /2 line\(s\) of stream ethusdt@depth@100ms/);
  assert.equal(report.ok, false);
  assert.deepEqual(report.streams.map((s) => [s.stream, s.messages, s.duplicates]), [
    [STREAM, 2, 0],
    [ETH, 2, 0],
  ]);

  // An object renamed to another time: its key no longer says when its first line came.
  const renamed = audit([[KEY, [diff(1, 3, T0)]], [keyAt(T0 + 900 * MS, 1), [
    diff(4, 6, T0 + 100 * MS),
  ]]]);
  assert.deepEqual(renamed.problems.map((p) => [p.kind, p.line]), [["misplaced", 1]]);
  assert.match(
    renamed.problems[0].detail,
    /key's time .*10:00:00\.900000Z is not the first line's/,
  );
});

Deno.test("audit: a line received before the line above it in its object is out of order", () => {
  const report = audit([[KEY, [
    diff(1, 3, T0),
    diff(4, 6, T0 + 200 * MS),
    diff(7, 9, T0 + 100 * MS),
    diff(10, 12, T0 + 300 * MS),
  ]]]);
  assert.deepEqual(report.problems.map((p) => [p.kind, p.line, p.recvTs]), [
    ["order", 3, T0 + 100 * MS],
  ]);
  assert.equal(report.ok, false);
  // Equal receive times are in order (a backward clock step holds the time).
  const held = audit([[KEY, [diff(1, 3, T0), diff(4, 6, T0), diff(7, 9, T0)]]]);
  assert.deepEqual(held.problems, []);
});

Deno.test("audit: a dropped line after --to explains a hole inside the range", () => {
  // Stored 0–0.1 s and 10.1–11 s; the batch between was lost, its count written a minute later.
  const dropped = `{"recv_ts":${T0 + 70_000 * MS},"stream":"${STREAM}","event":"dropped",` +
    `"reason":"upload failed","messages":99,"first_recv_ts":${T0 + 200 * MS},` +
    `"last_recv_ts":${T0 + 10_000 * MS}}`;
  const objects: Array<[string, string[]]> = [
    [KEY, [diff(1, 3, T0), diff(4, 6, T0 + 100 * MS)]],
    [keyAt(T0 + 10_100 * MS, 1), [
      diff(300, 302, T0 + 10_100 * MS),
      diff(303, 305, T0 + 11_000 * MS),
    ]],
    [keyAt(T0 + 70_000 * MS, 2), [dropped, diff(900, 902, T0 + 70_000 * MS)]],
  ];
  assert.equal(audit(objects).ok, true, "whole archive");
  const range = audit(objects, { from: T0, to: T0 + 11_500 * MS });
  assert.deepEqual(range.problems.map((p) => [p.kind, p.explained]), [["hole", true], [
    "break",
    true,
  ]]);
  assert.equal(range.ok, true, JSON.stringify(range.problems));
});

Deno.test("audit: a stream with lines around the range and none in it is one hole over the whole range", () => {
  const range = { from: T0 + 10_000 * MS, to: T0 + 20_000 * MS };
  const around: Array<[string, string[]]> = [
    [KEY, [diff(1, 3, T0), diff(4, 6, T0 + 100 * MS)]],
    [keyAt(T0 + 30_000 * MS, 1), [diff(700, 702, T0 + 30_000 * MS)]],
  ];
  const silent = audit(around, range);
  assert.equal(silent.ok, false);
  assert.deepEqual(
    silent.problems.map((p) => [p.kind, p.recvTs! - T0, p.untilRecvTs! - T0, p.explained]),
    [
      ["hole", 10_000 * MS, 20_000 * MS, false],
    ],
  );
  assert.deepEqual(silent.streams.map((s) => [s.stream, s.messages, s.coveragePercent]), [[
    STREAM,
    0,
    0,
  ]]);
  // The symbol left the recorded set before the range: nothing is missing.
  const stopped = `{"recv_ts":${
    T0 + 200 * MS
  },"stream":"${STREAM}","event":"stopped","reason":"delisted"}`;
  const left = audit([[KEY, [diff(1, 3, T0), stopped]]], range);
  assert.equal(left.ok, true, JSON.stringify(left.problems));
  assert.deepEqual(left.problems.map((p) => [p.kind, p.cause]), [["hole", "stopped"]]);
});

/** Diffs every 100 ms from `fromMs` to `toMs` (ms after T0), ids continuing from `firstId`. */
function diffsEvery100ms(fromMs: number, toMs: number, firstId: number): string[] {
  const lines: string[] = [];
  for (let ms = fromMs, id = firstId; ms < toMs; ms += 100, id += 3) {
    lines.push(diff(id, id + 2, T0 + ms * MS));
  }
  return lines;
}

Deno.test("audit: coverage leaves out every hole, explained ones too: they are time with no record", () => {
  const event = (name: string, recvTs: number) =>
    `{"recv_ts":${recvTs},"stream":"${STREAM}","event":"${name}","conn":1}`;
  // 10 s recorded, 80 s down (the recorder said so), 10 s recorded: 20 % of the 100 s.
  const down = audit([[KEY, [
    ...diffsEvery100ms(0, 10_000, 1),
    event("disconnected", T0 + 10_000 * MS),
    event("connected", T0 + 90_000 * MS),
    ...diffsEvery100ms(90_000, 100_000, 1_000),
  ]]], { from: T0, to: T0 + 100_000 * MS });
  assert.equal(down.ok, true, "an explained hole does not fail the audit");
  const s = onlyStream(down);
  assert.deepEqual([s.holes, s.unexplainedHoles], [1, 0]);
  assert.ok(Math.abs(s.coveragePercent - 20) < 0.5, `coverage ${s.coveragePercent}`);

  // Without a range the same: the span of the lines read, less the hole.
  const unranged = onlyStream(audit([[KEY, [
    ...diffsEvery100ms(0, 10_000, 1),
    event("disconnected", T0 + 10_000 * MS),
    event("connected", T0 + 90_000 * MS),
    ...diffsEvery100ms(90_000, 100_000, 1_000),
  ]]]));
  assert.ok(Math.abs(unranged.coveragePercent - 20) < 0.5, `coverage ${unranged.coveragePercent}`);

  // A silence at the range's start is counted once: lines from 10 s to 19.9 s of 20 s.
  const late = onlyStream(
    audit([[KEY, diffsEvery100ms(10_000, 20_000, 1)]], { from: T0, to: T0 + 20_000 * MS }),
  );
  assert.equal(late.unexplainedHoles, 1);
  assert.equal(late.coveragePercent, 49.5);
});

Deno.test("audit: lines read back before --from carry a diff stream's chain and snapshots into the range, judged nowhere", () => {
  const range = { from: T0 + 60_000 * MS, to: T0 + 120_000 * MS };
  const run = (lookbackLines: string[]) => {
    const auditor = new Auditor(range);
    const objects: Array<[string, string[]]> = [
      [KEY, lookbackLines],
      [keyAt(T0 + 50_000 * MS, 1), [
        diff(11, 12, T0 + 50_000 * MS),
        diff(13, 14, T0 + 59_900 * MS),
      ]],
      [keyAt(T0 + 60_000 * MS, 2), [
        ...diffsEvery100ms(60_000, 70_000, 15),
        snapshot(400, T0 + 70_000 * MS),
        ...diffsEvery100ms(70_000, 120_000, 315),
      ]],
    ];
    auditor.lookback(KEY);
    for (const [key, lines] of objects) {
      auditor.beginObject(key);
      lines.forEach((text, i) => auditor.line(text, i + 1));
      auditor.endObject();
    }
    return auditor.report();
  };
  // A snapshot before the range, the chain unbroken since: rebuildable from the range's start.
  const whole = run([diff(1, 3, T0), snapshot(5, T0 + 100 * MS), diff(4, 10, T0 + 200 * MS)]);
  assert.equal(whole.ok, true, JSON.stringify(whole.problems));
  assert.deepEqual(onlyStream(whole).notRebuildable, []);
  assert.equal(onlyStream(whole).objects, 1, "only the object with lines in the range counts");
  // A break after that snapshot, still before the range: not reported, but the book waits for
  // the range's own snapshot (at 70 s), as book's would.
  const broken = run([diff(1, 3, T0), snapshot(5, T0 + 100 * MS), diff(8, 10, T0 + 200 * MS), "{"]);
  assert.equal(broken.ok, true, JSON.stringify(broken.problems));
  assert.deepEqual(broken.problems, []);
  assert.deepEqual(
    onlyStream(broken).notRebuildable?.map((r) => [r.fromRecvTs - T0, r.toRecvTs - T0]),
    [[60_000 * MS, 70_000 * MS]],
  );
});

Deno.test("audit: a break across --from is the range's: judged against the last message before it", () => {
  const event = (name: string, recvTs: number) =>
    `{"recv_ts":${recvTs},"stream":"${STREAM}","event":"${name}","conn":1}`;
  const diffsFrom = (fromMs: number, toMs: number, id: number) => {
    const out: string[] = [];
    for (let t = fromMs; t < toMs; t += 100) out.push(diff(id, id++, T0 + t * MS));
    return out;
  };
  // Ids 1..600 until 60 s, then a jump of 1,000 at 60 s, where a daily audit's range starts.
  const before = [snapshot(0, T0), ...diffsFrom(0, 60_000, 1)];
  const after = diffsFrom(60_000, 120_000, 1_601);
  const range = { from: T0 + 60_000 * MS, to: T0 + 120_000 * MS };
  const earlier = audit([[keyAt(T0), before], [keyAt(T0 + 60_000 * MS, 1), after]], {
    from: T0,
    to: range.from,
  });
  assert.equal(earlier.ok, true, "the earlier range never judges lines after its end");
  const later = audit([[keyAt(T0), before], [keyAt(T0 + 60_000 * MS, 1), after]], range);
  assert.equal(later.ok, false);
  assert.equal(onlyStream(later).unexplainedBreaks, 1);
  assert.match(later.problems[0].detail, /^U 1601 skips ahead of 601/);
  // A `gap` line after the last message before the range explains it.
  const explained = audit([
    [keyAt(T0), [...before, event("gap", T0 + 59_950 * MS)]],
    [keyAt(T0 + 60_000 * MS, 1), after],
  ], range);
  assert.equal(explained.ok, true, JSON.stringify(explained.problems));
  assert.equal(onlyStream(explained).breaks, 1);
  // Inside one object that straddles --from, the same.
  const straddling = audit([[keyAt(T0), [...before, ...after]]], range);
  assert.equal(onlyStream(straddling).unexplainedBreaks, 1);
  // A malformed line before --from does not stop the chain before it being followed:
  // the book stands at the range's start on the snapshot before it.
  const malformed = audit(
    [[keyAt(T0), ["{", ...before, ...diffsFrom(60_000, 61_000, 601)]]],
    range,
  );
  assert.equal(onlyStream(malformed).unexplainedBreaks, 0);
  assert.deepEqual(onlyStream(malformed).notRebuildable, []);
});
