import assert from "node:assert/strict";
import { join } from "node:path";
import { Batcher, type BatchLine, type SealedBatch } from "../src/batch/batcher.ts";
import { dataLine, eventLine, gzipLines } from "../src/archive/encode.ts";
import { planKey } from "../src/archive/keys.ts";
import { Journal, recoverJournal, removeSettledFiles } from "../src/store/journal.ts";
import { type FileAppender, localAppender } from "../src/batch/file_appends.ts";
import { type Deflater, localDeflater } from "../src/batch/body.ts";
import { gunzipSync } from "node:zlib";
import { listFiles, tempDir } from "./support/temp.ts";

/** What the collector tells the journal about an archive line (as cli/run.ts does). */
function describe(line: string) {
  const value = JSON.parse(line) as { recv_ts?: unknown; data?: Record<string, unknown> };
  if (typeof value.recv_ts !== "number") throw new Error("archive line without recv_ts");
  const isData = typeof value.data === "object" && value.data !== null;
  const data = isData ? value.data! : {};
  const id = (v: unknown) => (typeof v === "number" ? v : undefined);
  return {
    recvTs: value.recv_ts,
    isData,
    firstUpdateId: id(data.U) ?? id(data.lastUpdateId),
    lastUpdateId: id(data.u) ?? id(data.lastUpdateId),
  };
}

const recover = (dir: string) => recoverJournal(dir, { describe });

const diff = (recvTs: number, stream: string, first: number, last: number): BatchLine => ({
  text: dataLine(recvTs, stream, JSON.stringify({ e: "depthUpdate", U: first, u: last, b: [] })),
  recvTs,
  isData: true,
  firstUpdateId: first,
  lastUpdateId: last,
});

const snapshot = (recvTs: number, stream: string, lastUpdateId: number): BatchLine => ({
  text: dataLine(recvTs, stream, JSON.stringify({ lastUpdateId, bids: [["1.0", "2"]] })),
  recvTs,
  isData: true,
  firstUpdateId: lastUpdateId,
  lastUpdateId,
});

const event = (recvTs: number, stream: string): BatchLine => ({
  text: eventLine(recvTs, stream, "gap", { expected: 5, got: 9 }),
  recvTs,
  isData: false,
});

/** A batcher whose keys are planned as the collector plans them (archive/keys.ts). */
function plannedBatcher(journal: Journal): Batcher {
  return new Batcher({
    batchMs: 60_000,
    maxLines: 1000,
    planKey: (stream, firstRecvTs, seq) =>
      planKey({
        prefix: "p",
        market: "spot",
        streamType: "depth@100ms",
        symbol: `${stream.toUpperCase()}USDT`,
        firstRecvTs,
        instanceId: "box",
        seq,
      }),
    observer: journal,
  });
}

function batcherFor(journal: Journal, maxLines = 1000, deflater?: Deflater): Batcher {
  return new Batcher({
    batchMs: 60_000,
    maxLines,
    planKey: (stream, first, seq) => `p/stream=${stream}/${first}_${seq}.ndjson.gz`,
    observer: journal,
    deflater,
  });
}

/** A deflater whose pieces complete only once `open` is called, as on a busy gzip worker. */
function gatedDeflater(): { deflater: Deflater; open: () => void } {
  const local = localDeflater(5);
  const gate = Promise.withResolvers<void>();
  const deflater: Deflater = {
    level: 5,
    deflateRaw: async (chunks, final) => {
      const bytes = await local.deflateRaw(chunks.map((c) => c.slice()), final);
      await gate.promise;
      return bytes;
    },
  };
  return { deflater, open: () => gate.resolve() };
}

/** The journal's segments (its batch files left out). */
const segments = async (dir: string) =>
  (await listFiles(dir)).filter((name) => name.endsWith(".jnl"));

/** A sealed batch without its `durable` promise, as recovery returns it. */
const plain = async ({ key, stream, body, meta, textBytes }: SealedBatch) => ({
  key,
  stream,
  lines: await body.lines(),
  meta,
  textBytes,
});

/** What a process killed now leaves of the journal in `from`: its files, copied to a new `to`. */
async function copyAsCrashed(from: string, to: string): Promise<void> {
  await Deno.mkdir(to);
  for (const name of await listFiles(from)) await Deno.copyFile(join(from, name), join(to, name));
}

/** Runs `fn` with a journal in `dir`, closing it afterwards whatever happens. */
async function withJournal(
  dir: string,
  options: Parameters<typeof Journal.start>[1],
  fn: (journal: Journal) => Promise<void>,
): Promise<void> {
  const journal = await Journal.start(dir, options);
  try {
    await fn(journal);
  } finally {
    await journal.close();
  }
}

