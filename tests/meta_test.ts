import assert from "node:assert/strict";
import { Batcher, type BatchLine } from "../src/batch/batcher.ts";
import { decodeLine, lineFactsOf } from "../src/archive/decode.ts";
import { dataLine, eventLine } from "../src/archive/encode.ts";
import { Journal, recoverJournal } from "../src/store/journal.ts";
import {
  lineKindOf,
  META_FIELDS,
  metaDifferences,
  metaFromRecord,
  MetaTally,
  metaToRecord,
  type ObjectMeta,
  snapshotStreamOf,
} from "../src/archive/meta.ts";
import { tempDir } from "./support/temp.ts";

const STREAM = "btcusdt@depth@100ms";

const lines: BatchLine[] = [
  { text: eventLine(100, STREAM, "connected", { conn: 1 }), recvTs: 100, isData: false },
  {
    text: dataLine(110, snapshotStreamOf("BTCUSDT"), '{"lastUpdateId":5,"bids":[],"asks":[]}'),
    recvTs: 110,
    isData: true,
    isSnapshot: true,
  },
  {
    text: dataLine(120, STREAM, '{"e":"depthUpdate","U":6,"u":9,"b":[],"a":[]}'),
    recvTs: 120,
    isData: true,
    firstUpdateId: 6,
    lastUpdateId: 9,
  },
  {
    text: dataLine(130, STREAM, '{"e":"depthUpdate","U":10,"u":12,"b":[],"a":[]}'),
    recvTs: 130,
    isData: true,
    firstUpdateId: 10,
    lastUpdateId: 12,
  },
];

const expected: ObjectMeta = {
  messages: 2,
  snapshots: 1,
  events: 1,
  firstRecvTs: 100,
  lastRecvTs: 130,
  firstUpdateId: 6,
  lastUpdateId: 12,
};

Deno.test("a line is a message, a snapshot or an event, by its stream and event fields", () => {
  assert.equal(lineKindOf(STREAM, false), "message");
  assert.equal(lineKindOf("btcusdt@depthSnapshot", false), "snapshot");
  assert.equal(lineKindOf("btcusdt@depthSnapshot", true), "event");
  assert.equal(lineKindOf(undefined, false), "message");
  assert.equal(snapshotStreamOf("ETHUSDT"), "ethusdt@depthSnapshot");
});

Deno.test("objects count messages and snapshots apart, live and after a crash alike", async () => {
  await using tmp = await tempDir();
  const journal = await Journal.start(tmp.path, { flushMs: 10 });
  try {
    const batcher = new Batcher({
      batchMs: 60_000,
      maxLines: 100,
      planKey: (stream, first, seq) => `p/${stream}/${first}_${seq}.ndjson.gz`,
      observer: journal,
    });
    for (const line of lines) batcher.add(STREAM, line, 0);
    const [sealed] = batcher.sealAll();
    await sealed.durable;
    assert.deepEqual(sealed.meta, expected);
    // The journal's recovery reads lines as the collector does (archive/decode.ts).
    const { batches } = await recoverJournal(tmp.path, { describe: lineFactsOf });
    assert.deepEqual(batches[0].meta, expected);
  } finally {
    await journal.close();
  }
});

Deno.test("metadata is stored under the names README defines, and nothing else", async () => {
  assert.deepEqual(metaToRecord(expected), {
    "messages": "2",
    "snapshots": "1",
    "events": "1",
    "first-recv-ts": "100",
    "last-recv-ts": "130",
    "first-update-id": "6",
    "last-update-id": "12",
  });
  // A batch spooled before snapshots were counted apart has no `snapshots`.
  const { snapshots: _, ...old } = expected;
  assert.equal("snapshots" in metaToRecord(old), false);
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const table = readme.slice(
    readme.indexOf("| name "),
    readme.indexOf("Snapshots carry no update ids"),
  );
  const names = [...table.matchAll(/^\| `([a-z-]+)` /gm)].map((m) => m[1]);
  assert.deepEqual(names, META_FIELDS.map((f) => f.name));
});

Deno.test("verify counts an object's lines as the batcher does and reads stored metadata back", () => {
  const tally = new MetaTally();
  for (const { text } of lines) {
    const line = decodeLine(text);
    assert.notEqual(line.kind, "malformed");
    if (line.kind === "malformed") continue;
    tally.add(line.kind, line.recvTs, line.kind === "message" ? line.ids : undefined);
  }
  assert.deepEqual(tally.meta(), expected);
  assert.equal(new MetaTally().meta(), undefined);

  assert.deepEqual(metaFromRecord(metaToRecord(expected)), { kind: "meta", meta: expected });
  // None at all: no sidecar, an object put without user metadata, or only another tool's.
  assert.deepEqual(metaFromRecord(undefined), { kind: "none" });
  assert.deepEqual(metaFromRecord({ "content-owner": "me" }), { kind: "none" });
  assert.deepEqual(metaFromRecord({ messages: "2", events: "x" }), {
    kind: "unreadable",
    reason: 'events is not a whole number: "x"; no first-recv-ts; no last-recv-ts',
  });

  assert.deepEqual(metaDifferences(expected, expected), []);
  assert.deepEqual(metaDifferences({ ...expected, lastUpdateId: 11 }, expected), [
    "last-update-id 11 (the lines: 12)",
  ]);
  // Written before snapshots were counted apart (README): `messages` counts them too.
  const { snapshots: _, ...old } = expected;
  assert.deepEqual(metaDifferences({ ...old, messages: 3 }, expected), []);
  assert.deepEqual(metaDifferences({ ...old, messages: 2 }, expected), [
    "messages 2 (the lines: 3)",
  ]);
  assert.deepEqual(metaDifferences(expected, undefined), ["the object has no line"]);
});
