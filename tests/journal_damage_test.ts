/**
 * A damaged crash journal of lines (the format before the journal of
 * compressed pieces; still read after an upgrade): every record carries a
 * CRC-32, so damage is skipped record by record and marked, never recovered
 * as a changed line. Damage to the journal of pieces: tests/journal_test.ts.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { concatBytes } from "../src/archive/bytes.ts";
import { dataLine } from "../src/archive/encode.ts";
import { parseKey, planKey } from "../src/archive/keys.ts";
import { recoverJournal } from "../src/store/journal.ts";
import {
  CHECKED_SEGMENT_SUFFIX,
  CRC_PREFIX_BYTES,
  stampCrc,
} from "../src/store/journal_records.ts";
import { tempDir } from "./support/temp.ts";

function describe(line: string) {
  const value = JSON.parse(line) as { recv_ts?: unknown; data?: unknown };
  if (typeof value.recv_ts !== "number") throw new Error("archive line without recv_ts");
  return { recvTs: value.recv_ts, isData: value.data !== undefined };
}

const STREAMS = ["aaausdt@depth@100ms", "bbbusdt@depth@100ms", "cccusdt@depth@100ms"];
const line = (stream: string, i: number) =>
  dataLine(1_000_000 + i, stream, `{"e":"depthUpdate","U":${i},"u":${i},"b":[["1.5","2"]]}`);

/**
 * Three open batches of ten lines each, in a segment of the journal of
 * lines that versions before the journal of compressed pieces wrote (each
 * record after its CRC-32, as journal_records.ts frames it): a crash of
 * such a version must still be recovered after an upgrade. Returns its path.
 */
async function journalOfThree(dir: string): Promise<string> {
  const records: string[] = [];
  STREAMS.forEach((stream, id) => {
    records.push(`o\t${id}\tp/stream=${stream}/${1_000_000}_0.ndjson.gz\t${stream}`);
    records.push(`l\t${id}\t${line(stream, 0)}`);
  });
  for (let i = 1; i < 10; i++) {
    STREAMS.forEach((stream, id) => records.push(`l\t${id}\t${line(stream, i)}`));
  }
  const encoded = records.map((record) => {
    const bytes = new TextEncoder().encode(`00000000\t${record}\n`);
    stampCrc(bytes, CRC_PREFIX_BYTES, bytes.length - 1);
    return bytes;
  });
  const path = join(dir, `001700000000000-000000${CHECKED_SEGMENT_SUFFIX}`);
  await Deno.writeFile(path, concatBytes(encoded));
  return path;
}

/** Flips one bit of the byte `offset` bytes into the first occurrence of `needle`. */
function flip(bytes: Uint8Array, needle: string, offset: number): void {
  const at = new TextDecoder().decode(bytes).indexOf(needle);
  assert.ok(at >= 0, needle);
  bytes[at + offset] ^= 0x02;
}

Deno.test("a flipped byte, a truncated record and a garbled open record: intact lines kept byte-identical, losses counted", async () => {
  await using tmp = await tempDir();
  const path = await journalOfThree(tmp.path);
  const bytes = await Deno.readFile(path);
  // Batch a: a byte of its fifth line's payload (the line itself is ASCII: offsets are bytes).
  flip(bytes, line(STREAMS[0], 4), 60);
  // Batch b: its open record's key.
  flip(bytes, `p/stream=${STREAMS[1]}/`, 3);
  // Batch c: its last record cut in the middle (the file's last record).
  const cut = bytes.length - 20;
  assert.ok(
    new TextDecoder().decode(bytes.subarray(0, cut)).endsWith(
      line(STREAMS[2], 9).slice(0, line(STREAMS[2], 9).length - 19),
    ),
  );
  await Deno.writeFile(path, bytes.subarray(0, cut));

  const rekeyed: string[][] = [];
  const result = await recoverJournal(tmp.path, {
    describe,
    rekey: (lines, index) => {
      rekeyed.push([...lines]);
      const stream = JSON.parse(lines[0]).stream;
      return { key: `rebuilt/${stream}/${index}`, stream };
    },
  });
  assert.equal(result.badRecords, 3);
  assert.equal(result.skipped.length, 3);
  assert.match(result.skipped.join(" "), /checksum mismatch.*checksum mismatch.*cut short/);
  assert.equal(result.unattributed, 0);
  const byStream = new Map(
    await Promise.all(
      result.batches.map(async (b) =>
        [b.stream, { key: b.key, lines: await b.body.lines(), meta: b.meta }] as const
      ),
    ),
  );

  // a: lines 0-3, one dropped line where line 4 was, lines 5-9, recovered.
  const a = byStream.get(STREAMS[0])!;
  const want = (stream: string, from: number, to: number) =>
    Array.from({ length: to - from }, (_, k) => line(stream, from + k));
  assert.deepEqual(a.lines.slice(0, 4), want(STREAMS[0], 0, 4));
  assert.deepEqual(JSON.parse(a.lines[4]), {
    recv_ts: 1_000_003,
    stream: STREAMS[0],
    event: "dropped",
    reason: "journal damage",
    messages: 1,
    first_recv_ts: 1_000_003,
    last_recv_ts: 1_000_005,
  });
  assert.deepEqual(a.lines.slice(5, 10), want(STREAMS[0], 5, 10));
  assert.equal(a.lines.length, 11);
  assert.equal(JSON.parse(a.lines[10]).event, "recovered");
  assert.equal(JSON.parse(a.lines[10]).damaged_records, 1);
  assert.equal(a.meta.messages, 9);

  // b: every line, under the key rekey gave it, and a recovered line saying why.
  const b = byStream.get(STREAMS[1])!;
  assert.equal(b.key, `rebuilt/${STREAMS[1]}/0`);
  assert.deepEqual(b.lines.slice(0, 10), want(STREAMS[1], 0, 10));
  assert.equal(b.lines.length, 11);
  assert.match(JSON.parse(b.lines[10]).reason, /open record/);
  assert.deepEqual(rekeyed, [want(STREAMS[1], 0, 10)]);

  // c: lines 0-8, the cut line marked as dropped, recovered.
  const c = byStream.get(STREAMS[2])!;
  assert.deepEqual(c.lines.slice(0, 9), want(STREAMS[2], 0, 9));
  const dropped = JSON.parse(c.lines[9]);
  assert.equal(dropped.event, "dropped");
  assert.equal(dropped.messages, 1);
  assert.equal(JSON.parse(c.lines[10]).event, "recovered");
  assert.equal(c.lines.length, 11);

  // No line anywhere is a changed copy of a journalled line.
  const journalled = new Set(STREAMS.flatMap((s) => want(s, 0, 10)));
  for (const { lines } of byStream.values()) {
    for (const text of lines) {
      const value = JSON.parse(text);
      if (value.event === undefined) assert.ok(journalled.has(text), text);
    }
  }
});