Deno.test("earlier runs' files removed in part (a stop or a crash part-way) are never read as a journal", async () => {
  await using tmp = await tempDir();
  let clock = 1_700_000_000_000;
  const rekeyed: string[] = [];
  const recoverAll = () =>
    recoverJournal(tmp.path, {
      describe,
      rekey: (_lines, index) => {
        rekeyed.push(`re/${index}`);
        return { key: `re/${index}`, stream: "a" };
      },
    });
  // A run that died with batches open across three segments.
  const journal = await Journal.start(tmp.path, {
    flushMs: 10,
    segmentMs: 1000,
    now: () => clock,
    monotonic: () => clock,
  });
  const batcher = batcherFor(journal);
  for (let i = 1; i <= 3; i++) {
    batcher.add("a", diff(i, "a", i, i), 0);
    batcher.add("b", diff(i, "b", i, i), 0);
    clock += 1000;
    await journal.flush();
  }
  await journal.close(); // batches unsettled: its files stay, as after a crash
  const first = await recoverAll();
  assert.equal(first.batches.length, 2);
  assert.ok((await segments(tmp.path)).length >= 3);
  // Their batches settled; the removal lists the files, and is cut short after the first.
  const names = first.files.map((path) => path.slice(tmp.path.length + 1));
  await Deno.writeTextFile(join(tmp.path, "settled.list"), names.join("\n") + "\n");
  await Deno.remove(first.files[0]);
  const again = await recoverAll();
  assert.deepEqual([again.batches.length, rekeyed], [0, []], "nothing rebuilt, nothing rekeyed");
  assert.deepEqual(await listFiles(tmp.path), [], "the rest and the list are gone");

  // A listed name that cannot be removed (here a directory that is not empty) does not stop
  // the start: it is logged, left with the list, and tried again at the next start.
  await Deno.mkdir(join(tmp.path, "000000000000001-000000001.v3.jnl", "x"), { recursive: true });
  await Deno.writeTextFile(join(tmp.path, "settled.list"), "000000000000001-000000001.v3.jnl\n");
  assert.equal((await recoverAll()).batches.length, 0);
  assert.ok(await Deno.stat(join(tmp.path, "settled.list")).then(() => true), "the list stays");
  await Deno.remove(join(tmp.path, "000000000000001-000000001.v3.jnl"), { recursive: true });
  await recoverAll();
  assert.deepEqual(await listFiles(tmp.path), [], "the next start finishes");

  // Not cut short: every file and the list go.
  const next = await Journal.start(tmp.path, { flushMs: 10, now: () => clock });
  batcherFor(next).add("c", diff(9, "c", 9, 9), 0);
  await next.flush();
  await next.close();
  const left = await recoverAll();
  assert.equal(left.batches.length, 1);
  await removeSettledFiles(left.files);
  assert.deepEqual(await listFiles(tmp.path), []);
});

Deno.test("a seal's flush writes the sealed batch; the other batches' new text waits for the next flush of all", async () => {
  await using tmp = await tempDir();
  const journal = await Journal.start(tmp.path, { flushMs: 1_000_000 });
  const batcher = batcherFor(journal);
  const sizes = async () => {
    const files = (await listFiles(tmp.path)).filter((f) => f.endsWith(".gz.part"));
    return Promise.all(files.map(async (f) => (await Deno.stat(join(tmp.path, f))).size));
  };
  batcher.add("a", diff(1, "a", 1, 1), 0);
  batcher.add("b", diff(1, "b", 1, 1), 0);
  await journal.flush();
  const [a1, b1] = await sizes();
  batcher.add("a", diff(2, "a", 2, 2), 0);
  batcher.add("b", diff(2, "b", 2, 2), 0);
  const sealed = batcher.sealStream("a")!;
  assert.ok(await sealed.durable, "the sealed batch's file is whole");
  const [a2, b2] = await sizes();
  assert.ok(a2 > a1, "the sealed batch got its last piece and its end");
  assert.equal(b2, b1, "the open batch's new text is not cut at another batch's seal");
  await journal.flush();
  const [, b3] = await sizes();
  assert.ok(b3 > b2, "the next flush of all writes it");
  await journal.close();
  // Neither was settled: both come back whole.
  const rebuilt = (await recover(tmp.path)).batches;
  assert.deepEqual(rebuilt.map((batch) => batch.stream).sort(), ["a", "b"]);
  for (const batch of rebuilt) {
    const data = (await batch.body.lines()).filter((line) => line.includes('"data":'));
    assert.equal(data.length, 2, batch.stream);
  }
});

Deno.test("journal recovers an open batch with its lines and a final recovered event under the same key", async () => {
  await using tmp = await tempDir();
  const dir = join(tmp.path, "journal");
  let key = "";
  const added: string[] = [];
  await withJournal(dir, { flushMs: 10 }, async (journal) => {
    const batcher = batcherFor(journal);
    for (
      const line of [
        diff(100, "s", 1, 3),
        event(150, "s"),
        diff(300, "s", 4, 6),
        diff(200, "s", 7, 9),
      ]
    ) {
      assert.equal(batcher.add("s", line, 0), undefined);
      added.push(line.text);
    }
    key = `p/stream=s/100_0.ndjson.gz`;
    await journal.flush();
    // The process "dies" here: nothing is sealed, nothing settled.
    const { batches, files, badRecords } = await recover(dir);
    assert.equal(badRecords, 0);
    // The segment and the batch's file of pieces.
    assert.equal(files.length, 2);
    assert.ok(files.every((f) => f.startsWith(dir)));
    assert.equal(batches.length, 1);
    const [batch] = batches;
    assert.equal(batch.key, key);
    assert.equal(batch.stream, "s");
    assert.deepEqual((await batch.body.lines()).slice(0, 4), added);
    assert.equal(batch.body.lineCount, 5);
    const last = JSON.parse((await batch.body.lines())[4]);
    assert.equal(last.event, "recovered");
    assert.equal(last.stream, "s");
    // The last line's receive time, not the greatest and not "now".
    assert.equal(last.recv_ts, 200);
    assert.equal(last.lines, 4);
    assert.deepEqual(batch.meta, {
      messages: 3,
      snapshots: 0,
      events: 2,
      firstRecvTs: 100,
      lastRecvTs: 300,
      firstUpdateId: 1,
      lastUpdateId: 9,
    });
    assert.equal(batch.textBytes, (await batch.body.lines()).reduce((n, l) => n + l.length + 1, 0));
  });
});

Deno.test("journal recovers a sealed but unsettled batch exactly as it was sealed", async () => {
  await using tmp = await tempDir();
  await withJournal(tmp.path, { flushMs: 10 }, async (journal) => {
    const batcher = batcherFor(journal, 4);
    batcher.add("s", event(90, "s"), 0);
    batcher.add("s", snapshot(100, "s", 50), 0);
    batcher.add("s", diff(120, "s", 51, 55), 0);
    const sealed = batcher.add("s", diff(110, "s", 56, 60), 0);
    assert.ok(sealed);
    await sealed.durable;
    const { batches } = await recover(tmp.path);
    assert.equal(batches.length, 1);
    assert.deepEqual(await plain(batches[0]), await plain(sealed));
    assert.ok(!(await batches[0].body.lines()).some((l) => l.includes('"recovered"')));
  });
});

