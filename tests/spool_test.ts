import { createHash } from "node:crypto";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import assert from "node:assert/strict";
import { join } from "node:path";
import type { ObjectMeta } from "../src/archive/meta.ts";
import {
  decodeSpoolFile,
  encodeSpoolFile,
  Spool,
  spooledBatchOfName,
  type SpoolEntry,
  SpoolFileError,
} from "../src/store/spool.ts";
import { planKey } from "../src/archive/keys.ts";
import { listFiles, tempDir } from "./support/temp.ts";

const meta: ObjectMeta = {
  messages: 3,
  events: 1,
  firstRecvTs: 1_700_000_000_000_000,
  lastRecvTs: 1_700_000_000_500_000,
  firstUpdateId: 100,
  lastUpdateId: 130,
};

const entry = (key: string, body: number[] = [31, 139, 8, 0, 1, 2, 3]): SpoolEntry => ({
  key,
  body: new Uint8Array(body),
  meta,
});

/** Writes one entry and returns the name it got. */
async function writeOne(spool: Spool, e: SpoolEntry): Promise<string> {
  const before = new Set(spool.names());
  assert.equal(await spool.write(e), true);
  const added = spool.names().filter((n) => !before.has(n));
  assert.equal(added.length, 1);
  return added[0];
}

Deno.test("spool reads back the key, metadata and body bytes it wrote", async () => {
  await using tmp = await tempDir();
  const spool = await Spool.open(tmp.path, { maxBytes: 1_000_000 });
  const body = Array.from({ length: 300 }, (_, i) => (i * 7) % 256);
  const name = await writeOne(spool, entry("binance/a/b.ndjson.gz", body));
  assert.match(name, /\.spool$/);
  const back = await spool.read(name);
  assert.equal(back.key, "binance/a/b.ndjson.gz");
  assert.deepEqual(back.meta, meta);
  assert.deepEqual([...back.body], body);
  assert.equal(spool.count, 1);
  assert.equal(spool.bytes, (await Deno.stat(join(tmp.path, name))).size);
});

Deno.test("spool names sort oldest first and names() lists them in write order", async () => {
  await using tmp = await tempDir();
  const spool = await Spool.open(tmp.path, { maxBytes: 1_000_000 });
  const keys = Array.from({ length: 12 }, (_, i) => `k${i}`);
  const names: string[] = [];
  for (const key of keys) names.push(await writeOne(spool, entry(key)));
  assert.deepEqual(spool.names(), names);
  assert.deepEqual([...names].sort(), names);
  const read = [];
  for (const name of spool.names()) read.push((await spool.read(name)).key);
  assert.deepEqual(read, keys);
});

Deno.test({
  name: "spool names() stays in name order when writes overlap",
  async fn() {
    await using tmp = await tempDir();
    const spool = await Spool.open(tmp.path, { maxBytes: 100_000_000 });
    // Big and small bodies alternate so later writes tend to finish first.
    await Promise.all(
      Array.from(
        { length: 8 },
        (_, i) =>
          spool.write(entry(`k${i}`, Array.from({ length: i % 2 ? 10 : 400_000 }, () => 1))),
      ),
    );
    const names = spool.names();
    assert.deepEqual(names, [...names].sort());
  },
});

Deno.test("spool open counts existing files, deletes crash leftovers and ignores other files", async () => {
  await using tmp = await tempDir();
  const first = await Spool.open(tmp.path, { maxBytes: 1_000_000 });
  const a = await writeOne(first, entry("a", [1, 2, 3]));
  const b = await writeOne(first, entry("b", [4, 5, 6, 7, 8]));
  // What a crash leaves: a half-written temporary file, plus unrelated files.
  await Deno.writeTextFile(join(tmp.path, `${b}.tmp-1a2b3c4d`), "{half a header");
  await Deno.writeTextFile(join(tmp.path, "notes.txt"), "operator notes");
  await Deno.writeTextFile(join(tmp.path, "quarantine", "old.spool"), "damaged long ago");

  const reopened = await Spool.open(tmp.path, { maxBytes: 1_000_000 });
  assert.deepEqual(reopened.names(), [a, b]);
  assert.equal(reopened.count, 2);
  const sizes = (await Deno.stat(join(tmp.path, a))).size +
    (await Deno.stat(join(tmp.path, b))).size;
  assert.equal(reopened.bytes, sizes);
  assert.deepEqual(await listFiles(tmp.path), [a, b, "notes.txt", "quarantine/old.spool"].sort());
  assert.equal((await reopened.read(b)).key, "b");
});

