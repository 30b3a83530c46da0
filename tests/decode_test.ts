/**
 * Reading archive lines and keys back (src/archive/): literal lines in the
 * format docs/DESIGN.md "The archive" gives, and the writers' own output
 * read back to what was written.
 */

import assert from "node:assert/strict";
import { decodeLine, droppedFactsOf, lineFactsOf } from "../src/archive/decode.ts";
import { dataLine, droppedLine, eventLine } from "../src/archive/encode.ts";
import {
  keyRoot,
  parseKey,
  PARTITION_NAMES,
  partitionValue,
  streamOfKey,
} from "../src/archive/keys.ts";

const DIFF = '{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":10,"u":12,"b":[],"a":[]}';
const USDM_DIFF = '{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":10,"u":12,"pu":9,"b":[],"a":[]}';

Deno.test("decodeLine: a message with its update ids, a snapshot, an event", () => {
  assert.deepEqual(decodeLine(`{"recv_ts":5,"stream":"btcusdt@depth","data":${DIFF}}`), {
    kind: "message",
    recvTs: 5,
    stream: "btcusdt@depth",
    data: JSON.parse(DIFF),
    ids: { firstUpdateId: 10, lastUpdateId: 12 },
    fields: { recv_ts: 5, stream: "btcusdt@depth", data: JSON.parse(DIFF) },
  });
  const usdm = decodeLine(dataLine(6, "btcusdt@depth@100ms", USDM_DIFF));
  assert.equal(usdm.kind, "message");
  assert.deepEqual("ids" in usdm && usdm.ids, {
    firstUpdateId: 10,
    lastUpdateId: 12,
    prevUpdateId: 9,
  });

  const snapshot = decodeLine(
    '{"recv_ts":7,"stream":"btcusdt@depthSnapshot","data":{"lastUpdateId":11,"bids":[],"asks":[]}}',
  );
  assert.equal(snapshot.kind, "snapshot");
  assert.deepEqual("ids" in snapshot && snapshot.ids, { firstUpdateId: 11, lastUpdateId: 11 });

  const event = decodeLine(eventLine(8, "btcusdt@depth", "gap", { expected: 13, received: 20 }));
  assert.deepEqual(event, {
    kind: "event",
    recvTs: 8,
    stream: "btcusdt@depth",
    event: "gap",
    fields: { recv_ts: 8, stream: "btcusdt@depth", event: "gap", expected: 13, received: 20 },
  });
});

Deno.test("decodeLine: a line that is not an archive line says why, with its time when it has one", () => {
  assert.equal(decodeLine("{").kind, "malformed");
  assert.equal((decodeLine("{") as { fault: string }).fault, "not-json");
  assert.deepEqual(decodeLine("null"), {
    kind: "malformed",
    fault: "not-object",
    reason: "not a JSON object",
  });
  assert.deepEqual(decodeLine('{"recv_ts":"5","stream":"s","data":{}}'), {
    kind: "malformed",
    fault: "no-head",
    reason: "no integer recv_ts or no string stream",
  });
  assert.deepEqual(decodeLine('{"recv_ts":5,"data":{}}'), {
    kind: "malformed",
    fault: "no-head",
    reason: "no integer recv_ts or no string stream",
    recvTs: 5,
  });
  assert.deepEqual(decodeLine('{"recv_ts":5,"stream":"s","data":null}'), {
    kind: "malformed",
    fault: "no-body",
    reason: "neither an event nor a data object",
    recvTs: 5,
  });
});

Deno.test("lineFactsOf: what a batch counts; snapshots carry no update ids; a bad line throws", () => {
  assert.deepEqual(lineFactsOf(dataLine(5, "btcusdt@depth", DIFF)), {
    recvTs: 5,
    isData: true,
    isSnapshot: false,
    firstUpdateId: 10,
    lastUpdateId: 12,
  });
  assert.deepEqual(
    lineFactsOf(dataLine(6, "btcusdt@depthSnapshot", '{"lastUpdateId":11,"bids":[],"asks":[]}')),
    { recvTs: 6, isData: true, isSnapshot: true },
  );
  assert.deepEqual(lineFactsOf(eventLine(7, "btcusdt@depth", "connected")), {
    recvTs: 7,
    isData: false,
    isSnapshot: false,
  });
  assert.throws(() => lineFactsOf('{"stream":"s","data":{}}'), /not an archive line/);
});

Deno.test("droppedFactsOf reads back what droppedLine wrote", () => {
  const facts = { reason: "spool full", messages: 3, firstRecvTs: 100, lastRecvTs: 200 };
  const line = decodeLine(droppedLine(300, "btcusdt@depth", facts));
  assert.equal(line.kind, "event");
  assert.deepEqual(line.kind === "event" && droppedFactsOf(line), facts);
  const other = decodeLine(eventLine(300, "btcusdt@depth", "gap", { first_recv_ts: 1 }));
  assert.equal(other.kind === "event" && droppedFactsOf(other), undefined);
});

Deno.test("key root, partition names and the stream a key holds", () => {
  assert.equal(keyRoot(""), "exchange=binance/");
  assert.equal(keyRoot("binance/"), "binance/exchange=binance/");
  assert.deepEqual(PARTITION_NAMES, ["channel", "stream"]);
  assert.deepEqual(partitionValue("stream=depth@100ms", PARTITION_NAMES), {
    name: "stream",
    rank: 1,
    value: "depth@100ms",
  });
  assert.equal(partitionValue("symbol=BTCUSDT", PARTITION_NAMES), undefined);
  const parts = parseKey(
    "binance/exchange=binance/market=spot/channel=depth@100ms/symbol=BTCUSDT/date=2026-11-02/" +
      "hour=10/1793613600000000_box_000000.ndjson.gz",
  );
  assert.ok(parts);
  assert.equal(streamOfKey(parts), "btcusdt@depth@100ms");
});

Deno.test("a line with a lone UTF-16 surrogate escape is malformed: DuckDB cannot read it", () => {
  const line = '{"recv_ts":1,"stream":"btcusdt@depth","data":{"s":"\\ud800"}}';
  assert.equal(JSON.parse(line).data.s.length, 1, "JSON.parse takes it");
  const decoded = decodeLine(line);
  assert.equal(decoded.kind, "malformed");
  assert.match(decoded.kind === "malformed" ? decoded.reason : "", /lone UTF-16 surrogate/);
  assert.equal(
    decodeLine('{"recv_ts":1,"stream":"a@depth","data":{"s":"\\ud83d\\ude00"}}').kind,
    "message",
  );
});

Deno.test("an event line never escapes a lone surrogate: it becomes U+FFFD", () => {
  // V8 names one UTF-16 unit of an emoji in its JSON error; a foreign stream name may hold one too.
  const text = eventLine(1, "btcusdt@depth", "malformed", {
    reason: "not JSON: Unexpected token '\ud83d'",
    raw: '{"s":😀}',
  });
  assert.ok(!/\\ud[89a-f]/i.test(text), text);
  assert.equal(JSON.parse(text).reason, "not JSON: Unexpected token '\ufffd'");
  assert.equal(JSON.parse(text).raw, '{"s":😀}');
  assert.equal(decodeLine(text).kind, "event");
});