Deno.test("journal does not recover a settled batch", async () => {
  await using tmp = await tempDir();
  await withJournal(tmp.path, { flushMs: 10 }, async (journal) => {
    const batcher = batcherFor(journal);
    batcher.add("a", diff(1, "a", 1, 1), 0);
    batcher.add("b", diff(2, "b", 1, 1), 0);
    const [a, b] = batcher.sealAll();
    await Promise.all([a.durable, b.durable]);
    journal.settled(a.key);
    batcher.add("c", diff(3, "c", 1, 1), 0);
    await journal.flush();
    const { batches } = await recover(tmp.path);
    assert.deepEqual(batches.map((x) => x.key), [b.key, "p/stream=c/3_0.ndjson.gz"]);
  });
});

Deno.test("a batch settled during a flush keeps its older segment until its settle record is written", async () => {
  await using tmp = await tempDir();
  let clock = 1_000;
  // Called at the flush's first look at the clock: whether a new segment is due,
  // after the flush's records are written, as an upload may end at any await.
  let duringFlush: (() => void) | undefined;
  const now = () => {
    const run = duringFlush;
    duringFlush = undefined;
    run?.();
    return clock;
  };
  await withJournal(
    tmp.path,
    { flushMs: 1_000_000, segmentMs: 100, now, monotonic: now },
    async (journal) => {
      const batcher = batcherFor(journal);
      batcher.add("b", diff(1, "b", 1, 1), 0); // B's first records: segment 0
      clock += 100;
      await journal.flush(); // then segment 1 starts
      batcher.add("b", diff(2, "b", 2, 2), 0);
      batcher.add("c", diff(3, "c", 1, 1), 0); // C keeps segment 1
      await journal.flush(); // B's second piece: segment 1
      const [b] = batcher.sealAll().filter((sealed) => sealed.stream === "b");
      assert.ok(await b.durable);
      await journal.flush(); // the seal's flush is over
      clock += 100;
      duringFlush = () => journal.settled(b.key); // B stored while the flush goes on
      await journal.flush();
      // Killed here, before the next flush writes B's `r`: B comes back whole under
      // its own key (storing it again puts the same bytes there), nothing is lost.
      const killed = await recoverJournal(tmp.path, {
        describe,
        rekey: (_lines, i) => ({ key: `rekeyed/${i}`, stream: "b" }),
      });
      assert.deepEqual(killed.batches.map((x) => x.key), [b.key, "p/stream=c/3_0.ndjson.gz"]);
      assert.deepEqual(await plain(killed.batches[0]), await plain(b));
      assert.deepEqual([killed.skipped, killed.unattributed], [[], 0]);
      await journal.flush(); // B's `r` written: segment 0 goes now
      assert.deepEqual((await recover(tmp.path)).batches.map((x) => x.key), [
        "p/stream=c/3_0.ndjson.gz",
      ]);
      assert.ok(!(await listFiles(tmp.path)).some((name) => name.endsWith("-000000000.v3.jnl")));
    },
  );
});

Deno.test("a batch whose file could not be read back once is read again the next time", async () => {
  await using tmp = await tempDir();
  await withJournal(tmp.path, { flushMs: 1_000_000 }, async (journal) => {
    const batcher = batcherFor(journal);
    batcher.add("a", diff(1, "a", 1, 1), 0);
    batcher.add("a", diff(2, "a", 2, 2), 0);
    await journal.flush(); // the pieces are in the batch file now, and leave memory
    const [a] = batcher.sealAll();
    const file = await a.durable;
    assert.ok(file);
    // Unreadable for a moment (as when out of descriptors): that read fails ...
    await Deno.rename(file.path, `${file.path}.away`);
    await assert.rejects(() => a.body.lines());
    await Deno.rename(`${file.path}.away`, file.path);
    // ... and the next one reads the file again instead of the failure.
    assert.equal((await a.body.lines()).length, 2);
  });
});

Deno.test("journal recovery is deterministic: the same journal twice gives identical batches", async () => {
  await using tmp = await tempDir();
  await withJournal(tmp.path, { flushMs: 10 }, async (journal) => {
    const batcher = batcherFor(journal, 3);
    for (let i = 0; i < 10; i++) batcher.add(i % 2 ? "x" : "y", diff(1000 + i, "s", i, i), 0);
    await journal.flush();
  });
  const first = await recover(tmp.path);
  await new Promise((resolve) => setTimeout(resolve, 5));
  const second = await recover(tmp.path);
  assert.equal(first.batches.length, 4);
  assert.deepEqual(second, first);
  for (const [i, batch] of first.batches.entries()) {
    assert.deepEqual(
      await gzipLines(await batch.body.lines(), 6),
      await gzipLines(await second.batches[i].body.lines(), 6),
    );
  }
});

Deno.test("journal recovery skips a torn final record, counts it and keeps the lines before it", async () => {
  await using tmp = await tempDir();
  const lines: string[] = [];
  let intact = 0;
  await withJournal(tmp.path, { flushMs: 60_000 }, async (journal) => {
    const batcher = batcherFor(journal);
    for (let i = 0; i < 4; i++) {
      const line = diff(10 + i, "s", i, i);
      batcher.add("s", line, 0);
      lines.push(line.text);
      if (i === 2) {
        await journal.flush();
        intact = Deno.statSync(join(tmp.path, (await segments(tmp.path))[0])).size;
      }
    }
    await journal.flush();
  });
  // The fourth line's piece record, cut by the crash: a bad record, and the
  // batch ends where its last intact piece does, marked as recovered there.
  const path = join(tmp.path, (await segments(tmp.path))[0]);
  const bytes = await Deno.readFile(path);
  assert.ok(bytes.length > intact + 20);
  await Deno.writeFile(path, bytes.subarray(0, intact + 20));
  const { batches, badRecords } = await recover(tmp.path);
  assert.equal(badRecords, 1);
  assert.equal(batches.length, 1);
  const recovered = await batches[0].body.lines();
  assert.deepEqual(recovered.slice(0, 3), lines.slice(0, 3));
  assert.equal(recovered.length, 4);
  assert.equal(JSON.parse(recovered[3]).event, "recovered");
  assert.equal(JSON.parse(recovered[3]).recv_ts, 12);
  assert.equal(batches[0].meta.messages, 3);
});

