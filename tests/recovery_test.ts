/**
 * Recovery never replaces an object that exists: a batch rebuilt from the
 * crash journal may be shorter than the copy stored before the crash (its
 * seal record never reached the disk), so it is stored only where its key
 * is absent — by the local sink, the S3 sink, the uploader and the spool.
 */

import assert from "node:assert/strict";
import { gunzipSync } from "node:zlib";
import { Batcher } from "../src/batch/batcher.ts";
import { dataLine } from "../src/archive/encode.ts";
import { Journal, recoverJournal } from "../src/store/journal.ts";
import { startDrainer } from "../src/store/drainer.ts";
import { localSink } from "../src/store/local.ts";
import { s3Sink } from "../src/store/s3.ts";
import type { ObjectMeta } from "../src/archive/meta.ts";
import { decodeSpoolFile, encodeSpoolFile, Spool } from "../src/store/spool.ts";
import { type SettledHow, Uploader } from "../src/store/uploader.ts";
import { TEST_BUCKET, TEST_CREDENTIALS, TestS3 } from "./support/s3.ts";
import { listFiles, tempDir } from "./support/temp.ts";
import { waitFor } from "./support/wait.ts";

const meta: ObjectMeta = { messages: 2, events: 0, firstRecvTs: 1, lastRecvTs: 2 };
const STREAM = "btcusdt@depth20@100ms";
const KEY = `p/stream=${STREAM}/1000_0.ndjson.gz`;

function describe(line: string) {
  const value = JSON.parse(line) as { recv_ts: number; data?: unknown };
  return { recvTs: value.recv_ts, isData: value.data !== undefined };
}

Deno.test("local sink putNew stores a new key and leaves an existing object and sidecar alone", async () => {
  await using tmp = await tempDir();
  const sink = localSink(tmp.path);
  assert.equal(await sink.putNew("p/a.ndjson.gz", new Uint8Array([1, 2]), meta), true);
  assert.equal(
    await sink.putNew("p/a.ndjson.gz", new Uint8Array([9]), { ...meta, messages: 1 }),
    false,
  );
  assert.deepEqual([...await Deno.readFile(`${tmp.path}/p/a.ndjson.gz`)], [1, 2]);
  const sidecar = JSON.parse(await Deno.readTextFile(`${tmp.path}/p/a.ndjson.gz.meta.json`));
  assert.equal(sidecar.messages, "2");
  assert.deepEqual(await listFiles(tmp.path), ["p/a.ndjson.gz", "p/a.ndjson.gz.meta.json"]);
});

Deno.test({
  name: "S3 sink putNew stores a new key and never replaces an existing object",
  sanitizeResources: false,
  async fn() {
    await using s3 = await TestS3.start();
    const sink = s3Sink({
      bucket: TEST_BUCKET,
      prefix: "p",
      region: "us-east-1",
      endpoint: s3.endpoint,
      forcePathStyle: true,
    }, {
      client: new (await import("@aws-sdk/client-s3")).S3Client({
        region: "us-east-1",
        endpoint: s3.endpoint,
        forcePathStyle: true,
        credentials: TEST_CREDENTIALS,
        maxAttempts: 1,
      }),
    });
    try {
      assert.equal(await sink.putNew("p/a.ndjson.gz", new Uint8Array([1, 2, 3]), meta), true);
      assert.equal(await sink.putNew("p/a.ndjson.gz", new Uint8Array([7]), meta), false);
      assert.deepEqual([...(await s3.get("p/a.ndjson.gz")).body], [1, 2, 3]);
    } finally {
      sink.close();
    }
  },
});

/**
 * The bug: the journal stopped writing (disk full) after a batch's first
 * lines; the batch was still sealed and stored whole; the process died.
 * Recovery rebuilds a shorter copy without its seal.
 */
async function shortenedJournal(dir: string): Promise<{ whole: Uint8Array }> {
  const journal = await Journal.start(dir, { flushMs: 60_000 });
  const batcher = new Batcher({
    batchMs: 60_000,
    maxLines: 1000,
    planKey: () => KEY,
    observer: journal,
  });
  for (let i = 0; i < 3; i++) {
    batcher.add(STREAM, {
      text: dataLine(1000 + i, STREAM, `{"u":${i}}`),
      recvTs: 1000 + i,
      isData: true,
    }, 0);
  }
  await journal.flush();
  // What follows never reaches the journal's file (as on a full disk).
  const file = (await listFiles(dir))[0];
  const kept = await Deno.readFile(`${dir}/${file}`);
  for (let i = 3; i < 10; i++) {
    batcher.add(STREAM, {
      text: dataLine(1000 + i, STREAM, `{"u":${i}}`),
      recvTs: 1000 + i,
      isData: true,
    }, 0);
  }
  const [sealed] = batcher.sealAll();
  await journal.close();
  await Deno.writeFile(`${dir}/${file}`, kept);
  return { whole: await sealed.body.finish() };
}

