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
import { constants, crc32, deflateRawSync, gunzipSync, inflateRawSync } from "node:zlib";
import { Batcher } from "../src/batch/batcher.ts";
import { GzipPool, workerAppender, workerDeflater } from "../src/batch/compress.ts";
import { deflateRawReusing } from "../src/batch/deflate_engine.ts";
import {
  type AppendResult,
  type FileAppender,
  KEPT_FILES_PROBE,
  keptFilesBudget,
  localAppender,
  MAX_KEPT_FILES,
  spareDescriptors,
  SyncAppender,
} from "../src/batch/file_appends.ts";
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

Deno.test("deflateRawReusing: every input in turn deflates alone (it inflates to itself), as long as deflateRawSync's, also beyond 16 KiB of output", () => {
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
        // Not always fresh's bytes (a reset context keeps its window): the same text alone.
        const reused = deflateRawReusing(input, level, final);
        assert.deepEqual(
          new Uint8Array(inflateRawSync(reused, { finishFlush: flush })),
          input,
          `${lines} lines, level ${level}`,
        );
        assert.ok(
          Math.abs(reused.length - fresh.length) <= 16,
          `${reused.length} against ${fresh.length} bytes`,
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
  const appender = workerAppender(pool, { hereBytes: 0 });
  const [result] = await appender.append([{
    path,
    at: 5,
    truncate: false,
    parts: [encoder.encode("more")],
  }]);
  crcs(result);
  assert.equal(await Deno.readTextFile(path), "kept|more");
});

Deno.test("workerAppender writes on the main thread when the pool throws instead of rejecting", async () => {
  await using tmp = await tempDir();
  using pool = new GzipPool({ level: 5 });
  // As when the copy for the worker cannot be allocated, or a worker cannot start.
  pool.appendFiles = () => {
    throw new RangeError("Array buffer allocation failed");
  };
  const path = join(tmp.path, "b.part");
  const appender = workerAppender(pool, { hereBytes: 0 });
  const [result] = await appender.append([{
    path,
    at: 0,
    truncate: false,
    parts: [encoder.encode("all")],
  }]);
  assert.deepEqual(crcs(result), [crc32("all") >>> 0]);
  assert.equal(await Deno.readTextFile(path), "all");
});

Deno.test("SyncAppender keeps up to `keep` files open, least recently used closed first, and a file closed after its last append", async () => {
  await using tmp = await tempDir();
  const appender = new SyncAppender({ keep: 2 });
  const path = (name: string) => join(tmp.path, `${name}.part`);
  const append = (name: string, text: string, options: { at: number; last?: boolean }) =>
    appender.appendNow([{
      path: path(name),
      at: options.at,
      truncate: false,
      last: options.last,
      parts: [encoder.encode(text)],
    }]);
  assert.deepEqual(append("a", "a1", { at: 0 }).map(crcs), [[crc32("a1") >>> 0]]);
  append("b", "b1", { at: 0 });
  assert.equal(appender.openFiles, 2);
  append("a", "a2", { at: 2 }); // a is now the most recently used
  append("c", "c1", { at: 0 }); // over keep: b, the least recently used, is closed
  assert.equal(appender.openFiles, 2);
  append("b", "b2", { at: 2 }); // opened again, and appended to; a is closed
  append("c", "c2", { at: 2, last: true });
  assert.equal(appender.openFiles, 1, "c closed after its last append");
  for (const [name, text] of [["a", "a1a2"], ["b", "b1b2"], ["c", "c1c2"]]) {
    assert.equal(await Deno.readTextFile(path(name)), text);
  }
  // A torn append: cut back to `at` through the open file, then appended at the new end.
  await Deno.writeFile(path("b"), encoder.encode("partial"), { append: true });
  const [torn] = appender.appendNow([{
    path: path("b"),
    at: 4,
    truncate: true,
    parts: [encoder.encode("b3"), encoder.encode("b4")],
  }]);
  assert.deepEqual(crcs(torn), [crc32("b3") >>> 0, crc32("b4") >>> 0]);
  assert.equal(await Deno.readTextFile(path("b")), "b1b2b3b4");
  // A failure is that file's result alone; the others are written.
  const [failed, written] = appender.appendNow([
    {
      path: join(tmp.path, "no", "dir.part"),
      at: 0,
      truncate: false,
      parts: [encoder.encode("x")],
    },
    { path: path("d"), at: 0, truncate: false, parts: [encoder.encode("d1")] },
  ]);
  assert.ok("error" in failed && failed.error instanceof Deno.errors.NotFound);
  crcs(written);
  appender.close();
  assert.equal(appender.openFiles, 0);
  // The test's resource check fails on any file left open.
});

Deno.test("SyncAppender passing when full keeps the files it has and writes newcomers through; idle ones are closed", async () => {
  await using tmp = await tempDir();
  let now = 0;
  const appender = new SyncAppender({ keep: 2, whenFull: "pass", idleMs: 10_000, now: () => now });
  const path = (name: string) => join(tmp.path, `${name}.part`);
  const flush = (names: string[], text: string) =>
    names.map((name) =>
      appender.write({ path: path(name), at: 0, truncate: false, parts: [encoder.encode(text)] })
    );
  // Three files in turn, every flush in the same order: the first two stay open throughout.
  for (const text of ["1", "2", "3"]) {
    flush(["a", "b", "c"], text);
    assert.equal(appender.openFiles, 2);
  }
  for (const name of ["a", "b", "c"]) assert.equal(await Deno.readTextFile(path(name)), "123");
  // b's batch ends elsewhere (no last append here): after 10 s without a write it is closed.
  now = 6_000;
  flush(["a"], "4");
  now = 12_000;
  appender.closeIdle(); // closes b (idle 12 s); a (6 s) stays
  flush(["c"], "4"); // c takes b's place
  assert.equal(appender.openFiles, 2);
  now = 17_000;
  appender.closeIdle(); // a idle 11 s: closed
  flush(["c"], "5");
  assert.equal(appender.openFiles, 1);
  assert.equal(await Deno.readTextFile(path("c")), "12345");
  // The worker calls it once a second while it keeps any.
  now = 27_000;
  appender.closeIdle();
  assert.equal(appender.openFiles, 0);
});

Deno.test("spareDescriptors counts what it could open, closes all of it, and stops at what it wants", () => {
  let open = 0;
  let opened = 0;
  const limit = (n: number) => () => {
    if (open >= n) {
      throw Object.assign(new Error("Too many open files (os error 24)"), { code: "EMFILE" });
    }
    open++;
    opened++;
    return { close: () => void open-- };
  };
  assert.equal(spareDescriptors(1_000, limit(300)), 300);
  assert.equal(open, 0, "all closed again");
  opened = 0;
  assert.equal(spareDescriptors(100, limit(300)), 100);
  assert.equal(opened, 100, "no more opened than wanted");
  // Another failure before anything opened (no /dev/null): none to spare.
  assert.equal(
    spareDescriptors(100, () => {
      throw new Deno.errors.NotFound("no /dev/null");
    }),
    0,
  );
  // Really: this process has far more than 16 descriptors free.
  assert.equal(spareDescriptors(16), 16);
  // The budget: half of what is free beyond 64, at most MAX_KEPT_FILES.
  assert.equal(keptFilesBudget(40), 0);
  assert.equal(keptFilesBudget(236), 86);
  assert.equal(keptFilesBudget(4_050), 1_993);
  assert.equal(keptFilesBudget(KEPT_FILES_PROBE), MAX_KEPT_FILES);
});

const RUN_WITH_FEW_DESCRIPTORS = Deno.build.os === "linux";
if (!RUN_WITH_FEW_DESCRIPTORS) {
  // deno-lint-ignore no-console
  console.warn(
    "file_appends_test: the test of running out of descriptors starts a child under bash's " +
      "`ulimit -n 64`, written for Linux; ignored on " + Deno.build.os,
  );
}

Deno.test({
  name:
    "out of descriptors, a SyncAppender lets go of the files it keeps and every append is still written",
  ignore: !RUN_WITH_FEW_DESCRIPTORS,
  async fn() {
    await using tmp = await tempDir();
    // A child with 64 descriptors in all (soft and hard, so Deno cannot raise it), keeping up to
    // 1,000 files: it runs out after a few dozen, and must write all 100 anyway.
    const script = join(tmp.path, "few.ts");
    await Deno.writeTextFile(
      script,
      `import { spareDescriptors, SyncAppender } from ${
        JSON.stringify(new URL("../src/batch/file_appends.ts", import.meta.url).href)
      };
const dir = Deno.args[0];
const spare = spareDescriptors(1_000);
const appender = new SyncAppender({ keep: 1_000, whenFull: "pass" });
const bytes = new TextEncoder().encode("x");
let failed = 0;
for (let round = 0; round < 2; round++) {
  for (let i = 0; i < 100; i++) {
    const [result] = appender.appendNow([{ path: dir + "/f" + i, at: round, truncate: false, parts: [bytes] }]);
    if ("error" in result) failed++;
  }
}
console.log(JSON.stringify({ spare, failed, open: appender.openFiles }));
appender.close();
`,
    );
    const out = await new Deno.Command("bash", {
      args: ["-c", 'ulimit -n 64 && exec "$0" run -A "$1" "$2"', Deno.execPath(), script, tmp.path],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    const { spare, failed, open } = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.ok(spare > 0 && spare < 64, `spare ${spare}`);
    assert.equal(failed, 0);
    assert.ok(open > 0 && open < 64, `open ${open}`);
    for (let i = 0; i < 100; i++) {
      assert.equal(await Deno.readTextFile(join(tmp.path, `f${i}`)), "xx", `f${i}`);
    }
  },
});

Deno.test({
  name:
    "the gzip worker keeps up to keepFiles batch files open between appends and closes one after its last",
  ignore: Deno.build.os !== "linux", // reads /proc/self/fd
  async fn() {
    await using tmp = await tempDir();
    using pool = new GzipPool({ level: 5, keepFiles: 2 });
    const path = (name: string) => join(tmp.path, `${name}.part`);
    /** Descriptors of this process (the worker is a thread of it) open on the test's files. */
    const openOnFiles = async () => {
      // Listed by a child: reading /proc/self/fd needs --allow-all, which the test task does not grant.
      const out = await new Deno.Command("ls", { args: ["-l", `/proc/${Deno.pid}/fd`] }).output();
      return new TextDecoder().decode(out.stdout).split("\n").filter((line) =>
        line.includes(`${tmp.path}/`)
      ).length;
    };
    const appendAll = (names: string[], text: string, last = false) =>
      pool.appendFiles(names.map((name) => ({
        path: path(name),
        at: 0,
        truncate: false,
        last,
        parts: [encoder.encode(text)],
      })));
    for (const result of await appendAll(["a", "b", "c"], "1")) crcs(result);
    assert.equal(await openOnFiles(), 2, "two kept, the third written through");
    await appendAll(["a", "b", "c"], "2");
    assert.equal(await openOnFiles(), 2);
    await appendAll(["a"], "3", true);
    assert.equal(await openOnFiles(), 1, "a closed after its last append");
    for (const [name, text] of [["a", "123"], ["b", "12"], ["c", "12"]]) {
      assert.equal(await Deno.readTextFile(path(name)), text);
    }
    await appendAll(["b"], "3", true);
    assert.equal(await openOnFiles(), 0);
  },
});

Deno.test("workerAppender appends a few small files on the calling thread and many on the worker", async () => {
  await using tmp = await tempDir();
  using pool = new GzipPool({ level: 5 });
  let messages = 0;
  const real = pool.appendFiles.bind(pool);
  pool.appendFiles = (appends) => {
    messages++;
    return real(appends);
  };
  const appender = workerAppender(pool);
  const appendsOf = (count: number, bytes: number) =>
    Array.from({ length: count }, (_, i) => ({
      path: join(tmp.path, `${count}-${i}.part`),
      at: 0,
      truncate: false,
      parts: [new Uint8Array(bytes).fill(97 + (i % 26))],
    }));
  for (const result of await appender.append(appendsOf(3, 1000))) crcs(result);
  assert.equal(messages, 0, "3 files of 1 KB: here");
  for (const result of await appender.append(appendsOf(40, 100))) crcs(result);
  assert.equal(messages, 1, "40 files: on the worker");
  for (const result of await appender.append(appendsOf(2, 100_000))) crcs(result);
  assert.equal(messages, 2, "200 KB: on the worker");
  for (const [name, bytes] of [["3-2", 1000], ["40-39", 100], ["2-1", 100_000]] as const) {
    assert.equal((await Deno.readFile(join(tmp.path, `${name}.part`))).length, bytes, name);
  }
  appender.close?.();
});

/**
 * Every file of a journal after a run of 3 streams, 6 flushes and a seal,
 * written through `appender`; `hereBytes` as in `workerDeflater`.
 */
async function journalWith(
  dir: string,
  appender: FileAppender,
  pool: GzipPool,
  hereBytes?: number,
) {
  const journal = await Journal.start(dir, { flushMs: 60_000, now: () => 1_000, appender });
  const batcher = new Batcher({
    batchMs: 60_000,
    maxLines: 10_000,
    planKey: (stream, first, seq) => `p/${stream}/${first}_${seq}.ndjson.gz`,
    observer: journal,
    deflater: workerDeflater(pool, { hereBytes }),
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

Deno.test("a journal written through the worker holds the same files and text as the one written on the main thread", async () => {
  await using tmp = await tempDir();
  using pool = new GzipPool({ level: 5 });
  const here = await journalWith(join(tmp.path, "here"), localAppender(), pool);
  const worker = workerAppender(pool, { hereBytes: 0 });
  const there = await journalWith(join(tmp.path, "worker"), worker, pool, 0);
  // The default: flushes this small are compressed and appended on the calling thread.
  const small = await journalWith(join(tmp.path, "small"), workerAppender(pool), pool);
  assert.deepEqual([...there.contents.keys()], [...here.contents.keys()]);
  assert.ok(there.contents.size >= 4, "three batch files and a segment");
  // The same batch files with the same text (their deflate bytes may differ: a reset
  // context is not always a fresh one byte for byte, deflate_engine.ts).
  const texts = (contents: Map<string, Uint8Array>) =>
    new Map(
      [...contents].filter(([name]) => name.endsWith(".gz.part")).map((
        [name, bytes],
      ) => [name, new TextDecoder().decode(gunzipSync(bytes))]),
    );
  assert.deepEqual(texts(there.contents), texts(here.contents));
  assert.deepEqual(texts(small.contents), texts(here.contents));
  // Each sealed batch's file is its object: one gzip member of exactly its lines.
  for (const [i, batch] of there.sealed.entries()) {
    const file = there.files[i];
    assert.ok(file, `batch ${batch.key} has its file`);
    const text = new TextDecoder().decode(gunzipSync(await Deno.readFile(file.path)));
    assert.deepEqual(text.trimEnd().split("\n"), there.lines.get(batch.stream));
  }
});

Deno.test("only a file's first append (at 0) creates it: a later one to a removed file fails, on both appenders, and makes nothing", async () => {
  await using tmp = await tempDir();
  using pool = new GzipPool({ level: 5 });
  const parts = [encoder.encode("later bytes")];
  // (A file kept open is written through its descriptor: removed, it is read back at seal.)
  const sync = new SyncAppender({ keep: 0 });
  const appenders: Array<[string, FileAppender]> = [
    ["here", localAppender()],
    ["worker", { append: (appends) => pool.appendFiles(appends) }],
    ["sync", sync],
  ];
  for (const [name, appender] of appenders) {
    const path = join(tmp.path, `${name}.part`);
    const [first] = await appender.append([{ path, at: 0, truncate: false, parts }]);
    assert.ok("crcs" in first, name);
    await Deno.remove(path);
    // Written at 11 by the records, it would land at 0 of a new file.
    const [later] = await appender.append([{ path, at: 11, truncate: false, parts }]);
    assert.ok("error" in later && later.error instanceof Deno.errors.NotFound, name);
    await assert.rejects(() => Deno.stat(path), Deno.errors.NotFound, name);
    const [torn] = await appender.append([{ path, at: 11, truncate: true, parts }]);
    assert.ok("error" in torn && torn.error instanceof Deno.errors.NotFound, name);
    await assert.rejects(() => Deno.stat(path), Deno.errors.NotFound, name);
  }
});