Deno.test("spool refuses a write that would pass maxBytes and writes nothing for it", async () => {
  await using tmp = await tempDir();
  const size = encodeSpoolFile(entry("k0")).length;
  const spool = await Spool.open(tmp.path, { maxBytes: size * 2 + size - 1 });
  assert.equal(await spool.write(entry("k0")), true);
  assert.equal(await spool.write(entry("k1")), true);
  assert.equal(await spool.write(entry("k2")), false);
  assert.equal(spool.count, 2);
  assert.equal(spool.bytes, size * 2);
  assert.equal((await listFiles(tmp.path)).length, 2);
});

Deno.test("spool writes started together never exceed maxBytes together", async () => {
  await using tmp = await tempDir();
  const size = encodeSpoolFile(entry("k0")).length;
  const spool = await Spool.open(tmp.path, { maxBytes: size * 3 });
  const results = await Promise.all(
    Array.from({ length: 8 }, (_, i) => spool.write(entry(`k${i}`))),
  );
  assert.equal(results.filter((ok) => ok).length, 3);
  assert.equal(spool.count, 3);
  assert.ok(spool.bytes <= spool.maxBytes);
  let onDisk = 0;
  for (const name of await listFiles(tmp.path)) {
    onDisk += (await Deno.stat(join(tmp.path, name))).size;
  }
  assert.equal(onDisk, spool.bytes);
  // Once one is removed, exactly one more fits.
  await spool.remove(spool.names()[0]);
  assert.deepEqual(await Promise.all([spool.write(entry("x")), spool.write(entry("y"))]), [
    true,
    false,
  ]);
});

Deno.test("spool remove deletes the file and forgets its size", async () => {
  await using tmp = await tempDir();
  const spool = await Spool.open(tmp.path, { maxBytes: 1_000_000 });
  const a = await writeOne(spool, entry("a"));
  const b = await writeOne(spool, entry("b", [9, 9, 9, 9]));
  const bSize = (await Deno.stat(join(tmp.path, b))).size;
  await spool.remove(a);
  assert.deepEqual(spool.names(), [b]);
  assert.equal(spool.bytes, bSize);
  assert.deepEqual(await listFiles(tmp.path), [b]);
  // Removing what is already gone is not an error and changes nothing.
  await spool.remove(a);
  assert.equal(spool.bytes, bSize);
  await spool.remove(b);
  assert.equal(spool.bytes, 0);
  assert.equal(spool.count, 0);
});

/** Writes one good file, lets `damage` rewrite its bytes, and returns its name. */
async function damagedFile(
  spool: Spool,
  damage: (bytes: Uint8Array) => Uint8Array,
): Promise<string> {
  const name = await writeOne(spool, entry("victim", Array.from({ length: 64 }, (_, i) => i)));
  const path = join(spool.dir, name);
  await Deno.writeFile(path, damage(await Deno.readFile(path)));
  return name;
}

Deno.test("spool read throws SpoolFileError for a truncated file", async () => {
  await using tmp = await tempDir();
  const spool = await Spool.open(tmp.path, { maxBytes: 1_000_000 });
  const name = await damagedFile(spool, (b) => b.subarray(0, b.length - 10));
  await assert.rejects(spool.read(name), SpoolFileError);
  const headerOnly = await damagedFile(spool, (b) => b.subarray(0, 20));
  await assert.rejects(spool.read(headerOnly), SpoolFileError);
});

Deno.test("spool read throws SpoolFileError when one body byte is flipped", async () => {
  await using tmp = await tempDir();
  const spool = await Spool.open(tmp.path, { maxBytes: 1_000_000 });
  const name = await damagedFile(spool, (b) => {
    const copy = b.slice();
    copy[copy.length - 5] ^= 0x01;
    return copy;
  });
  await assert.rejects(spool.read(name), (error: unknown) => {
    assert.ok(error instanceof SpoolFileError);
    assert.match(error.message, /SHA-256/);
    return true;
  });
});

Deno.test("spool read throws SpoolFileError when the header is not JSON", async () => {
  await using tmp = await tempDir();
  const spool = await Spool.open(tmp.path, { maxBytes: 1_000_000 });
  const name = await damagedFile(spool, (b) => {
    const copy = b.slice();
    copy[0] = "#".charCodeAt(0);
    return copy;
  });
  await assert.rejects(spool.read(name), SpoolFileError);
});

Deno.test({
  name: "spool read throws SpoolFileError when the header is JSON but not an object",
  async fn() {
    await using tmp = await tempDir();
    const spool = await Spool.open(tmp.path, { maxBytes: 1_000_000 });
    for (const header of ["null", "42", '"text"', "[]"]) {
      const name = await damagedFile(spool, (b) => {
        const body = b.subarray(b.indexOf(10));
        const head = new TextEncoder().encode(header);
        const out = new Uint8Array(head.length + body.length);
        out.set(head);
        out.set(body, head.length);
        return out;
      });
      await assert.rejects(spool.read(name), SpoolFileError, `header ${header}`);
    }
  },
});

