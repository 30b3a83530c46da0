/**
 * GzipBody (src/batch/body.ts): a batch compressed piece by piece while open
 * must come out as ONE gzip member holding exactly the lines appended, read
 * the same by two independent decoders (node:zlib and the Web
 * DecompressionStream), whatever the piece and chunk sizes; its memory
 * account must follow what it holds; a failing compressor must not lose
 * data silently.
 */

import assert from "node:assert/strict";
import { constants, crc32, deflateRawSync, gunzipSync, gzipSync, inflateRawSync } from "node:zlib";
import { type Deflater, GzipBody, localDeflater, type MemoryAccount } from "../src/batch/body.ts";
import { ChunkPool } from "../src/batch/chunks.ts";
import { GzipPool, workerDeflater } from "../src/batch/compress.ts";

const encoder = new TextEncoder();

/** A small deterministic generator (tests must be repeatable). */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** Archive-like lines: mostly ASCII, some multi-byte characters, lengths from 1 to ~3 KB. */
function lines(count: number, seed: number): string[] {
  const next = random(seed);
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const levels = Math.floor(next() * 60);
    let data = "";
    for (let l = 0; l < levels; l++) {
      data += `["${(60_000 + next() * 50).toFixed(2)}","${(next() * 3).toFixed(5)}"],`;
    }
    const note = next() < 0.1 ? "€ü漢😀" : "";
    out.push(`{"recv_ts":${1_723_100_000_000_000 + i},"stream":"x","n":"${note}","b":[${data}0]}`);
  }
  return out;
}

