import assert from "node:assert/strict";
import {
  Batcher,
  type BatchLine,
  MAX_PIECE_BYTES,
  MIN_PIECE_BYTES,
  type PartsLine,
  pieceBytesFor,
  TEXT_BUDGET_BYTES,
} from "../src/batch/batcher.ts";
import { ChunkPool } from "../src/batch/chunks.ts";
import type { GzipBody } from "../src/batch/body.ts";
import { dataLine } from "../src/archive/encode.ts";

function makeBatcher(options: { batchMs?: number; maxLines?: number } = {}) {
  return new Batcher({
    batchMs: options.batchMs ?? 1000,
    maxLines: options.maxLines ?? 100,
    planKey: (stream, first, seq) => `${stream}/${first}/${seq}`,
  });
}

const data = (recvTs: number, id?: number): BatchLine => ({
  text: `d${recvTs}`,
  recvTs,
  isData: true,
  firstUpdateId: id,
  lastUpdateId: id,
});

Deno.test("batcher seals when MAX_MESSAGES_PER_BATCH is reached", async () => {
  const batcher = makeBatcher({ maxLines: 3 });
  assert.equal(batcher.add("a", data(1), 0), undefined);
  assert.equal(batcher.add("a", data(2), 0), undefined);
  const sealed = batcher.add("a", data(3), 0);
  assert.ok(sealed);
  assert.deepEqual(await sealed.body.lines(), ["d1", "d2", "d3"]);
  assert.equal(sealed.key, "a/1/0");
  assert.equal(batcher.openLines, 0);
});

Deno.test("batcher writes a data line given as its parts exactly as dataLine spells it", async () => {
  const batcher = makeBatcher({ maxLines: 1000 });
  const payload = (n: number) => `{"lastUpdateId":${n},"s":"é\\"","bids":[["1.0","2"]]}`;
  const expected: string[] = [];
  const parts = (recvTs: number, stream: string, n: number): PartsLine => {
    expected.push(dataLine(recvTs, stream, payload(n)));
    return { parts: { stream, dataText: payload(n) }, recvTs, isData: true };
  };
  // Stream names change within the batch (a snapshot's name), and text lines come between.
  batcher.add("a", parts(1_700_000_000_000_001, "a@depth", 1), 0);
  batcher.add("a", parts(1_700_000_000_000_002, "a@depthSnapshot", 2), 0);
  batcher.add("a", { text: "event", recvTs: 3, isData: false }, 0);
  expected.push("event");
  batcher.add("a", parts(1_700_000_000_000_004, "a@depth", 3), 0);
  batcher.add("a", parts(7, 'a"é', 4), 0);
  const [sealed] = batcher.sealAll();
  assert.deepEqual(await sealed.body.lines(), expected);
  assert.equal(sealed.textBytes, new TextEncoder().encode(expected.join("\n") + "\n").length);
  assert.equal(sealed.meta.messages, 4);
});

Deno.test("batcher keeps lines longer than its encoding buffer whole, as text or as parts", async () => {
  const batcher = makeBatcher({ maxLines: 1000 });
  const payload = (n: number) => `{"s":"${"é".repeat(n)}"}`;
  const expected: string[] = [];
  const text = (n: number) => {
    expected.push(`t${"x".repeat(n)}`);
    batcher.add("a", { text: expected[expected.length - 1], recvTs: n, isData: false }, 0);
  };
  const parts = (n: number) => {
    expected.push(dataLine(n, "a@depth", payload(n)));
    batcher.add("a", {
      parts: { stream: "a@depth", dataText: payload(n) },
      recvTs: n,
      isData: true,
    }, 0);
  };
  // Each long line outgrows the buffer the one before it left behind.
  text(10);
  text(30_000);
  parts(5);
  parts(100_000);
  text(20);
  text(400_000);
  parts(7);
  const [sealed] = batcher.sealAll();
  assert.deepEqual(await sealed.body.lines(), expected);
});

Deno.test("batcher seals BATCH_SECONDS after a batch's first line, not its last", () => {
  const batcher = makeBatcher({ batchMs: 1000 });
  batcher.add("a", data(10), 0);
  batcher.add("a", data(11), 900);
  assert.deepEqual(batcher.sealDue(999), []);
  const [sealed] = batcher.sealDue(1000);
  assert.equal(sealed.body.lineCount, 2);
  batcher.add("a", data(12), 1100);
  assert.deepEqual(batcher.sealDue(2000), []);
  assert.equal(batcher.sealDue(2100).length, 1);
});