Deno.test("journal recovery turns the lines of a damaged piece into one exact dropped line and keeps the pieces around it", async () => {
  await using tmp = await tempDir();
  const lines = await threePieces(tmp.path);
  const [file] = (await listFiles(tmp.path)).filter((f) => f.endsWith(".gz.part"));
  const bytes = await Deno.readFile(join(tmp.path, file));
  const records = (await Deno.readTextFile(join(tmp.path, (await segments(tmp.path))[0])))
    .split("\n").map((r) => r.slice(9).split("\t")).filter((r) => r[0] === "p");
  assert.equal(records.length, 3);
  bytes[Number(records[1][2]) + 1] ^= 0x10; // a bit of the second piece
  await Deno.writeFile(join(tmp.path, file), bytes);
  const { batches } = await recover(tmp.path);
  const recovered = await batches[0].body.lines();
  assert.deepEqual(recovered.slice(0, 3), lines.slice(0, 3));
  assert.deepEqual(JSON.parse(recovered[3]), {
    recv_ts: 12,
    stream: "s",
    event: "dropped",
    reason: "journal damage",
    messages: 3,
    first_recv_ts: 12,
    last_recv_ts: 16,
  });
  assert.deepEqual(recovered.slice(4, 7), lines.slice(6, 9));
  assert.equal(JSON.parse(recovered[7]).event, "recovered");
  assert.equal(JSON.parse(recovered[7]).damaged_records, 3);
  assert.equal(recovered.length, 8);
  assert.equal(batches[0].meta.messages, 6);
});

Deno.test("journal recovery counts the lines of a damaged piece record from the records after it", async () => {
  await using tmp = await tempDir();
  const lines = await threePieces(tmp.path);
  const path = join(tmp.path, (await segments(tmp.path))[0]);
  const text = await Deno.readTextFile(path);
  const second = text.split("\n").filter((r) => r.slice(9).startsWith("p\t"))[1];
  // A digit of its offset changed: the CRC no longer matches.
  await Deno.writeTextFile(path, text.replace(second, second.replace("\tp\t0\t", "\tp\t0\t9")));
  const { batches, badRecords } = await recover(tmp.path);
  assert.equal(badRecords, 1);
  const recovered = await batches[0].body.lines();
  assert.deepEqual(recovered.slice(0, 3), lines.slice(0, 3));
  assert.equal(JSON.parse(recovered[3]).messages, 3);
  assert.deepEqual(recovered.slice(4, 7), lines.slice(6, 9));
});

Deno.test({
  name:
    "journal recovery ignores a torn final record even when it parses as another batch's record",
  async fn() {
    await using tmp = await tempDir();
    await withJournal(tmp.path, { flushMs: 10 }, async (journal) => {
      const batcher = batcherFor(journal);
      for (let i = 0; i <= 10; i++) batcher.add(`s${i}`, diff(100 + i, `s${i}`, i, i), 0);
      await journal.flush();
    });
    const [segment] = await listFiles(tmp.path);
    // The settle record of batch 10, cut after its first digit.
    await Deno.writeTextFile(join(tmp.path, segment), "0badc0de\tr\t1", { append: true });
    const { batches, badRecords } = await recover(tmp.path);
    assert.equal(batches.length, 11, "batch 1 must still be recovered");
    assert.equal(badRecords, 1);
  },
});

Deno.test("journal keeps batches of different runs apart although their ids repeat", async () => {
  await using tmp = await tempDir();
  await withJournal(tmp.path, { flushMs: 10, now: () => 1_000 }, async (journal) => {
    batcherFor(journal).add("s", diff(1, "s", 1, 1), 0);
    await journal.flush();
  });
  await withJournal(tmp.path, { flushMs: 10, now: () => 2_000 }, async (journal) => {
    batcherFor(journal).add("s", diff(2, "s", 2, 2), 0);
    await journal.flush();
  });
  const { batches, files } = await recover(tmp.path);
  assert.equal(files.length, 4, "two segments, two batch files");
  assert.deepEqual(batches.map((b) => [b.key, b.body.lineCount]), [
    ["p/stream=s/1_0.ndjson.gz", 2],
    ["p/stream=s/2_0.ndjson.gz", 2],
  ]);
});

Deno.test("journal rotates segments and deletes one only when its batches settled, oldest first, never the current", async () => {
  await using tmp = await tempDir();
  const start = 1_700_000_000_000;
  let clock = start;
  const seg = (n: number) =>
    `${String(start).padStart(15, "0")}-${String(n).padStart(9, "0")}.v3.jnl`;
  await withJournal(
    tmp.path,
    { flushMs: 10, segmentMs: 1000, now: () => clock, monotonic: () => clock },
    async (journal) => {
      const rotate = async () => {
        clock += 1000;
        await journal.flush();
      };
      const batcher = batcherFor(journal);
      batcher.add("a", diff(1, "a", 1, 1), 0); // a: segment 0
      await journal.flush();
      assert.deepEqual(await segments(tmp.path), [seg(0)]);

      await rotate();
      batcher.add("b", diff(2, "b", 1, 1), 0); // b: segment 1 only
      await rotate();
      batcher.add("a", diff(3, "a", 2, 2), 0); // a: segments 0 and 2
      batcher.add("c", diff(4, "c", 1, 1), 0); // c: segment 2
      await journal.flush();
      assert.deepEqual(await segments(tmp.path), [seg(0), seg(1), seg(2)]);

      const recovered = await recover(tmp.path);
      assert.deepEqual(recovered.batches.map((x) => [x.stream, x.body.lineCount]), [
        ["a", 3],
        ["b", 2],
        ["c", 2],
      ]);

      const [a, b, c] = batcher.sealAll();
      await Promise.all([a.durable, b.durable, c.durable]);
      journal.settled(b.key);
      await journal.flush();
      // Segment 1 holds nothing unsettled, but segment 0 (batch a) is older.
      assert.deepEqual(await segments(tmp.path), [seg(0), seg(1), seg(2)]);

      journal.settled(a.key);
      await journal.flush();
      assert.deepEqual(await segments(tmp.path), [seg(2)]);

      journal.settled(c.key);
      await journal.flush();
      assert.deepEqual(await segments(tmp.path), [seg(2)], "the current segment stays");

      await rotate();
      assert.deepEqual(await segments(tmp.path), [seg(3)]);
      assert.deepEqual((await recover(tmp.path)).batches, []);
    },
  );
});

