/**
 * Appends to batch files on the gzip worker (src/batch/file_appends.ts,
 * `GzipPool.appendFiles`, `workerAppender`) and the reused deflate context
 * (src/batch/deflate_engine.ts): the bytes land where asked, each part's
 * CRC-32 comes back only after the write, an error comes back as the error
 * the main thread would have seen, and the crash journal written through the
 * worker is the journal written on the main thread, byte for byte.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { constants, crc32, deflateRawSync, gunzipSync } from "node:zlib";
import { Batcher } from "../src/batch/batcher.ts";
import { GzipPool, workerAppender, workerDeflater } from "../src/batch/compress.ts";
import { deflateRawReusing } from "../src/batch/deflate_engine.ts";
import { type AppendResult, type FileAppender, localAppender } from "../src/batch/file_appends.ts";
import { dataLine } from "../src/archive/encode.ts";
import { Journal } from "../src/store/journal.ts";
import { listFiles, tempDir } from "./support/temp.ts";

const encoder = new TextEncoder();

/** NDJSON of `lines` partial-book-like lines; `seed` varies the numbers. */
function ndjson(lines: number, seed = 0): Uint8Array {
  let text = "";
  for (let i = 0; i < lines; i++) {
    const n = seed * 7919 + i;
    text += `{"recv_ts":${1_723_100_000_000_000 + n * 137},"data":{"u":${n},` +
      `"b":[["${(60_000 + (n % 977) / 100).toFixed(2)}","${Math.sin(n).toFixed(6)}"]]}}\n`;
  }
  return encoder.encode(text);
}

const crcs = (result: AppendResult): number[] => {
  if ("error" in result) throw result.error;
  return Array.from(result.crcs);
};

Deno.test("deflateRawReusing equals a fresh deflateRawSync for every input in turn, also beyond 16 KiB of output", () => {
  for (const level of [1, 5, 9]) {
    for (
      const [lines, final] of [[0, false], [3, false], [400, true], [12_000, false], [
        5,
        true,
      ]] as const
    ) {
      for (const seed of [1, 2]) {
        const input = ndjson(lines, seed);
        const flush = final ? constants.Z_FINISH : constants.Z_FULL_FLUSH;
        const fresh = new Uint8Array(deflateRawSync(input, { level, finishFlush: flush }));
        assert.deepEqual(
          deflateRawReusing(input, level, final),
          fresh,
          `${lines} lines, level ${level}`,
        );
      }
    }
  }
});

Deno.test("the worker appends each file's parts at its offset and answers with their CRC-32s", async () => {
  await using tmp = await tempDir();
  using pool = new GzipPool({ level: 5 });
  const a = join(tmp.path, "a.part");
  const b = join(tmp.path, "b.part");
  const [x, y, z] = [ndjson(3, 1), ndjson(40, 2), ndjson(1, 3)];
  const first = await pool.appendFiles([
    { path: a, at: 0, truncate: false, parts: [x, y] },
    { path: b, at: 0, truncate: false, parts: [z] },
  ]);
  assert.deepEqual(first.map(crcs), [[crc32(x) >>> 0, crc32(y) >>> 0], [crc32(z) >>> 0]]);
  const second = await pool.appendFiles([{
    path: a,
    at: x.length + y.length,
    truncate: false,
    parts: [z],
  }]);
  assert.deepEqual(second.map(crcs), [[crc32(z) >>> 0]]);
  assert.deepEqual(await Deno.readFile(a), new Uint8Array([...x, ...y, ...z]));
  assert.deepEqual(await Deno.readFile(b), z);
});

Deno.test("an append marked truncate cuts off what a failed write left beyond its offset", async () => {
  await using tmp = await tempDir();
  using pool = new GzipPool({ level: 5 });
  const path = join(tmp.path, "torn.part");
  await Deno.writeFile(path, encoder.encode("whole|half a write"));
  const [result] = await pool.appendFiles([{
    path,
    at: 6,
    truncate: true,
    parts: [encoder.encode("next")],
  }]);
  crcs(result);
  assert.equal(await Deno.readTextFile(path), "whole|next");
});