Deno.test("batcher keeps one batch per stream and numbers each stream's batches", () => {
  const batcher = makeBatcher({ maxLines: 2 });
  batcher.add("a", data(1), 0);
  batcher.add("b", data(2), 0);
  const a0 = batcher.add("a", data(3), 0);
  batcher.add("a", data(4), 0);
  const a1 = batcher.add("a", data(5), 0);
  assert.equal(a0?.key, "a/1/0");
  assert.equal(a1?.key, "a/4/1");
  const rest = batcher.sealAll();
  assert.deepEqual(rest.map((b) => b.key), ["b/2/0"]);
});

Deno.test("batcher metadata counts messages and events and spans update ids and times", () => {
  const batcher = makeBatcher();
  batcher.add("a", { text: "e", recvTs: 5, isData: false }, 0);
  batcher.add("a", data(6, 100), 0);
  batcher.add("a", data(9, 105), 0);
  const [sealed] = batcher.sealAll();
  assert.deepEqual(sealed.meta, {
    messages: 2,
    snapshots: 0,
    events: 1,
    firstRecvTs: 5,
    lastRecvTs: 9,
    firstUpdateId: 100,
    lastUpdateId: 105,
  });
  assert.equal(sealed.textBytes, "e".length + "d6".length + "d9".length + 3);
});

Deno.test("batcher counts open batches' memory in whole chunks, and their text apart", () => {
  const batcher = new Batcher({
    batchMs: 60_000,
    maxLines: 1000,
    planKey: (stream, first) => `${stream}/${first}`,
    pool: new ChunkPool({ chunkSize: 64 }),
  });
  batcher.add("a", data(10), 0); // 4 bytes, one 64-byte chunk
  batcher.add("b", data(20), 1);
  assert.equal(batcher.openBytes, 128, "8 bytes of text in two 64-byte chunks");
  assert.equal(batcher.openTextBytes, 8, "the text, a metric");
  assert.equal(batcher.openHeldBytes, 8, "the bound counts what is held: text not compressed yet");
  const [sealed] = batcher.sealAll();
  assert.equal(sealed.textBytes, 4, "a sealed batch still reports its text bytes");
  assert.equal(batcher.openBytes, 0);
});

Deno.test("batcher reads a maxOpenBytes given as a function at every check", () => {
  let bound = 100;
  const batcher = new Batcher({
    batchMs: 60_000,
    maxLines: 1000,
    maxOpenBytes: () => bound,
    planKey: (stream, first) => `${stream}/${first}`,
    pool: new ChunkPool({ chunkSize: 4 }), // one 4-byte line a chunk: bytes and chunks agree
  });
  batcher.add("a", data(10), 0);
  batcher.add("b", data(20), 1);
  batcher.add("c", data(30), 2); // 12 bytes open
  assert.deepEqual(batcher.sealOverflow(), []);
  bound = 5; // the budget shrank (the upload queue borrowed from it)
  assert.deepEqual(batcher.sealOverflow().map((b) => b.key), ["a/10", "b/20"]);
  assert.equal(batcher.openTextBytes, 4);
});

Deno.test("batcher seals the oldest open batches early when open batches exceed maxOpenBytes", () => {
  const batcher = new Batcher({
    batchMs: 60_000,
    maxLines: 1000,
    maxOpenBytes: 10,
    planKey: (stream, first) => `${stream}/${first}`,
    pool: new ChunkPool({ chunkSize: 4 }), // one 4-byte line a chunk: bytes and chunks agree
  });
  batcher.add("a", data(10), 0); // "d10" + newline: 4 bytes
  batcher.add("b", data(20), 1);
  assert.deepEqual(batcher.sealOverflow(), []);
  batcher.add("c", data(30), 2); // 12 bytes open: over the bound
  const early = batcher.sealOverflow();
  assert.deepEqual(early.map((b) => b.key), ["a/10"]);
  assert.equal(batcher.openTextBytes, 8);
  batcher.add("a", data(40), 3);
  assert.deepEqual(batcher.sealOverflow().map((b) => b.key), ["b/20"]);
});

Deno.test("open batches are cut into pieces sized by how many are open", () => {
  assert.equal(pieceBytesFor(1), MAX_PIECE_BYTES);
  assert.equal(pieceBytesFor(50), Math.floor(TEXT_BUDGET_BYTES / 50));
  assert.equal(pieceBytesFor(1500), MIN_PIECE_BYTES);
  for (let n = 1; n < 3000; n += 7) {
    const size = pieceBytesFor(n);
    assert.ok(size >= MIN_PIECE_BYTES && size <= MAX_PIECE_BYTES);
    assert.ok(size >= pieceBytesFor(n + 7), "more open batches never get larger pieces");
  }
});