Deno.test("a garbled open record without rekey loses its batch, counted, and the others recover", async () => {
  await using tmp = await tempDir();
  const path = await journalOfThree(tmp.path);
  const bytes = await Deno.readFile(path);
  flip(bytes, `p/stream=${STREAMS[1]}/`, 3);
  await Deno.writeFile(path, bytes);
  const result = await recoverJournal(tmp.path, { describe });
  assert.deepEqual(result.batches.map((b) => b.stream), [STREAMS[0], STREAMS[2]]);
  assert.equal(result.unattributed, 10);
});

Deno.test("journal segments of the old format (no checksums) are still recovered", async () => {
  await using tmp = await tempDir();
  const key = `p/stream=${STREAMS[0]}/1000000_0.ndjson.gz`;
  const records = [
    `o\t0\t${key}\t${STREAMS[0]}`,
    `l\t0\t${line(STREAMS[0], 0)}`,
    `l\t0\t${line(STREAMS[0], 1)}`,
    `s\t0`,
  ];
  await Deno.writeTextFile(join(tmp.path, "001700000000000-000000.jnl"), records.join("\n") + "\n");
  const result = await recoverJournal(tmp.path, { describe });
  assert.equal(result.badRecords, 0);
  assert.equal(result.batches.length, 1);
  assert.equal(result.batches[0].key, key);
  assert.deepEqual(await result.batches[0].body.lines(), [
    line(STREAMS[0], 0),
    line(STREAMS[0], 1),
  ]);
});

Deno.test("damage to a batch's first line: its dropped line is at the key's time, so the object starts when its key says", async () => {
  await using tmp = await tempDir();
  const stream = STREAMS[0];
  const key = planKey({
    prefix: "",
    market: "spot",
    streamType: "depth@100ms",
    symbol: "AAAUSDT",
    firstRecvTs: 1_000_000,
    instanceId: "box",
    seq: 0,
  });
  const records = [`o\t0\t${key}\t${stream}`];
  for (let i = 0; i < 5; i++) records.push(`l\t0\t${line(stream, i)}`);
  const encoded = records.map((record) => {
    const bytes = new TextEncoder().encode(`00000000\t${record}\n`);
    stampCrc(bytes, CRC_PREFIX_BYTES, bytes.length - 1);
    return bytes;
  });
  const path = join(tmp.path, `001700000000000-000000${CHECKED_SEGMENT_SUFFIX}`);
  const bytes = concatBytes(encoded);
  flip(bytes, line(stream, 0), 60); // the first line, received at the key's time, is lost
  await Deno.writeFile(path, bytes);

  const result = await recoverJournal(tmp.path, { describe });
  assert.equal(result.batches.length, 1);
  const [batch] = result.batches;
  assert.equal(batch.key, key);
  const lines = await batch.body.lines();
  assert.deepEqual(JSON.parse(lines[0]), {
    recv_ts: 1_000_000,
    stream,
    event: "dropped",
    reason: "journal damage",
    messages: 1,
    first_recv_ts: 1_000_000,
    last_recv_ts: 1_000_001,
  });
  assert.equal(parseKey(batch.key)?.firstRecvTs, JSON.parse(lines[0]).recv_ts);
  assert.deepEqual(lines.slice(1, 5), [1, 2, 3, 4].map((i) => line(stream, i)));
});