Deno.test("journal segments age on the monotonic clock: a wall clock stepped back an hour does not keep one segment growing", async () => {
  await using tmp = await tempDir();
  let wall = 1_700_000_000_000;
  let monotonic = 0;
  await withJournal(
    tmp.path,
    { flushMs: 10, segmentMs: 1000, now: () => wall, monotonic: () => monotonic },
    async (journal) => {
      const batcher = batcherFor(journal);
      batcher.add("a", diff(1, "a", 1, 1), 0);
      await journal.flush();
      wall -= 3_600_000; // NTP steps the wall clock back an hour
      for (let i = 2; i <= 4; i++) {
        monotonic += 1000;
        batcher.add("a", diff(i, "a", i, i), 0);
        await journal.flush();
      }
      assert.equal((await segments(tmp.path)).length, 4, "a new segment every segmentMs");
    },
  );
});

Deno.test("journal sealed() resolves only once the seal record is in the file, and the batch file is then the object", async () => {
  await using tmp = await tempDir();
  // A flush interval far longer than the test: only sealed() makes it write.
  await withJournal(tmp.path, { flushMs: 60_000 }, async (journal) => {
    const batcher = batcherFor(journal);
    batcher.add("s", diff(1, "s", 1, 1), 0);
    batcher.add("s", diff(2, "s", 2, 2), 0);
    const [segment] = await segments(tmp.path);
    const path = join(tmp.path, segment);
    const [batch] = batcher.sealAll();
    assert.equal(Deno.readTextFileSync(path), "", "nothing is written synchronously");
    await batch.durable;
    // Each record follows its CRC-32 and a tab.
    const records = Deno.readTextFileSync(path).split("\n").map((r) => r.slice(9));
    assert.deepEqual(records.map((r) => r.split("\t")[0]), ["o", "p", "s", ""]);
    assert.equal(records[2], "s\t0\t2");
    const [file] = (await listFiles(tmp.path)).filter((f) => f.endsWith(".gz.part"));
    assert.deepEqual(await Deno.readFile(join(tmp.path, file)), await batch.body.finish());
  });
});

Deno.test("journal flushes asked for while one waits share it, and every seal still becomes durable", async () => {
  await using tmp = await tempDir();
  await withJournal(tmp.path, { flushMs: 60_000 }, async (journal) => {
    const first = journal.flush();
    assert.equal(journal.flush(), first, "a flush that has not started takes later callers along");
    await first;
    const batcher = batcherFor(journal);
    for (let i = 0; i < 300; i++) batcher.add(`s${i}`, diff(i, `s${i}`, i, i), 0);
    const sealed = batcher.sealAll();
    await Promise.all(sealed.map((b) => b.durable));
    const [segment] = await segments(tmp.path);
    const records = Deno.readTextFileSync(join(tmp.path, segment)).split("\n");
    assert.equal(records.filter((r) => r.slice(9).startsWith("s\t")).length, 300);
    assert.notEqual(journal.flush(), first, "once started, a flush takes no more callers");
  });
});

Deno.test("journal writes each flush's new text once, compressed: far fewer bytes than the text", async () => {
  await using tmp = await tempDir();
  await withJournal(tmp.path, { flushMs: 60_000 }, async (journal) => {
    const batcher = batcherFor(journal);
    let text = 0;
    for (let i = 0; i < 2000; i++) {
      const line = diff(i, "s", i, i);
      batcher.add("s", line, 0);
      text += line.text.length + 1;
      if (i % 100 === 99) await journal.flush();
    }
    const sizes = await Promise.all(
      (await listFiles(tmp.path)).map((f) => Deno.stat(join(tmp.path, f)).then((s) => s.size)),
    );
    const written = sizes.reduce((a, b) => a + b, 0);
    assert.ok(written < text / 4, `${written} bytes journalled for ${text} bytes of text`);
    // Two batches of 1,000 lines (maxLines), both sealed: recovered whole.
    const { batches } = await recover(tmp.path);
    assert.deepEqual(batches.map((b) => b.body.lineCount), [1000, 1000]);
  });
});

Deno.test("journal recovery recomputes counts, receive times and update ids from the lines", async () => {
  await using tmp = await tempDir();
  await withJournal(tmp.path, { flushMs: 10 }, async (journal) => {
    const batcher = batcherFor(journal);
    const lines = [
      event(500, "s"),
      snapshot(510, "s", 1000),
      diff(530, "s", 1001, 1004),
      event(520, "s"),
      diff(540, "s", 1005, 1011),
    ];
    for (const line of lines) batcher.add("s", line, 0);
    const [sealed] = batcher.sealAll();
    await sealed.durable;
    const { batches } = await recover(tmp.path);
    const expected = {
      messages: 3,
      snapshots: 0,
      events: 2,
      firstRecvTs: 500,
      lastRecvTs: 540,
      firstUpdateId: 1000,
      lastUpdateId: 1011,
    };
    assert.deepEqual(sealed.meta, expected);
    assert.deepEqual(batches[0].meta, expected);
    assert.equal(batches[0].textBytes, sealed.textBytes);
  });
});