Deno.test("a failed append comes back as the error class the main thread would get, and the others are written", async () => {
  await using tmp = await tempDir();
  using pool = new GzipPool({ level: 5 });
  const missing = join(tmp.path, "no", "such", "dir.part");
  const fine = join(tmp.path, "fine.part");
  const parts = [encoder.encode("bytes")];
  const here = await localAppender().append([{ path: missing, at: 0, truncate: false, parts }]);
  const [failed, written] = await pool.appendFiles([
    { path: missing, at: 0, truncate: false, parts },
    { path: fine, at: 0, truncate: false, parts },
  ]);
  assert.ok("error" in failed && "error" in here[0]);
  assert.ok(failed.error instanceof Deno.errors.NotFound, String(failed.error));
  assert.equal(failed.error.constructor, here[0].error.constructor);
  assert.deepEqual(crcs(written), [crc32(parts[0]) >>> 0]);
  assert.equal(await Deno.readTextFile(fine), "bytes");
});

Deno.test("workerAppender writes on the main thread while the pool fails, cutting the files back first", async () => {
  await using tmp = await tempDir();
  const pool = new GzipPool({ level: 5 });
  pool.close();
  const path = join(tmp.path, "b.part");
  await Deno.writeFile(path, encoder.encode("kept|part of a write the worker died in"));
  const appender = workerAppender(pool);
  const [result] = await appender.append([{
    path,
    at: 5,
    truncate: false,
    parts: [encoder.encode("more")],
  }]);
  crcs(result);
  assert.equal(await Deno.readTextFile(path), "kept|more");
});

/** Every file of a journal after a run of 3 streams, 6 flushes and a seal, written through `appender`. */
async function journalWith(dir: string, appender: FileAppender, pool: GzipPool) {
  const journal = await Journal.start(dir, { flushMs: 60_000, now: () => 1_000, appender });
  const batcher = new Batcher({
    batchMs: 60_000,
    maxLines: 10_000,
    planKey: (stream, first, seq) => `p/${stream}/${first}_${seq}.ndjson.gz`,
    observer: journal,
    deflater: workerDeflater(pool),
  });
  const lines = new Map<string, string[]>();
  for (let flush = 0; flush < 6; flush++) {
    for (const stream of ["a", "b", "c"]) {
      for (let i = 0; i < 5 + flush; i++) {
        const recvTs = 1_000 + flush * 100 + i;
        const text = dataLine(recvTs, stream, `{"u":${recvTs},"x":"${stream.repeat(i)}"}`);
        batcher.add(stream, { text, recvTs, isData: true }, 0);
        lines.set(stream, [...(lines.get(stream) ?? []), text]);
      }
    }
    await journal.flush();
  }
  const sealed = batcher.sealAll();
  const files = await Promise.all(sealed.map((batch) => batch.durable));
  const contents = new Map<string, Uint8Array>();
  for (const name of await listFiles(dir)) contents.set(name, await Deno.readFile(join(dir, name)));
  await journal.close();
  return { sealed, files, contents, lines };
}

Deno.test("a journal written through the worker is byte for byte the one written on the main thread", async () => {
  await using tmp = await tempDir();
  using pool = new GzipPool({ level: 5 });
  const here = await journalWith(join(tmp.path, "here"), localAppender(), pool);
  const there = await journalWith(join(tmp.path, "worker"), workerAppender(pool), pool);
  assert.deepEqual([...there.contents.keys()], [...here.contents.keys()]);
  assert.ok(there.contents.size >= 4, "three batch files and a segment");
  assert.deepEqual(there.contents, here.contents);
  // Each sealed batch's file is its object: one gzip member of exactly its lines.
  for (const [i, batch] of there.sealed.entries()) {
    const file = there.files[i];
    assert.ok(file, `batch ${batch.key} has its file`);
    const text = new TextDecoder().decode(gunzipSync(await Deno.readFile(file.path)));
    assert.deepEqual(text.trimEnd().split("\n"), there.lines.get(batch.stream));
  }
});