Deno.test("spool quarantine moves a file to quarantine/ and frees its bytes", async () => {
  await using tmp = await tempDir();
  const spool = await Spool.open(tmp.path, { maxBytes: 1_000_000 });
  const a = await writeOne(spool, entry("a"));
  const b = await writeOne(spool, entry("b"));
  const bytesBefore = spool.bytes;
  const aSize = (await Deno.stat(join(tmp.path, a))).size;
  const target = await spool.quarantine(a);
  assert.equal(target, join(tmp.path, "quarantine", a));
  assert.deepEqual(spool.names(), [b]);
  assert.equal(spool.bytes, bytesBefore - aSize);
  assert.deepEqual(await listFiles(tmp.path), [b, `quarantine/${a}`].sort());
  // A reopened spool does not count the quarantined file either.
  const reopened = await Spool.open(tmp.path, { maxBytes: 1_000_000 });
  assert.deepEqual(reopened.names(), [b]);
  assert.equal(reopened.bytes, spool.bytes);
});

/** The log records of category ["l2", "spool"] while `body` runs. */
async function spoolLogs(body: () => Promise<void>): Promise<LogRecord[]> {
  const records: LogRecord[] = [];
  await configure({
    reset: true,
    sinks: { memory: (record) => records.push(record) },
    loggers: [
      { category: ["l2", "spool"], lowestLevel: "debug", sinks: ["memory"] },
      { category: ["logtape", "meta"], lowestLevel: "error", sinks: [] },
    ],
  });
  try {
    await body();
  } finally {
    await reset();
  }
  return records;
}

Deno.test("spool directory removed while running: the next writes make it again, logged once", async () => {
  await using tmp = await tempDir();
  const dir = join(tmp.path, "spool");
  const spool = await Spool.open(dir, { maxBytes: 1_000_000 });
  const before = await writeOne(spool, entry("before"));
  const records = await spoolLogs(async () => {
    await Deno.remove(dir, { recursive: true });
    // Writes that find it gone together share one mkdir.
    assert.deepEqual(await Promise.all([spool.write(entry("a")), spool.write(entry("b"))]), [
      true,
      true,
    ]);
    assert.equal(await spool.write(entry("c")), true);
    // quarantine/ is made again when a damaged file must go there.
    const name = spool.names().find((n) => n !== before)!;
    assert.equal(await spool.quarantine(name), join(dir, "quarantine", name));
  });
  const written = spool.names().filter((n) => n !== before);
  assert.equal(written.length, 2);
  const keys = await Promise.all(written.map(async (n) => (await spool.read(n)).key));
  assert.equal(keys.length, 2);
  assert.equal((await listFiles(dir)).filter((f) => f.startsWith("quarantine/")).length, 1);
  const remade = records.filter((r) => String(r.message.join("")).includes("was removed"));
  assert.equal(remade.length, 2, "one line for the spool, one for quarantine/");
  assert.equal(remade[0].properties.dir, dir);
  assert.equal(remade[1].properties.dir, join(dir, "quarantine"));
});

const KEY = planKey({
  prefix: "binance",
  market: "spot",
  streamType: "depth@100ms",
  symbol: "BTCUSDT",
  firstRecvTs: meta.firstRecvTs,
  instanceId: "box",
  seq: 7,
});
const SPAN = { messages: 3, firstRecvTs: meta.firstRecvTs, lastRecvTs: meta.lastRecvTs };

/** What a damaged file's read says of its batch. */
async function lostBatchOf(spool: Spool, name: string) {
  const error = await spool.read(name).then(() => undefined, (e: unknown) => e);
  assert.ok(error instanceof SpoolFileError);
  return error.batch;
}

Deno.test("a spool file's name carries its batch's stream, message count and receive times", async () => {
  await using tmp = await tempDir();
  const spool = await Spool.open(tmp.path, { maxBytes: 1_000_000 });
  const named = await writeOne(spool, { ...entry("k"), stream: "btcusdt@depth@100ms" });
  assert.equal(named.length < 200, true);
  assert.deepEqual(spooledBatchOfName(named), { stream: "btcusdt@depth@100ms", meta: SPAN });
  // Without a stream given, the key's (when it follows the archive's layout).
  assert.deepEqual(spooledBatchOfName(await writeOne(spool, entry(KEY))), {
    stream: "btcusdt@depth@100ms",
    meta: SPAN,
  });
  // A name of an earlier release, or one without a stream, tells nothing.
  assert.equal(spooledBatchOfName(await writeOne(spool, entry("k"))), undefined);
  assert.equal(spooledBatchOfName("000001700000000-000003-0a1b2c3d.spool"), undefined);
  // Written together, names still sort oldest first.
  assert.deepEqual(spool.names(), [...spool.names()].sort());
});

