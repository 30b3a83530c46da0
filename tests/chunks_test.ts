import assert from "node:assert/strict";
import { concatBytes } from "../src/archive/bytes.ts";
import { ChunkedText, ChunkPool } from "../src/batch/chunks.ts";

const decode = (text: ChunkedText) => new TextDecoder().decode(concatBytes(text.chunks()));

Deno.test("chunked text holds lines as UTF-8 with a newline after each, across chunk edges", () => {
  const pool = new ChunkPool({ chunkSize: 8 });
  const text = new ChunkedText(pool);
  // ASCII, 2-, 3- and 4-byte characters, a line longer than a chunk, and an empty line.
  const lines = ["abc", "é€😀x", "a long line that spans several chunks", "", "😀😀😀"];
  for (const line of lines) text.appendLine(line);
  assert.equal(decode(text), lines.join("\n") + "\n");
  assert.deepEqual(text.lines(), lines);
  assert.equal(text.byteLength, new TextEncoder().encode(lines.join("\n") + "\n").length);
  assert.equal(text.lineCount, lines.length);
  assert.ok(text.chunks().every((c) => c.length <= 8));
});

Deno.test("lines appended as bytes read back as the same text, mixed with lines appended as text", () => {
  const pool = new ChunkPool({ chunkSize: 8 });
  const text = new ChunkedText(pool);
  const lines = ["abc", "é€😀x", "a long line that spans several chunks", "", "😀😀😀", "z"];
  lines.forEach((line, i) => {
    if (i % 2 === 0) text.appendLineBytes(new TextEncoder().encode(line));
    else text.appendLine(line);
  });
  assert.equal(decode(text), lines.join("\n") + "\n");
  assert.deepEqual(text.lines(), lines);
  assert.equal(text.byteLength, new TextEncoder().encode(lines.join("\n") + "\n").length);
  assert.equal(text.lineCount, lines.length);
  assert.ok(text.chunks().every((c) => c.length <= 8));
});

Deno.test("chunk views never include the bytes a chunk closed short of", () => {
  const text = new ChunkedText(new ChunkPool({ chunkSize: 5 }));
  text.appendLine("abc"); // 4 bytes: "abc\n", one byte left
  text.appendLine("€"); // 3 bytes: does not fit in 1, the chunk closes short
  assert.deepEqual(text.chunks().map((c) => c.length), [4, 4]);
  assert.equal(decode(text), "abc\n€\n");
});

Deno.test("released chunks are reused by the next text, and a released text cannot be read", () => {
  const pool = new ChunkPool({ chunkSize: 16, maxFreeBytes: 32 });
  const first = new ChunkedText(pool);
  first.appendLine("x".repeat(40)); // three chunks
  const used = first.chunks().map((c) => c.buffer);
  first.release();
  assert.equal(pool.freeBytes, 32, "the free list keeps at most maxFreeBytes");
  assert.throws(() => first.chunks(), /released/);
  assert.throws(() => first.appendLine("y"), /released/);
  const second = new ChunkedText(pool);
  second.appendLine("second");
  assert.ok(used.includes(second.chunks()[0].buffer), "a freed chunk is taken again");
  assert.equal(decode(second), "second\n");
});

Deno.test("an empty text has no chunks and no lines", () => {
  const text = new ChunkedText(new ChunkPool());
  assert.deepEqual(text.chunks(), []);
  assert.deepEqual(text.lines(), []);
  assert.equal(text.byteLength, 0);
});

Deno.test("a pool refuses chunks too small for one character", () => {
  assert.throws(() => new ChunkPool({ chunkSize: 3 }), RangeError);
});

Deno.test("concatBytes: parts back to back; with an allocator always a copy, in its buffer", () => {
  const a = new Uint8Array([1, 2]);
  const b = new Uint8Array([3]);
  assert.deepEqual([...concatBytes([a, b])], [1, 2, 3]);
  assert.equal(concatBytes([a]), a, "one part, no allocator: the part itself");
  const buffer = new ArrayBuffer(16);
  const copy = concatBytes([a], (bytes) => {
    assert.equal(bytes, 2);
    return buffer;
  });
  assert.notEqual(copy, a);
  assert.equal(copy.buffer, buffer);
  assert.deepEqual([...copy], [1, 2]);
});