Deno.test("a batch recovered shorter than the stored object is dropped, the object stays byte-identical", async () => {
  await using tmp = await tempDir();
  const journalDir = `${tmp.path}/journal`;
  const archive = `${tmp.path}/archive`;
  const { whole } = await shortenedJournal(journalDir);
  const sink = localSink(archive);
  await sink.put(KEY, whole, meta);

  const recovered = await recoverJournal(journalDir, { describe });
  assert.equal(recovered.batches.length, 1);
  assert.equal(recovered.batches[0].key, KEY);
  assert.equal(recovered.batches[0].meta.messages, 3, "the journal held only 3 lines");
  const settled: SettledHow[] = [];
  const uploader = new Uploader({
    sink,
    concurrency: 1,
    onSettled: (_batch, how) => settled.push(how),
  });
  uploader.submit(recovered.batches[0], { keep: true });
  assert.deepEqual(await uploader.flush(AbortSignal.timeout(5000)), []);
  assert.deepEqual(settled, ["existed"]);
  assert.deepEqual(await Deno.readFile(`${archive}/${KEY}`), whole);
  const lines = new TextDecoder().decode(gunzipSync(whole)).trim().split("\n");
  assert.equal(lines.length, 10);
});

Deno.test("a recovered batch absent from the store is stored, with its recovered line", async () => {
  await using tmp = await tempDir();
  const journalDir = `${tmp.path}/journal`;
  await shortenedJournal(journalDir);
  const sink = localSink(`${tmp.path}/archive`);
  const recovered = await recoverJournal(journalDir, { describe });
  const settled: SettledHow[] = [];
  const uploader = new Uploader({
    sink,
    concurrency: 1,
    onSettled: (_b, how) => settled.push(how),
  });
  uploader.submit(recovered.batches[0], { keep: true });
  await uploader.flush(AbortSignal.timeout(5000));
  assert.deepEqual(settled, ["stored"]);
  const text = new TextDecoder().decode(
    gunzipSync(await Deno.readFile(`${tmp.path}/archive/${KEY}`)),
  );
  const lines = text.trim().split("\n");
  assert.equal(lines.length, 4);
  assert.equal(JSON.parse(lines[3]).event, "recovered");
});

Deno.test("a recovered batch that went to the spool is still never stored over an existing object", async () => {
  await using tmp = await tempDir();
  const journalDir = `${tmp.path}/journal`;
  const { whole } = await shortenedJournal(journalDir);
  const recovered = await recoverJournal(journalDir, { describe });
  const spool = await Spool.open(`${tmp.path}/spool`, { maxBytes: 1 << 20 });
  // S3 down at start-up: the recovered batch is spooled.
  const down = {
    kind: "s3" as const,
    location: "down",
    put: () => Promise.reject(new Error("connection refused")),
    putNew: () => Promise.reject(new Error("connection refused")),
  };
  const settled: SettledHow[] = [];
  const uploader = new Uploader({
    sink: down,
    spool,
    concurrency: 1,
    maxAttempts: 1,
    onSettled: (_b, how) => settled.push(how),
  });
  uploader.submit(recovered.batches[0], { keep: true });
  await uploader.flush(AbortSignal.timeout(5000));
  assert.deepEqual(settled, ["spooled"]);
  const [name] = spool.names();
  assert.equal((await spool.read(name)).ifAbsent, true);

  // Back up, and the whole object is there already.
  const sink = localSink(`${tmp.path}/archive`);
  await sink.put(KEY, whole, meta);
  const stop = new AbortController();
  const drainer = startDrainer({ spool, sink, signal: stop.signal, idleMs: 10 });
  await waitFor(() => spool.count === 0, 5000, "the spool to drain");
  stop.abort();
  await drainer.done;
  assert.deepEqual(await Deno.readFile(`${tmp.path}/archive/${KEY}`), whole);
});

Deno.test("spool files keep the ifAbsent mark, and files without it decode as before", () => {
  const body = new Uint8Array([1, 2, 3]);
  const marked = decodeSpoolFile(encodeSpoolFile({ key: "k", body, meta, ifAbsent: true }));
  assert.equal(marked.ifAbsent, true);
  const plain = decodeSpoolFile(encodeSpoolFile({ key: "k", body, meta }));
  assert.equal(plain.ifAbsent, undefined);
  assert.ok(
    !new TextDecoder().decode(encodeSpoolFile({ key: "k", body, meta })).includes("ifAbsent"),
  );
});