Deno.test("a damaged spool file tells its batch by its header, or failing that by its name", async () => {
  await using tmp = await tempDir();
  const spool = await Spool.open(tmp.path, { maxBytes: 1_000_000 });
  const write = async (e: SpoolEntry, damage: (b: Uint8Array) => Uint8Array) => {
    const name = await writeOne(spool, e);
    await Deno.writeFile(join(tmp.path, name), damage(await Deno.readFile(join(tmp.path, name))));
    return name;
  };
  const truncated = (b: Uint8Array) => b.subarray(0, b.length - 3);
  const header = { key: KEY, stream: "btcusdt@depth@100ms", meta: SPAN };
  const byName = { stream: "ethusdt@depth@100ms", meta: SPAN };
  // The header intact: its key and metadata (whatever the name says).
  assert.deepEqual(
    await lostBatchOf(
      spool,
      await write({ ...entry(KEY), stream: "ethusdt@depth@100ms" }, truncated),
    ),
    header,
  );
  assert.deepEqual(await lostBatchOf(spool, await write(entry(KEY), truncated)), header);
  // The header gone: the name.
  const named = { ...entry("not a key"), stream: "ethusdt@depth@100ms" };
  for (
    const damage of [
      () => new Uint8Array(0),
      () => new TextEncoder().encode("\n"),
      () => crypto.getRandomValues(new Uint8Array(300)),
      (b: Uint8Array) => b.subarray(0, 30),
    ]
  ) {
    assert.deepEqual(await lostBatchOf(spool, await write(named, damage)), byName);
  }
  // Neither: nothing to tell.
  assert.equal(
    await lostBatchOf(spool, await write(entry("k"), () => new Uint8Array(0))),
    undefined,
  );
});

Deno.test("spool file encoding round-trips and names its header fields", () => {
  const e = entry("p/k.ndjson.gz", [0, 10, 13, 255, 10, 0]);
  const bytes = encodeSpoolFile(e);
  const back = decodeSpoolFile(bytes);
  assert.equal(back.key, e.key);
  assert.deepEqual(back.meta, e.meta);
  assert.deepEqual([...back.body], [...e.body]);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(0, bytes.indexOf(10))));
  assert.equal(header.v, 2);
  assert.equal(header.bytes, 6);
  assert.match(header.sha256, /^[0-9a-f]{64}$/);
  // An empty body and metadata without update ids survive too.
  const empty = decodeSpoolFile(
    encodeSpoolFile({
      key: "e",
      body: new Uint8Array(),
      meta: { ...meta, firstUpdateId: undefined, lastUpdateId: undefined },
    }),
  );
  assert.equal(empty.body.length, 0);
  assert.equal(empty.meta.firstUpdateId, undefined);
  assert.throws(() => decodeSpoolFile(new Uint8Array([1, 2, 3]), "x.spool"), SpoolFileError);
});

Deno.test("a spool file's SHA-256 covers its header: one changed byte of key, meta or mark quarantines it", () => {
  const body = new Uint8Array([31, 139, 8, 0, 1, 2, 3]);
  const bytes = encodeSpoolFile({ ...entry("p/1700000000000000_host_000001.ndjson.gz"), body });
  const text = new TextDecoder().decode(bytes.subarray(0, bytes.indexOf(10)));
  const changed = (from: string, to: string) => {
    assert.ok(text.includes(from), from);
    const header = new TextEncoder().encode(text.replace(from, to) + "\n");
    const out = new Uint8Array(header.length + body.length);
    out.set(header);
    out.set(body, header.length);
    return out;
  };
  // Each still parses as a header and keeps the body and its length: only the hash can tell.
  for (
    const [from, to] of [["_000001", "_000003"], ['"messages":', '"messagez":'], ['"v":2', '"v":1']]
  ) {
    assert.throws(() => decodeSpoolFile(changed(from, to), "x.spool"), SpoolFileError, from);
  }
  const marked = encodeSpoolFile({ key: "k", body, meta, ifAbsent: true });
  const plain = new TextDecoder().decode(marked).replace(',"ifAbsent":true', "");
  assert.throws(() => decodeSpoolFile(new TextEncoder().encode(plain)), SpoolFileError);
  assert.equal(decodeSpoolFile(marked).ifAbsent, true);
});

Deno.test("a version 1 spool file (hash of the body only), left by an older release, is still read", () => {
  const body = new Uint8Array([1, 2, 3]);
  const header = JSON.stringify({
    v: 1,
    key: "old/k",
    meta,
    bytes: 3,
    sha256: createHash("sha256").update(body).digest("hex"),
    ifAbsent: true,
  });
  const head = new TextEncoder().encode(header + "\n");
  const file = new Uint8Array(head.length + 3);
  file.set(head);
  file.set(body, head.length);
  const back = decodeSpoolFile(file);
  assert.deepEqual([back.key, [...back.body], back.ifAbsent], ["old/k", [1, 2, 3], true]);
});