Deno.test("journal close deletes its segments when every batch settled and keeps them otherwise", async () => {
  await using tmp = await tempDir();
  const settledDir = join(tmp.path, "settled");
  await withJournal(settledDir, { flushMs: 10 }, async (journal) => {
    const batcher = batcherFor(journal);
    batcher.add("s", diff(1, "s", 1, 1), 0);
    const [batch] = batcher.sealAll();
    await batch.durable;
    journal.settled(batch.key);
  });
  assert.deepEqual(await listFiles(settledDir), []);

  const openDir = join(tmp.path, "open");
  await withJournal(openDir, { flushMs: 10 }, async (journal) => {
    const batcher = batcherFor(journal);
    batcher.add("s", diff(1, "s", 1, 1), 0);
    const [batch] = batcher.sealAll();
    await batch.durable;
    batcher.add("s", diff(2, "s", 2, 2), 0);
  });
  assert.equal((await segments(openDir)).length, 1);
  assert.deepEqual((await recover(openDir)).batches.map((b) => b.key), [
    "p/stream=s/1_0.ndjson.gz",
    "p/stream=s/2_1.ndjson.gz",
  ]);
});

Deno.test("a batch settled while its last append is in flight (spooled without waiting) leaves no record after its settle", async () => {
  await using tmp = await tempDir();
  const local = localAppender();
  const gate = Promise.withResolvers<void>();
  let holding = false;
  const appender: FileAppender = {
    append: async (appends) => {
      if (holding) await gate.promise;
      return local.append(appends);
    },
  };
  const journal = await Journal.start(tmp.path, { flushMs: 1e9, appender });
  const batcher = batcherFor(journal);
  batcher.add("s", diff(1, "s", 1, 1), 0);
  await journal.flush();
  batcher.add("s", diff(2, "s", 2, 2), 0);
  const [batch] = batcher.sealAll();
  holding = true;
  const flushing = journal.flush(); // the last piece and the seal, held in flight
  await new Promise((resolve) => setTimeout(resolve, 20));
  journal.settled(batch.key); // e.g. spooled from its bytes, not from the journal's file
  gate.resolve();
  await flushing;
  await journal.flush();
  const text = (await Promise.all(
    (await segments(tmp.path)).map((name) => Deno.readTextFile(join(tmp.path, name))),
  )).join("");
  const kinds = text.split("\n").filter((l) => l !== "").map((l) => l.split("\t")[1]);
  assert.ok(kinds.includes("r"), `a settle record: ${kinds}`);
  assert.deepEqual(kinds.slice(kinds.indexOf("r") + 1), [], "nothing about the batch after it");
  await journal.close();
  assert.deepEqual(await listFiles(tmp.path), [], "the segment and the batch file are gone");
  await batch.body.finish().catch(() => {});
});

Deno.test("a batch sealed while a flush waits for its pieces to compress gets its last piece and its end in the next flush", async () => {
  await using tmp = await tempDir();
  const { deflater, open } = gatedDeflater();
  await withJournal(tmp.path, { flushMs: 1e9 }, async (journal) => {
    const batcher = batcherFor(journal, 1000, deflater);
    batcher.add("s", diff(1, "s", 1, 1), 0);
    const flushing = journal.flush(); // waits for the first piece
    await new Promise((resolve) => setTimeout(resolve, 10));
    batcher.add("s", diff(2, "s", 2, 2), 0);
    const [batch] = batcher.sealAll(); // its last piece is queued behind the flush in progress
    open();
    await flushing;
    const file = await batch.durable;
    assert.ok(file, "the seal is durable with the whole object in the batch file");
    const bytes = await Deno.readFile(file.path);
    assert.equal(bytes.length, file.bytes);
    assert.deepEqual(bytes, await batch.body.finish(), "the file is the object, byte for byte");
    const lines = new TextDecoder().decode(gunzipSync(bytes)).trim().split("\n");
    assert.deepEqual(lines, [diff(1, "s", 1, 1).text, diff(2, "s", 2, 2).text]);
  });
});

Deno.test("journal close waits for the flush a seal during its last flush scheduled: the batch file gets its end", async () => {
  await using tmp = await tempDir();
  const { deflater, open } = gatedDeflater();
  const journal = await Journal.start(tmp.path, { flushMs: 1e9 });
  const batcher = batcherFor(journal, 1000, deflater);
  batcher.add("s", diff(1, "s", 1, 1), 0);
  const closing = journal.close(); // its flush waits for the first piece
  await new Promise((resolve) => setTimeout(resolve, 10));
  batcher.add("s", diff(2, "s", 2, 2), 0);
  const [batch] = batcher.sealAll(); // the last piece, queued behind close's flush
  open();
  await closing;
  const file = await batch.durable;
  assert.ok(file, "the seal became durable before the journal closed");
  assert.deepEqual(await Deno.readFile(file.path), await batch.body.finish());
  // Not settled: the next start finds the batch whole, both lines in it.
  const [rebuilt] = (await recover(tmp.path)).batches;
  const data = (await rebuilt.body.lines()).filter((line) => line.includes('"data":'));
  assert.deepEqual(data, [diff(1, "s", 1, 1).text, diff(2, "s", 2, 2).text]);
});

Deno.test("journal recovery of a missing directory finds nothing", async () => {
  await using tmp = await tempDir();
  assert.deepEqual(await recover(join(tmp.path, "never-created")), {
    batches: [],
    files: [],
    badRecords: 0,
    unattributed: 0,
    skipped: [],
  });
});

Deno.test({
  name: "journal keeps working after a segment could not be opened",
  async fn() {
    await using tmp = await tempDir();
    const dir = join(tmp.path, "journal");
    let clock = 1_000;
    const journal = await Journal.start(dir, {
      flushMs: 60_000,
      segmentMs: 100,
      now: () => clock,
      monotonic: () => clock,
    });
    try {
      const batcher = batcherFor(journal);
      batcher.add("s", diff(1, "s", 1, 1), 0);
      await journal.flush();
      await Deno.remove(dir, { recursive: true });
      clock += 100;
      await journal.flush().catch(() => {}); // may fail: the directory is gone
      // (The journal makes it again itself; an operator may have been quicker.)
      await Deno.mkdir(dir, { recursive: true });
      clock += 100;
      const [batch] = batcher.sealAll();
      const outcome = await Promise.race([
        batch.durable!.then(() => "durable"),
        new Promise((resolve) => setTimeout(resolve, 500, "still waiting")),
      ]);
      assert.equal(outcome, "durable");
    } finally {
      await journal.close().catch(() => {});
    }
  },
});