/** Reads a gzip body with the Web decoder (a different implementation from node:zlib's). */
async function webGunzip(body: Uint8Array): Promise<string> {
  const stream = new Blob([body as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new DecompressionStream("gzip"));
  return await new Response(stream).text();
}

/**
 * Checks `body` is exactly one gzip member of `text`: header, one raw
 * deflate stream that ends precisely where the 8-byte trailer starts, and a
 * trailer with the text's CRC-32 and length. (gunzip alone would also accept
 * several members back to back, which some readers stop after the first of.)
 */
function assertOneMember(body: Uint8Array, text: Uint8Array): void {
  assert.deepEqual([...body.subarray(0, 4)], [0x1f, 0x8b, 8, 0], "gzip header, no flags");
  const deflated = body.subarray(10, body.length - 8);
  const { buffer, engine } = inflateRawSync(deflated, { info: true }) as unknown as {
    buffer: Uint8Array;
    engine: { bytesWritten: number };
  };
  assert.equal(engine.bytesWritten, deflated.length, "the deflate stream ends at the trailer");
  assert.deepEqual(new Uint8Array(buffer), text);
  const trailer = new DataView(body.buffer, body.byteOffset + body.length - 8, 8);
  assert.equal(trailer.getUint32(0, true), crc32(text) >>> 0, "CRC-32");
  assert.equal(trailer.getUint32(4, true), text.length % 2 ** 32, "ISIZE");
}

function bodyOf(
  texts: readonly string[],
  options: { pieceBytes: number; chunkSize?: number; deflater?: Deflater; account?: MemoryAccount },
): GzipBody {
  const body = new GzipBody({
    pool: new ChunkPool({ chunkSize: options.chunkSize ?? 16 * 1024 }),
    deflater: options.deflater ?? localDeflater(5),
    pieceBytes: () => options.pieceBytes,
    account: options.account,
  });
  for (const line of texts) body.appendLine(line);
  return body;
}

const ndjson = (texts: readonly string[]) => encoder.encode(texts.map((l) => l + "\n").join(""));

Deno.test("a body cut into pieces is one gzip member of exactly its lines, for any piece and chunk size", async () => {
  const next = random(7);
  for (let round = 0; round < 40; round++) {
    const texts = lines(1 + Math.floor(next() * 400), round);
    const pieceBytes = [1, 100, 4096, 65_536, 300_000][round % 5];
    const chunkSize = [4, 64, 1000, 16 * 1024][Math.floor(next() * 4)];
    const body = bodyOf(texts, { pieceBytes, chunkSize });
    const expected = ndjson(texts);
    assert.equal(body.byteLength, expected.length);
    assert.equal(body.lineCount, texts.length);
    assert.deepEqual(await body.lines(), texts, "lines() while open");
    const gz = await body.finish();
    const where =
      `round ${round}: ${texts.length} lines, pieces of ${pieceBytes}, chunks of ${chunkSize}`;
    assertOneMember(gz, expected);
    assert.deepEqual(new Uint8Array(gunzipSync(gz)), expected, where);
    assert.equal(await webGunzip(gz), new TextDecoder().decode(expected), where);
  }
});

Deno.test("a body that never reached a piece is gzipSync's header, its text deflated, an empty final block and the trailer", async () => {
  const texts = lines(200, 3);
  for (const level of [1, 5, 9]) {
    const body = bodyOf(texts, { pieceBytes: Infinity, deflater: localDeflater(level) });
    const gz = await body.finish();
    assert.equal(body.pieceCount, 1);
    const text = ndjson(texts);
    const oneShot = new Uint8Array(gzipSync(text, { level }));
    const deflated = deflateRawSync(text, { level, finishFlush: constants.Z_SYNC_FLUSH });
    assert.deepEqual(gz.subarray(0, 10), oneShot.subarray(0, 10), `level ${level}: header`);
    assert.deepEqual(gz.subarray(10, 10 + deflated.length), new Uint8Array(deflated));
    assert.deepEqual([...gz.subarray(10 + deflated.length, -8)], [0x03, 0x00]);
    assert.deepEqual(gz.subarray(-8), oneShot.subarray(-8), `level ${level}: trailer`);
  }
});

Deno.test("pieces cut every few lines (the journal's flushes) make one gzip member of exactly the lines", async () => {
  const texts = lines(3000, 11);
  const whole = gzipSync(ndjson(texts), { level: 5 }).length;
  const body = bodyOf(texts.slice(0, 0), { pieceBytes: Infinity });
  // A quiet stream flushed by the journal every 250 ms: a piece every 3 lines.
  texts.forEach((line, i) => {
    body.appendLine(line);
    if (i % 3 === 2) body.flush();
  });
  const gz = await body.finish();
  assert.equal(body.pieceCount, 1000);
  assertOneMember(gz, ndjson(texts));
  assert.ok(gz.length < whole * 1.25, `${gz.length} vs ${whole} one-shot`);
});

Deno.test("takePieces hands each piece over once, in order, with running line counts and text CRC", async () => {
  const texts = lines(30, 4);
  const body = bodyOf([], { pieceBytes: Infinity });
  texts.slice(0, 10).forEach((l) => body.appendLine(l));
  body.flush();
  texts.slice(10).forEach((l) => body.appendLine(l));
  body.flush();
  body.flush(); // nothing new: no piece
  const pieces = body.takePieces();
  assert.deepEqual(body.takePieces(), []);
  assert.deepEqual(pieces.map((p) => [p.lines, p.totalLines]), [[10, 10], [20, 30]]);
  assert.equal(pieces[1].textCrc, crc32(ndjson(texts)) >>> 0);
  assert.equal(pieces[1].textBytes, ndjson(texts).length);
  const joined = new Uint8Array([...await pieces[0].bytes, ...await pieces[1].bytes]);
  assert.deepEqual(
    new Uint8Array(inflateRawSync(joined, { finishFlush: constants.Z_SYNC_FLUSH })),
    ndjson(texts),
  );
});

Deno.test("pieces cost little size at the default piece size", async () => {
  const texts = lines(3000, 11);
  const whole = gzipSync(ndjson(texts), { level: 5 }).length;
  const body = bodyOf(texts, { pieceBytes: 256 * 1024 });
  const gz = await body.finish();
  assert.ok(body.pieceCount > 4, `${body.pieceCount} pieces`);
  assert.ok(gz.length < whole * 1.05, `${gz.length} vs ${whole} one-shot`);
});

Deno.test("the memory account follows raw text, then compressed pieces, and is let go on detach", async () => {
  const account: MemoryAccount = { bytes: 0, held: 0 };
  const texts = lines(2000, 5);
  const body = bodyOf(texts, { pieceBytes: 64 * 1024, chunkSize: 16 * 1024, account });
  // Pieces compress asynchronously: until then their text is in memory, in whole chunks.
  assert.ok(
    body.memoryBytes > body.byteLength,
    `${body.memoryBytes} held, ${body.byteLength} text`,
  );
  assert.equal(account.bytes, body.memoryBytes);
  await body.lines(); // waits for every piece
  assert.equal(account.bytes, body.memoryBytes);
  assert.ok(
    account.bytes < body.byteLength / 2,
    `${account.bytes} of ${body.byteLength} compressed`,
  );
  const held = body.detach();
  assert.equal(held, body.memoryBytes);
  assert.equal(account.bytes, 0);
  body.appendLine("late"); // a sealed batch's body is no longer counted anywhere
  assert.equal(account.bytes, 0);
  await body.finish();
  assert.equal(body.memoryBytes, 0);

  // A line in a fresh chunk takes the whole chunk.
  const small: MemoryAccount = { bytes: 0, held: 0 };
  const one = bodyOf(['{"a":1}'], { pieceBytes: 64 * 1024, chunkSize: 1024, account: small });
  assert.equal(one.byteLength, 8);
  assert.equal(small.bytes, 1024);
  one.release();
  assert.equal(small.bytes, 0);
});

Deno.test("the held count is text not yet compressed, then compressed pieces, then nothing once spilled", async () => {
  const account: MemoryAccount = { bytes: 0, held: 0 };
  const texts = lines(400, 21);
  const body = bodyOf(texts, { pieceBytes: 1 << 30, chunkSize: 16 * 1024, account });
  const text = body.byteLength;
  assert.equal(body.heldBytes, text, "exact text: the unused end of the last chunk is not counted");
  assert.ok(body.memoryBytes > text, "memory counts whole chunks");
  assert.equal(account.held, text);
  body.flush();
  assert.equal(body.heldBytes, text, "while the piece compresses, its text is held");
  const [piece] = body.takePieces();
  const compressed = (await piece.bytes).length;
  assert.ok(compressed < text / 2, `${compressed} of ${text}`);
  assert.equal(body.heldBytes, compressed, "then its compressed bytes");
  assert.equal(account.held, compressed);
  body.appendLine("tail");
  body.spill(piece, 0, compressed, () => piece.bytes);
  assert.equal(body.heldBytes, "tail\n".length, "a piece written elsewhere is not held");
  assert.equal(account.held, "tail\n".length);
  body.detach();
  assert.equal(account.held, 0);
  assert.equal(account.bytes, 0);
  // The spilled piece is read back when the body is finished.
  assert.deepEqual(new Uint8Array(gunzipSync(await body.finish())), ndjson([...texts, "tail"]));
});

Deno.test("spilled pieces written back to back are read back with one call; a piece elsewhere with its own", async () => {
  const texts = lines(600, 33);
  const body = new GzipBody({
    pool: new ChunkPool(),
    deflater: localDeflater(5),
    pieceBytes: () => 1 << 30,
  });
  let file = new Uint8Array(0);
  const reads: Array<[number, number]> = [];
  const read = (at: number, length: number) => {
    reads.push([at, length]);
    return Promise.resolve(file.slice(at, at + length));
  };
  const spillAt = async (from: number, to: number, at: number) => {
    for (const text of texts.slice(from, to)) body.appendLine(text);
    body.flush();
    const [piece] = body.takePieces();
    const bytes = await piece.bytes;
    const grown = new Uint8Array(Math.max(file.length, at + bytes.length));
    grown.set(file);
    grown.set(bytes, at);
    file = grown;
    body.spill(piece, at, bytes.length, read);
    return bytes.length;
  };
  let at = 10; // after a gzip header, as in the journal's file
  at += await spillAt(0, 200, at);
  at += await spillAt(200, 400, at);
  await spillAt(400, 500, at + 7); // not where the run ends
  for (const text of texts.slice(500)) body.appendLine(text); // a tail never cut
  assert.equal(body.heldBytes, ndjson(texts.slice(500)).length, "only the tail is held");
  const gz = await body.finish();
  assert.deepEqual(new Uint8Array(gunzipSync(gz)), ndjson(texts));
  assert.equal(reads.length, 2, `one read for the run, one for the piece elsewhere: ${reads}`);
  assert.deepEqual(reads[0], [10, at - 10]);
});

Deno.test("release lets go of everything, also of pieces still compressing", async () => {
  const account: MemoryAccount = { bytes: 0, held: 0 };
  let finishPiece!: () => void;
  const gate = new Promise<void>((resolve) => finishPiece = resolve);
  const slow: Deflater = {
    level: 5,
    deflateRaw: async (chunks, final) => {
      await gate;
      return localDeflater(5).deflateRaw(chunks, final);
    },
  };
  const body = bodyOf(lines(300, 1), { pieceBytes: 10_000, deflater: slow, account });
  assert.ok(body.pieceCount > 0);
  body.release();
  assert.equal(account.bytes, 0);
  finishPiece();
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(account.bytes, 0, "a piece completing after release counts nothing");
  assert.throws(() => body.appendLine("x"), /released/);
  await assert.rejects(body.finish(), /released/);
});

Deno.test("a piece that cannot be compressed fails finish, without an unhandled rejection", async () => {
  let calls = 0;
  const broken: Deflater = {
    level: 5,
    deflateRaw: (chunks, final) => {
      if (calls++ === 1) return Promise.reject(new Error("no memory"));
      return localDeflater(5).deflateRaw(chunks, final);
    },
  };
  const account: MemoryAccount = { bytes: 0, held: 0 };
  const body = bodyOf(lines(300, 2), { pieceBytes: 10_000, deflater: broken, account });
  // Let the failed piece settle before anything awaits it.
  await new Promise((resolve) => setTimeout(resolve, 0));
  await assert.rejects(body.finish(), /no memory/);
  assert.equal(account.bytes, 0);
  await assert.rejects(body.finish(), /finished/, "finish is once only");
});

Deno.test("pieces compressed by the worker pool make the same archive, also when the pool dies mid-batch", async () => {
  using pool = new GzipPool({ level: 5 });
  const deflater = workerDeflater(pool, { hereBytes: 0 });
  const texts = lines(1500, 9);
  const body = bodyOf(texts.slice(0, 700), { pieceBytes: 32 * 1024, deflater });
  pool.close(); // pieces in flight are rejected: they are compressed on this thread instead
  for (const line of texts.slice(700)) body.appendLine(line);
  const gz = await body.finish();
  assertOneMember(gz, ndjson(texts));
});
