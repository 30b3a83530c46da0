/**
 * A sealed batch's object is written once: the crash journal's batch file
 * is the finished gzip object, and the local sink links it into the
 * archive instead of writing its bytes again (store/journal.ts, local.ts).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { Batcher } from "../src/batch/batcher.ts";
import { dataLine } from "../src/archive/encode.ts";
import { Journal } from "../src/store/journal.ts";
import { localSink } from "../src/store/local.ts";
import type { Sink } from "../src/store/sink.ts";
import { type SettledHow, Uploader } from "../src/store/uploader.ts";
import { listFiles, tempDir } from "./support/temp.ts";

const STREAM = "btcusdt@depth20@100ms";
const KEY = `p/stream=${STREAM}/1000_0.ndjson.gz`;

async function sealedBatch(journal: Journal) {
  const batcher = batcherOn(journal);
  const lines: string[] = [];
  for (let i = 0; i < 50; i++) {
    const text = dataLine(1000 + i, STREAM, `{"u":${i}}`);
    batcher.add(STREAM, { text, recvTs: 1000 + i, isData: true }, 0);
    lines.push(text);
    if (i % 10 === 9) await journal.flush();
  }
  const [batch] = batcher.sealAll();
  return { batch, lines };
}

async function store(
  sink: Sink,
  journal: Journal,
  batch: Awaited<ReturnType<typeof sealedBatch>>["batch"],
) {
  const settled: SettledHow[] = [];
  const uploader = new Uploader({
    sink,
    concurrency: 1,
    onSettled: (b, how) => {
      settled.push(how);
      journal.settled(b.key);
    },
  });
  uploader.submit(batch);
  assert.deepEqual(await uploader.flush(AbortSignal.timeout(5000)), []);
  return settled;
}

Deno.test("the local sink links the journal's finished batch file into the archive: the same file, its bytes written once", async () => {
  await using tmp = await tempDir();
  const journal = await Journal.start(join(tmp.path, "journal"), { flushMs: 60_000 });
  const { batch, lines } = await sealedBatch(journal);
  const file = await batch.durable;
  assert.ok(file, "a whole batch file");
  const before = await Deno.stat(file.path);
  assert.equal(before.size, file.bytes);
  assert.deepEqual(await store(localSink(join(tmp.path, "archive")), journal, batch), ["stored"]);
  const archived = join(tmp.path, "archive", KEY);
  assert.equal((await Deno.stat(archived)).ino, before.ino, "linked, not copied");
  const text = new TextDecoder().decode(gunzipSync(await Deno.readFile(archived)));
  assert.deepEqual(text.trim().split("\n"), lines);
  await journal.close();
  // Settled: the journal dropped its own name; the archive keeps the object.
  assert.deepEqual(await listFiles(join(tmp.path, "journal")), []);
  assert.ok((await Deno.stat(archived)).isFile);
});

Deno.test("a sink without putFile stores the same object from its bytes", async () => {
  await using tmp = await tempDir();
  const journal = await Journal.start(join(tmp.path, "journal"), { flushMs: 60_000 });
  const { batch } = await sealedBatch(journal);
  const file = await batch.durable;
  const whole = await Deno.readFile(file!.path);
  const puts: Uint8Array[] = [];
  const sink: Sink = {
    kind: "s3",
    location: "memory",
    put: (_key, body) => {
      puts.push(body);
      return Promise.resolve();
    },
    putNew: () => Promise.reject(new Error("not for a live batch")),
  };
  assert.deepEqual(await store(sink, journal, batch), ["stored"]);
  assert.deepEqual(puts, [whole]);
  await journal.close();
});

Deno.test("pieces written to the journal leave the body's memory and are read back when the object is needed as bytes", async () => {
  await using tmp = await tempDir();
  const journal = await Journal.start(join(tmp.path, "journal"), { flushMs: 60_000 });
  const batcher = batcherOn(journal);
  const lines: string[] = [];
  for (let i = 0; i < 200; i++) {
    const text = dataLine(1000 + i, STREAM, `{"u":${i},"pad":"${"x".repeat(i % 50)}"}`);
    batcher.add(STREAM, { text, recvTs: 1000 + i, isData: true }, 0);
    lines.push(text);
    if (i % 20 === 19) await journal.flush();
  }
  // Ten pieces written: the open batch holds only its (empty) chunk of raw text.
  assert.ok(batcher.openBytes <= 16 * 1024, `${batcher.openBytes} bytes held`);
  const [batch] = batcher.sealAll();
  await batch.durable;
  assert.deepEqual(await batch.body.lines(), lines);
  const body = await batch.body.finish();
  assert.deepEqual(new TextDecoder().decode(gunzipSync(body)).trim().split("\n"), lines);
  await journal.close();
});

/** One stream's batches of up to 1,000 lines under KEY, observed by `journal`. */
function batcherOn(journal: Journal): Batcher {
  return new Batcher({ batchMs: 60_000, maxLines: 1000, planKey: () => KEY, observer: journal });
}