Deno.test("batcher bounds a compressed open batch by what it holds, not by its text", async () => {
  const line = `{"b":[${'["60000.01","0.5"],'.repeat(50)}0]}`;
  let bound = Infinity;
  const batcher = new Batcher({
    batchMs: 60_000,
    maxLines: 1_000_000,
    maxOpenBytes: () => bound,
    planKey: (stream, first) => `${stream}/${first}`,
  });
  const count = 30_000;
  for (let i = 0; i < count; i++) {
    batcher.add("b", { ...data(i), text: line }, 0);
    if (i % 1000 === 0) await new Promise((resolve) => setTimeout(resolve, 0));
  }
  await new Promise((resolve) => setTimeout(resolve, 10)); // the last pieces compress
  const text = count * (line.length + 1);
  assert.equal(batcher.openTextBytes, text);
  const held = batcher.openHeldBytes;
  assert.ok(held < text / 2, `${held} bytes held of ${text} text (compressed pieces, no journal)`);
  bound = held;
  assert.deepEqual(batcher.sealOverflow(), [], "at the bound by what is held");
  bound = held - 1;
  const [sealed] = batcher.sealOverflow();
  assert.equal(sealed.textBytes, text);
  assert.equal(sealed.heldBytes, held, "the queue counts it at what the bound counted");
  assert.equal(batcher.openHeldBytes, 0);
});

Deno.test("batcher does not count the unused part of each open batch's chunk against its bound", () => {
  // 1,500 one-line batches hold 1,500 chunks: the bound counts text, not chunks, or it would seal every line.
  const batcher = new Batcher({
    batchMs: 60_000,
    maxLines: 1000,
    maxOpenBytes: 1000 * 8,
    planKey: (stream, first) => `${stream}/${first}`,
    pool: new ChunkPool({ chunkSize: 1024 }),
  });
  for (let i = 0; i < 1000; i++) batcher.add(`s${i}`, { ...data(i), text: "d123456" }, i);
  assert.equal(batcher.openBytes, 1000 * 1024);
  assert.deepEqual(batcher.sealOverflow(), []);
  batcher.add("s0", { ...data(1), text: "d123456" }, 1);
  assert.deepEqual(batcher.sealOverflow().map((b) => b.key), ["s0/0"]);
});

Deno.test("batches whose pieces the journal has written do not count against maxOpenBytes; unwritten pieces do", async () => {
  const bodies: GzipBody[] = [];
  const batcher = new Batcher({
    batchMs: 60_000,
    maxLines: 100_000,
    maxOpenBytes: 4096,
    planKey: (stream, first) => `${stream}/${first}`,
    observer: {
      opened: (_key, _stream, body) => bodies.push(body),
      sealed: () => Promise.resolve(undefined),
    },
  });
  const line = (i: number): BatchLine => ({
    text: `{"n":${i},"pad":"${"x".repeat(200)}"}`,
    recvTs: i,
    isData: true,
  });
  /** What the crash journal does every 250 ms: cut each body's new text and, if `writes`, write it. */
  const flush = async (writes: boolean) => {
    for (const body of bodies) {
      body.flush();
      for (const piece of body.takePieces()) {
        const bytes = await piece.bytes;
        if (writes) body.spill(piece, 0, bytes.length, () => Promise.resolve(bytes));
      }
    }
  };
  let i = 0;
  for (let round = 0; round < 20; round++) {
    for (let s = 0; s < 4; s++) batcher.add(`s${s}`, line(i++), i);
    await flush(true);
    assert.deepEqual(batcher.sealOverflow(), [], `round ${round}: nothing held, nothing sealed`);
  }
  assert.ok(batcher.openTextBytes > 4 * 4096, `${batcher.openTextBytes} bytes of text open`);
  // A journal that cannot write: compressed pieces stay in memory and count.
  let sealed = 0;
  for (let round = 0; round < 200 && sealed === 0; round++) {
    for (let s = 0; s < 4; s++) batcher.add(`s${s}`, line(i++), i);
    await flush(false);
    sealed += batcher.sealOverflow().length;
  }
  assert.ok(sealed > 0, "unwritten compressed pieces filled the bound");
  assert.ok(batcher.openHeldBytes <= 4096, `${batcher.openHeldBytes} held after early seals`);
});