Deno.test({
  name: "journal keeps records a failed write left behind and writes them first, before the seal",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir();
    let failNext = false;
    const realOpen = Deno.open;
    // A file whose next write fails once, like a moment of ENOSPC.
    const patched = async (path: string | URL, options?: Deno.OpenOptions) => {
      const file = await realOpen(path, options);
      const [write, writeSync] = [file.write.bind(file), file.writeSync.bind(file)];
      const fails = () => {
        const fail = failNext;
        failNext = false;
        return fail;
      };
      const full = () => new Error("ENOSPC: no space left on device");
      file.write = (bytes: Uint8Array) => fails() ? Promise.reject(full()) : write(bytes);
      file.writeSync = (bytes: Uint8Array) => {
        if (fails()) throw full();
        return writeSync(bytes);
      };
      return file;
    };
    Object.assign(Deno, { open: patched });
    try {
      const journal = await Journal.start(dir, { flushMs: 1_000_000 });
      const batcher = new Batcher({
        batchMs: 1e9,
        maxLines: 1e9,
        planKey: (s, t, q) => `k/${s}/${t}/${q}`,
        observer: journal,
      });
      const line = (i: number) => ({
        text: JSON.stringify({ recv_ts: i, stream: "a", data: { lastUpdateId: i } }),
        recvTs: i,
        isData: true,
      });
      for (let i = 1; i <= 3; i++) batcher.add("a", line(i), 0);
      await journal.flush();
      failNext = true;
      for (let i = 4; i <= 6; i++) batcher.add("a", line(i), 0);
      await journal.flush(); // fails: lines 4..6 must not be lost
      assert.equal(failNext, false, "the segment's write failed");
      const [sealed] = batcher.sealAll();
      await sealed.durable;
      const recovered = await recoverJournal(dir, {
        describe: (t) => {
          const v = JSON.parse(t);
          return { recvTs: v.recv_ts, isData: "data" in v };
        },
      });
      assert.equal(recovered.batches.length, 1);
      assert.deepEqual(
        await recovered.batches[0].body.lines(),
        await sealed.body.lines(),
        "recovery must match the stored batch",
      );
      await journal.close();
    } finally {
      Object.assign(Deno, { open: realOpen });
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** A journal in `dir` with one batch of nine lines, flushed as three pieces of three lines. */
async function threePieces(dir: string): Promise<string[]> {
  const lines: string[] = [];
  await withJournal(dir, { flushMs: 60_000 }, async (journal) => {
    const batcher = batcherFor(journal);
    for (let i = 0; i < 9; i++) {
      const line = diff(10 + i, "s", i, i);
      batcher.add("s", line, 0);
      lines.push(line.text);
      if (i % 3 === 2) await journal.flush();
    }
  });
  return lines;
}

Deno.test("a journal batch file that cannot be read (a directory in its place) is set aside: its lines are dropped lines (sealed or not), the other batch recovers", async () => {
  // Sealed or not when the process died: a batch that lost every line is marked all the same.
  for (const sealed of [false, true]) {
    await using tmp = await tempDir();
    const live = join(tmp.path, "live");
    const dir = join(tmp.path, "journal");
    const added = { a: [] as string[], b: [] as string[] };
    await withJournal(live, { flushMs: 60_000 }, async (journal) => {
      // Keys as the collector plans them: the time in a key places a batch that lost every line.
      const batcher = plannedBatcher(journal);
      for (let i = 0; i < 4; i++) {
        for (const stream of ["a", "b"] as const) {
          const line = diff(100 + i, stream, i, i);
          batcher.add(stream, line, 0);
          added[stream].push(line.text);
        }
      }
      await journal.flush();
      if (sealed) {
        batcher.sealAll();
        await journal.flush();
      }
      // The process "dies" here; what it left is copied, as a crash would leave it.
      await copyAsCrashed(live, dir);
    });
    // Batch a (opened first) cannot be read: a directory stands where its file was.
    const [fileA] = (await listFiles(dir)).filter((f) => f.endsWith("-b0.gz.part"));
    await Deno.remove(join(dir, fileA));
    await Deno.mkdir(join(dir, fileA));

    const result = await recover(dir);
    const byStream = new Map(
      await Promise.all(result.batches.map(async (b) => [b.stream, await b.body.lines()] as const)),
    );
    assert.deepEqual(byStream.get("b")!.slice(0, 4), added.b);
    // Its four lines are lost; the object under its key says so, at the key's time.
    const a = byStream.get("a")!.map((l) => JSON.parse(l));
    assert.deepEqual(a.map((l) => [l.event, l.recv_ts]), [["dropped", 100], ["recovered", 100]]);
    assert.deepEqual([a[0].messages, a[0].reason], [4, "journal damage"]);
    assert.equal(result.unattributed, 0);
    assert.match(result.skipped.join(" "), new RegExp(`${fileA} \\(cannot be read`));
    // Moved aside for a person, so no later start reads it without the files recovered now.
    assert.ok((await Deno.stat(join(dir, "quarantine", fileA))).isDirectory);
    await assert.rejects(() => Deno.stat(join(dir, fileA)), Deno.errors.NotFound);
  }
});

Deno.test("a journal segment that cannot be read is set aside, and so are the batch files only it named: never deleted", async () => {
  await using tmp = await tempDir();
  const live = join(tmp.path, "live");
  const dir = join(tmp.path, "journal");
  await withJournal(live, { flushMs: 60_000 }, async (journal) => {
    const batcher = batcherFor(journal);
    for (let i = 0; i < 4; i++) batcher.add("a", diff(100 + i, "a", i, i), 0);
    await journal.flush();
    await copyAsCrashed(live, dir);
  });
  const names = await listFiles(dir);
  const segment = names.find((n) => n.endsWith(".jnl"))!;
  const part = names.find((n) => n.endsWith(".gz.part"))!;
  // As root every file reads: the segment's read is made to fail as EACCES would.
  const readFile = Deno.readFile;
  Deno.readFile = (path, options) =>
    String(path).endsWith(segment)
      ? Promise.reject(new Deno.errors.PermissionDenied(`readfile '${path}'`))
      : readFile(path, options);
  let result;
  try {
    result = await recover(dir);
  } finally {
    Deno.readFile = readFile;
  }
  assert.deepEqual(result.batches, []);
  assert.match(result.skipped.join(" "), new RegExp(`${segment} \\(cannot be read`));
  // The batch's pieces are kept for a person: the start removes what `files` lists.
  await removeSettledFiles(result.files);
  assert.deepEqual((await listFiles(dir)).sort(), [`quarantine/${segment}`, `quarantine/${part}`]);
});

Deno.test("the journal's directory, or its current segment alone, removed while recording: every open batch keeps its key after a crash", async () => {
  for (const removed of ["directory", "segment"] as const) {
    await using tmp = await tempDir();
    const dir = join(tmp.path, "journal");
    const copy = join(tmp.path, "crashed");
    await withJournal(dir, { flushMs: 60_000 }, async (journal) => {
      const batcher = plannedBatcher(journal);
      batcher.add("a", diff(100, "a", 1, 1), 0);
      await journal.flush();
      if (removed === "directory") await Deno.remove(dir, { recursive: true });
      else {
        for (const name of await listFiles(dir)) {
          if (name.endsWith(".jnl")) await Deno.remove(join(dir, name));
        }
      }
      // Opened after the removal: with the directory gone, its first append finds none.
      batcher.add("b", diff(101, "b", 1, 1), 0);
      batcher.add("a", diff(102, "a", 2, 2), 0);
      await journal.flush();
      batcher.add("b", diff(103, "b", 2, 2), 0);
      await journal.flush();
      // The process "dies" here.
      await copyAsCrashed(dir, copy);
    });
    const { batches } = await recover(copy);
    const byStream = new Map(
      await Promise.all(
        batches.map(async (b) => [b.stream, { key: b.key, lines: await b.body.lines() }] as const),
      ),
    );
    // Both under the keys they were given (none rebuilt under a new one, which could store it twice).
    assert.deepEqual([...byStream.keys()].sort(), ["a", "b"], removed);
    assert.match(byStream.get("a")!.key, /\/100_box_000000\.ndjson\.gz$/);
    assert.match(byStream.get("b")!.key, /\/101_box_000000\.ndjson\.gz$/);
    const b = byStream.get("b")!.lines.map((l) => JSON.parse(l));
    assert.deepEqual(b.slice(0, 2).map((l) => l.recv_ts), [101, 103], removed);
    const a = byStream.get("a")!.lines.map((l) => JSON.parse(l));
    if (removed === "directory") {
      // Its file went with the directory: its lines are marked lost, not silently gone.
      assert.deepEqual(a.map((l) => l.event), ["dropped", "recovered"]);
    } else assert.deepEqual(a.slice(0, 2).map((l) => l.recv_ts), [100, 102]);
  }
});

Deno.test("the current segment removed while an older one holds a batch's first records: recovery reads each line once", async () => {
  await using tmp = await tempDir();
  const dir = join(tmp.path, "journal");
  const copy = join(tmp.path, "crashed");
  let clock = 1_000;
  const added: string[] = [];
  await withJournal(
    dir,
    { flushMs: 60_000, segmentMs: 100, now: () => clock, monotonic: () => clock },
    async (journal) => {
      const batcher = plannedBatcher(journal);
      const add = (ts: number) => {
        const line = diff(ts, "a", ts, ts);
        batcher.add("a", line, 0);
        added.push(line.text);
      };
      add(100);
      add(101);
      await journal.flush();
      clock += 100; // the next flush starts a second segment after writing to the first
      add(102);
      await journal.flush();
      add(103);
      await journal.flush();
      const segments = (await listFiles(dir)).filter((n) => n.endsWith(".jnl")).sort();
      assert.equal(segments.length, 2);
      await Deno.remove(join(dir, segments[1])); // the current one alone
      add(104);
      await journal.flush();
      add(105);
      await journal.flush();
      // The process "dies" here.
      await copyAsCrashed(dir, copy);
    },
  );
  const { batches } = await recover(copy);
  assert.equal(batches.length, 1);
  const lines = await batches[0].body.lines();
  assert.deepEqual(lines.slice(0, -1), added);
  assert.equal(JSON.parse(lines.at(-1)!).event, "recovered");
});

Deno.test("a segment whose every record is damaged: the batch files it alone named are set aside, not deleted", async () => {
  await using tmp = await tempDir();
  const live = join(tmp.path, "live");
  const dir = join(tmp.path, "journal");
  await withJournal(live, { flushMs: 60_000 }, async (journal) => {
    const batcher = batcherFor(journal);
    for (let i = 0; i < 3; i++) batcher.add("a", diff(100 + i, "a", i, i), 0);
    await journal.flush();
    await copyAsCrashed(live, dir);
  });
  const names = await listFiles(dir);
  const segment = names.find((n) => n.endsWith(".jnl"))!;
  const part = names.find((n) => n.endsWith(".gz.part"))!;
  const size = (await Deno.stat(join(dir, segment))).size;
  await Deno.writeFile(join(dir, segment), new Uint8Array(size)); // zeroed: every record damaged
  const result = await recover(dir);
  assert.deepEqual(result.batches, []);
  assert.ok(result.badRecords > 0);
  await removeSettledFiles(result.files);
  assert.deepEqual(await listFiles(dir), [`quarantine/${part}`]);
});
