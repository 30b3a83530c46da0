/**
 * An object the store fails to hand over is not a damaged object
 * (src/verify/fetch.ts): `fetchObject` retries a failed read and tells a
 * failed fetch and a vanished object from bytes that do not decode; `verify`
 * and `book` stop with exit 2 naming the key and the store's error, instead
 * of calling the object damaged and the holes its absence leaves findings.
 * End to end through a loopback proxy in front of s3rver that answers
 * GetObject with 503 SlowDown, as a throttling S3 does.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { dataLine, gzipLines } from "../src/archive/encode.ts";
import { planKey } from "../src/archive/keys.ts";
import { bookFromArgs, type BookIo } from "../src/cli/book.ts";
import { verifyFromArgs, type VerifyIo } from "../src/cli/verify.ts";
import { parseConfig } from "../src/config.ts";
import type { Config } from "../src/config_types.ts";
import {
  type ArchiveReader,
  localArchiveReader,
  type ReadFrom,
  type StoredObject,
} from "../src/verify/archive.ts";
import { FetchError, fetchObject, type FetchPolicy, GoneError } from "../src/verify/fetch.ts";
import { s3ArchiveReader } from "../src/verify/s3_reader.ts";
import { TEST_BUCKET, TestS3 } from "./support/s3.ts";
import { tempDir } from "./support/temp.ts";

// ---------------------------------------------------------------------------
// A small spot diff archive of BTCUSDT: a snapshot, then consecutive diffs 100 ms apart.

const T0 = Date.UTC(2024, 7, 8, 10) * 1000;
const OBJECTS = 5;
const LINES_PER_OBJECT = 20;
const FAST: FetchPolicy = { attempts: 3, backoffMs: 1 };

function objectLines(index: number): string[] {
  const lines: string[] = [];
  for (let i = 0; i < LINES_PER_OBJECT; i++) {
    const n = index * LINES_PER_OBJECT + i;
    const recvTs = T0 + n * 100_000;
    if (n === 0) {
      const book = { lastUpdateId: 1000, bids: [["10.00", "1"]], asks: [["11.00", "1"]] };
      lines.push(dataLine(recvTs, "btcusdt@depthSnapshot", JSON.stringify(book)));
      continue;
    }
    const diff = {
      e: "depthUpdate",
      E: Math.floor(recvTs / 1000) - 3,
      s: "BTCUSDT",
      U: 1000 + n,
      u: 1000 + n,
      b: [["10.00", String(1 + n)]],
      a: [],
    };
    lines.push(dataLine(recvTs, "btcusdt@depth@100ms", JSON.stringify(diff)));
  }
  return lines;
}

function keyOf(index: number): string {
  return planKey({
    prefix: "binance",
    market: "spot",
    streamType: "depth@100ms",
    symbol: "BTCUSDT",
    firstRecvTs: T0 + index * LINES_PER_OBJECT * 100_000,
    instanceId: "test-box",
    seq: index,
  });
}

const KEYS = Array.from({ length: OBJECTS }, (_, i) => keyOf(i));

/** The archive's objects, key and gzip bytes. */
async function archiveObjects(): Promise<Array<{ key: string; bytes: Uint8Array }>> {
  return await Promise.all(
    KEYS.map(async (key, i) => ({ key, bytes: await gzipLines(objectLines(i), 6) })),
  );
}

async function writeLocalArchive(dataDir: string): Promise<void> {
  for (const { key, bytes } of await archiveObjects()) {
    const path = join(dataDir, "archive", ...key.split("/"));
    await Deno.mkdir(join(path, ".."), { recursive: true });
    await Deno.writeFile(path, bytes);
  }
}

/** The local archive, with `read` of some keys replaced. */
function readerWith(
  dataDir: string,
  read: (key: string, local: ArchiveReader, from?: ReadFrom) => Promise<StoredObject>,
): ArchiveReader {
  const local = localArchiveReader(join(dataDir, "archive"));
  return {
    ...local,
    location: "s3://bucket/binance",
    read: (key, from) => read(key, local, from),
  };
}

/** `bytes` (one chunk, delivered), then `end`: the stream closes, or errors with it. */
function bodyOf(bytes: Uint8Array, end?: Error): ReadableStream<Uint8Array<ArrayBuffer>> {
  let sent = bytes.length === 0;
  return new ReadableStream({
    pull(controller) {
      if (!sent) {
        sent = true;
        controller.enqueue(bytes.slice());
      } else if (end) controller.error(end);
      else controller.close();
    },
  });
}

const reset = () => new Error("ECONNRESET: socket hang up");

/** An S3 error as the SDK throws it. */
function s3Error(code: string, status: number, message: string): Error {
  return Object.assign(new Error(message), { name: code, $metadata: { httpStatusCode: status } });
}

const slowDown = () => s3Error("SlowDown", 503, "Please reduce your request rate.");

async function runVerify(config: Config, io: Partial<VerifyIo> = {}) {
  let out = "";
  const code = await verifyFromArgs(config, [], {
    print: (text) => out += text,
    fetchPolicy: FAST,
    ...io,
  });
  return { code, out };
}

async function runBook(config: Config, io: Partial<BookIo> = {}) {
  let out = "";
  let err = "";
  const code = await bookFromArgs(config, ["--symbol", "BTCUSDT", "--every", "update"], {
    write: (text) => out += text,
    printError: (text) => err += text,
    fetchPolicy: FAST,
    ...io,
  });
  return { code, out, err };
}

// ---------------------------------------------------------------------------
// fetchObject

Deno.test("fetchObject tries a failed read again with backoff, and the object comes", async () => {
  await using tmp = await tempDir();
  await writeLocalArchive(tmp.path);
  let calls = 0;
  const reader = readerWith(tmp.path, (key, local) => {
    calls++;
    return calls <= 2 ? Promise.reject(slowDown()) : local.read(key);
  });
  const stored = await fetchObject(reader, KEYS[0], { policy: FAST });
  const text = await new Response(
    stored.body.pipeThrough(new DecompressionStream("gzip")),
  ).text();
  assert.equal(calls, 3);
  assert.equal(text, objectLines(0).join("\n") + "\n");
});

Deno.test("fetchObject: a read failing every time is a FetchError naming the code, status and tries", async () => {
  let calls = 0;
  const reader = readerWith("/nonexistent", () => (calls++, Promise.reject(slowDown())));
  const error = await fetchObject(reader, KEYS[1], { policy: FAST }).catch((e) => e);
  assert.ok(error instanceof FetchError, String(error));
  assert.equal(error.key, KEYS[1]);
  assert.equal(error.attempts, 3);
  assert.equal(calls, 3);
  assert.equal(error.message, "SlowDown (HTTP 503): Please reduce your request rate.");
});

Deno.test("fetchObject: an error another try cannot fix is not tried again; a vanished key is GoneError", async () => {
  const cases: Array<[unknown, "fetch" | "gone"]> = [
    [s3Error("AccessDenied", 403, "Access Denied"), "fetch"],
    [new Deno.errors.PermissionDenied("Permission denied (os error 13)"), "fetch"],
    [s3Error("NoSuchKey", 404, "The specified key does not exist."), "gone"],
    [new Deno.errors.NotFound("No such file or directory (os error 2)"), "gone"],
  ];
  for (const [thrown, kind] of cases) {
    let calls = 0;
    const reader = readerWith("/nonexistent", () => (calls++, Promise.reject(thrown)));
    const error = await fetchObject(reader, KEYS[0], { policy: FAST }).catch((e) => e);
    assert.equal(calls, 1, String(thrown));
    assert.ok(error instanceof (kind === "fetch" ? FetchError : GoneError), String(error));
  }
});

Deno.test("a body that breaks while streaming is read on from where it broke, the same version, byte for byte", async () => {
  const bytes = (await archiveObjects())[0].bytes;
  const asked: Array<ReadFrom | undefined> = [];
  // Each read hands over at most 40 bytes from where it starts, then the connection is reset.
  const reader = readerWith("/nonexistent", (_key, _local, from) => {
    asked.push(from);
    const start = from?.offset ?? 0;
    const end = Math.min(start + 40, bytes.length);
    return Promise.resolve({
      body: bodyOf(bytes.subarray(start, end), end < bytes.length ? reset() : undefined),
      version: '"v1"',
      size: bytes.length,
    });
  });
  const stored = await fetchObject(reader, KEYS[0], { policy: FAST });
  const text = await new Response(stored.body.pipeThrough(new DecompressionStream("gzip"))).text();
  assert.equal(text, objectLines(0).join("\n") + "\n");
  const reads = Math.ceil(bytes.length / 40);
  assert.deepEqual(asked, [
    undefined,
    ...Array.from({ length: reads - 1 }, (_, i) => ({ offset: 40 * (i + 1), version: '"v1"' })),
  ]);
});

Deno.test("a broken body is a FetchError when the rest cannot be had, is another version, or never comes; bytes that do not gunzip are not", async () => {
  const bytes = (await archiveObjects())[0].bytes;
  const gunzip = async (reader: ArchiveReader, key = KEYS[0]) => {
    const stored = await fetchObject(reader, key, { policy: FAST });
    return await new Response(stored.body.pipeThrough(new DecompressionStream("gzip"))).text()
      .catch((e) => e);
  };
  const cutAt40 = () => ({
    body: bodyOf(bytes.subarray(0, 40), reset()),
    version: '"v1"',
    size: bytes.length,
  });

  // The rest is refused every time: the read's own error, after the policy's tries.
  let tries = 0;
  const refused = await gunzip(readerWith("/nonexistent", (_key, _local, from) => {
    if (!from) return Promise.resolve(cutAt40());
    tries++;
    return Promise.reject(slowDown());
  }));
  assert.ok(refused instanceof FetchError, String(refused));
  assert.equal(tries, FAST.attempts);
  assert.match(refused.message, /SlowDown/);

  // The object was replaced between the two reads: not spliced together.
  const changed = await gunzip(readerWith("/nonexistent", (_key, _local, from) =>
    Promise.resolve(
      from ? { body: bodyOf(bytes.subarray(from.offset)), version: '"v2"' } : cutAt40(),
    )));
  assert.ok(changed instanceof FetchError, String(changed));
  assert.match(
    changed.message,
    /^its body broke off after 40 bytes: ChangedWhileRead: it changed while it was read \(version "v1", then "v2"\)$/,
  );
  // S3 says so itself (GetObject with If-Match): 412 PreconditionFailed.
  const precondition = await gunzip(
    readerWith("/nonexistent", (_key, _local, from) =>
      from
        ? Promise.reject(
          s3Error(
            "PreconditionFailed",
            412,
            "At least one of the pre-conditions you specified did not hold",
          ),
        )
        : Promise.resolve(cutAt40())),
  );
  assert.ok(precondition instanceof FetchError, String(precondition));
  assert.match(precondition.message, /changed while it was read/);

  // Every resumed read breaks before its first byte: given up after three in a row.
  let resumed = 0;
  const barren = await gunzip(readerWith("/nonexistent", (_key, _local, from) => {
    if (from) resumed++;
    return Promise.resolve(
      from ? { body: bodyOf(new Uint8Array(), reset()), version: '"v1"' } : cutAt40(),
    );
  }));
  assert.ok(barren instanceof FetchError, String(barren));
  assert.equal(resumed, 3);
  assert.match(barren.message, /ECONNRESET/);

  // Broken after the last byte: nothing left to ask for, the object whole; but not when S3's
  // checksum of what it sent (checked after the last byte) failed, nor a range past the end.
  let after = 0;
  const whole = (end: Error) =>
    gunzip(readerWith("/nonexistent", (_key, _local, from) => {
      if (from) after++;
      return from
        ? Promise.reject(s3Error("InvalidRange", 416, "The requested range is not satisfiable"))
        : Promise.resolve({ body: bodyOf(bytes, end), version: '"v1"', size: bytes.length });
    }));
  assert.equal(await whole(reset()), objectLines(0).join("\n") + "\n");
  const checksum = await whole(new Error('Checksum mismatch: expected "a" but received "b"'));
  assert.ok(checksum instanceof FetchError, String(checksum));
  assert.match(checksum.message, /broke off after \d+ bytes: .*Checksum mismatch/);
  assert.equal(after, 0);
  const pastEnd = await gunzip(
    readerWith(
      "/nonexistent",
      (_key, _local, from) =>
        from
          ? Promise.reject(s3Error("InvalidRange", 416, "The requested range is not satisfiable"))
          : Promise.resolve({
            body: bodyOf(bytes, reset()),
            version: '"v1"',
            size: bytes.length + 9,
          }),
    ),
  );
  assert.ok(pastEnd instanceof FetchError, String(pastEnd));
  assert.match(pastEnd.message, /InvalidRange/);

  // A store that gives no version (no ETag): a break is not read on.
  let unversioned = 0;
  const noVersion = await gunzip(readerWith("/nonexistent", (_key, _local, from) => {
    if (from) unversioned++;
    return Promise.resolve({ body: bodyOf(bytes.subarray(0, 40), reset()) });
  }));
  assert.ok(noVersion instanceof FetchError, String(noVersion));
  assert.equal(unversioned, 0);

  // A body that ends early without an error is what S3 stored: damage, not a fetch error.
  const truncated = await gunzip(
    readerWith("/nonexistent", () => Promise.resolve({ body: bodyOf(bytes.subarray(0, 40)) })),
  );
  assert.ok(truncated instanceof Error && !(truncated instanceof FetchError), String(truncated));
});

Deno.test("the local archive reads on from an offset, and a file written over the key is another version", async () => {
  await using tmp = await tempDir();
  await writeLocalArchive(tmp.path);
  const bytes = (await archiveObjects())[2].bytes;
  const local = localArchiveReader(join(tmp.path, "archive"));
  const first = await local.read(KEYS[2]);
  await first.body.cancel();
  assert.equal(first.size, bytes.length);
  const version = first.version!;
  const rest = await local.read(KEYS[2], { offset: 25, version });
  assert.equal(rest.version, version);
  assert.deepEqual(new Uint8Array(await new Response(rest.body).arrayBuffer()), bytes.subarray(25));
  // The sink renames a finished file over its name: the same bytes, another file.
  const path = join(tmp.path, "archive", ...KEYS[2].split("/"));
  await Deno.writeFile(`${path}.new`, bytes);
  await Deno.rename(`${path}.new`, path);
  const replaced = await local.read(KEYS[2], { offset: 25, version });
  await replaced.body.cancel();
  assert.notEqual(replaced.version, version);
});

Deno.test("a body cancelled while it is being read on releases the read that resumed it", async () => {
  const bytes = (await archiveObjects())[0].bytes;
  const { promise: resumeAsked, resolve: askedNow } = Promise.withResolvers<void>();
  const { promise: answer, resolve: answerNow } = Promise.withResolvers<void>();
  let restCancelled = false;
  const reader = readerWith("/nonexistent", async (_key, _local, from) => {
    if (!from) return { body: bodyOf(bytes.subarray(0, 40), reset()), version: "v", size: 99 };
    askedNow();
    await answer;
    const body = new ReadableStream<Uint8Array<ArrayBuffer>>({
      cancel: () => void (restCancelled = true),
    });
    return { body, version: "v" };
  });
  const stored = await fetchObject(reader, KEYS[0], { policy: FAST });
  const consumer = stored.body.getReader();
  assert.equal((await consumer.read()).value?.length, 40);
  const pending = consumer.read().catch((e) => e);
  await resumeAsked;
  // Cancelled while the rest is being asked for: no error from the broken first read.
  await consumer.cancel("the audit stopped");
  answerNow();
  await pending;
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.ok(restCancelled);
});

// ---------------------------------------------------------------------------
// verify and book, with a reader whose reads fail

Deno.test("verify: an object S3 will not hand over stops the audit with exit 2, naming it; nothing is called damaged", async () => {
  await using tmp = await tempDir();
  await writeLocalArchive(tmp.path);
  const config = parseConfig({ DATA_DIR: tmp.path });
  const clean = await runVerify(config);
  assert.equal(clean.code, 0, clean.out);

  const reader = readerWith(
    tmp.path,
    (key, local) => key === KEYS[2] ? Promise.reject(slowDown()) : local.read(key),
  );
  const { code, out } = await runVerify(config, { reader });
  assert.equal(code, 2, out);
  assert.equal(
    out,
    `l2-uploader verify: cannot read ${KEYS[2]} from s3://bucket/binance: SlowDown (HTTP 503): ` +
      `Please reduce your request rate. (tried 3 times; nothing was judged; try again)\n`,
  );
  assert.doesNotMatch(out, /UNREADABLE|HOLE|BREAK|FAIL/);
});

Deno.test("verify: a read that fails and then succeeds is judged as if it never failed", async () => {
  await using tmp = await tempDir();
  await writeLocalArchive(tmp.path);
  const failed = new Map<string, number>();
  const reader = readerWith(tmp.path, (key, local) => {
    const count = failed.get(key) ?? 0;
    if (count >= 2) return local.read(key);
    failed.set(key, count + 1);
    return Promise.reject(slowDown());
  });
  const { code, out } = await runVerify(parseConfig({ DATA_DIR: tmp.path }), { reader });
  assert.equal(code, 0, out);
  assert.match(out, new RegExp(`read {5}${OBJECTS} object\\(s\\), ${OBJECTS * LINES_PER_OBJECT}`));
});

Deno.test("verify: a body cut mid-stream reads on; when the rest cannot be had, or a file may not be read, exit 2; a vanished object is reported as gone", async () => {
  await using tmp = await tempDir();
  await writeLocalArchive(tmp.path);
  const config = parseConfig({ DATA_DIR: tmp.path });
  // Every read of KEYS[3] hands over 30 bytes, then times out; its rest refused with `refuse`.
  let refuse = false;
  const cut = readerWith(tmp.path, async (key, local, from) => {
    if (from && refuse) throw slowDown();
    const stored = await local.read(key, from);
    if (key !== KEYS[3]) return stored;
    const body = stored.body.pipeThrough(
      new TransformStream({
        transform(chunk, controller) {
          controller.enqueue(chunk.slice(0, 30));
          if (chunk.length > 30) {
            controller.error(new Error("request timed out: no bytes for 30000 ms"));
          }
        },
      }),
    );
    return { ...stored, body };
  });
  const resumed = await runVerify(config, { reader: cut });
  assert.equal(resumed.code, 0, resumed.out);
  assert.match(
    resumed.out,
    new RegExp(`read {5}${OBJECTS} object\\(s\\), ${OBJECTS * LINES_PER_OBJECT}`),
  );

  refuse = true;
  const broken = await runVerify(config, { reader: cut });
  assert.equal(broken.code, 2, broken.out);
  assert.match(
    broken.out,
    new RegExp(
      `^l2-uploader verify: cannot read ${KEYS[3]} from .*` +
        `SlowDown.*\\(tried 3 times; nothing was judged; try again\\)\\n$`,
    ),
  );

  const denied = readerWith(
    tmp.path,
    (key, local) =>
      key === KEYS[1]
        ? Promise.reject(new Deno.errors.PermissionDenied("Permission denied (os error 13)"))
        : local.read(key),
  );
  const eacces = await runVerify(config, { reader: denied });
  assert.equal(eacces.code, 2, eacces.out);
  assert.match(eacces.out, /cannot read .* PermissionDenied: Permission denied \(os error 13\)/);
  // Refused: another try alone would not help.
  assert.match(eacces.out, /\(nothing was judged; fix the access, then try again\)\n$/);

  // Deleted between the listing and the read: the archive no longer holds it, a finding.
  const deleting = readerWith(tmp.path, async (key, local) => {
    if (key === KEYS[1]) await Deno.remove(join(tmp.path, "archive", ...key.split("/")));
    return await local.read(key);
  });
  const gone = await runVerify(config, { reader: deleting });
  assert.equal(gone.code, 1, gone.out);
  assert.match(gone.out, /UNREADABLE .* it was listed but is gone when read/);
  assert.doesNotMatch(gone.out, /empty \(0 bytes\)/);
});

Deno.test("book: an object that cannot be fetched stops it with exit 2, not as damage", async () => {
  await using tmp = await tempDir();
  await writeLocalArchive(tmp.path);
  const config = parseConfig({ DATA_DIR: tmp.path });
  const clean = await runBook(config);
  assert.equal(clean.code, 0, clean.err);

  const reader = readerWith(
    tmp.path,
    (key, local) => key === KEYS[2] ? Promise.reject(slowDown()) : local.read(key),
  );
  const { code, out, err } = await runBook(config, { reader });
  assert.equal(code, 2, err);
  assert.match(
    err,
    new RegExp(
      `l2-uploader book: cannot read ${KEYS[2]} from s3://bucket/binance: SlowDown \\(HTTP 503\\)` +
        `: Please reduce your request rate\\. \\(tried 3 times; the rows stop where it could not be read; try again\\)`,
    ),
  );
  assert.doesNotMatch(err, /DAMAGED|DOWN|FAIL/);
  // The rows before the object stand, as the clean run wrote them.
  assert.ok(out.length > 0 && clean.out.startsWith(out), out);
});

// ---------------------------------------------------------------------------
// End to end: s3rver behind a proxy that throttles GetObject

/** A loopback HTTP proxy to `upstream`; `fail(key, nth)` answers 503 SlowDown to a GetObject. */
function throttlingProxy(
  upstream: string,
  fail: (key: string, nth: number) => boolean,
  /** How many body bytes the `nth` GET of `key` passes before the connection breaks; undefined: all. */
  cutAfter: (key: string, nth: number) => number | undefined = () => undefined,
  /** Whether to pass a GET on without its Range (a server may ignore it, RFC 9110). */
  ignoreRange: () => boolean = () => false,
) {
  const gets = new Map<string, number>();
  /** The Range header of every GetObject that asked for one, as `key bytes=…`. */
  const ranges: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    // `/bucket/key…` without a query is a GetObject; listings carry `list-type=2`.
    const key = decodeURIComponent(url.pathname.split("/").slice(2).join("/"));
    const getObject = req.method === "GET" && key !== "" && !url.searchParams.has("list-type");
    if (getObject) {
      const nth = (gets.get(key) ?? 0) + 1;
      gets.set(key, nth);
      const range = req.headers.get("range");
      if (range) ranges.push(`${key} ${range} If-Match ${req.headers.get("if-match")}`);
      if (fail(key, nth)) {
        await req.body?.cancel();
        return new Response(
          `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>` +
            `<Message>Please reduce your request rate.</Message></Error>`,
          { status: 503, headers: { "content-type": "application/xml" } },
        );
      }
    }
    const headers = new Headers(req.headers);
    if (ignoreRange()) headers.delete("range");
    const answer = await fetch(new URL(url.pathname + url.search, upstream), {
      method: req.method,
      headers,
      body: req.body,
      redirect: "manual",
    });
    const cut = getObject ? cutAfter(key, gets.get(key) ?? 0) : undefined;
    if (cut === undefined) {
      return new Response(answer.body, { status: answer.status, headers: answer.headers });
    }
    const bytes = new Uint8Array(await answer.arrayBuffer());
    // The full length announced, `cut` bytes sent, then the stream fails: the connection drops.
    const body = new ReadableStream({
      start(controller) {
        controller.enqueue(bytes.slice(0, cut));
        setTimeout(() => controller.error(new Error("cut by the test proxy")), 20);
      },
    });
    return new Response(body, { status: answer.status, headers: answer.headers });
  });
  return { endpoint: `http://127.0.0.1:${server.addr.port}`, gets, ranges, server };
}

Deno.test({
  name:
    "S3 throttling GetObject, or breaking its body: verify and book ride it out by retrying and reading on, else exit 2; a cut object is still damage",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using s3 = await TestS3.start();
    const objects = await archiveObjects();
    for (const { key, bytes } of objects) {
      await s3.client.send(new PutObjectCommand({ Bucket: TEST_BUCKET, Key: key, Body: bytes }));
    }
    let fail: (key: string, nth: number) => boolean = () => false;
    let cutAfter: (key: string, nth: number) => number | undefined = () => undefined;
    let ignoreRange = false;
    const proxy = throttlingProxy(
      s3.endpoint,
      (key, nth) => fail(key, nth),
      (key, nth) => cutAfter(key, nth),
      () => ignoreRange,
    );
    await using tmp = await tempDir();
    // The real reader (archiveReaderFor), the SDK's own retries on, pointed at the proxy.
    const config = parseConfig({ ...s3.env(), S3_ENDPOINT: proxy.endpoint, DATA_DIR: tmp.path });
    const retry: FetchPolicy = { attempts: 2, backoffMs: 10 };
    try {
      // Every object's first three GETs (the SDK's three attempts) are throttled: one more
      // request of our own gets each of them.
      fail = (_key, nth) => nth <= 3;
      const riding = await runVerify(config, { fetchPolicy: retry });
      assert.equal(riding.code, 0, riding.out);
      assert.match(riding.out, /OK: the archive is whole/);
      assert.deepEqual([...proxy.gets.values()], KEYS.map(() => 4));

      // Every object's first GET breaks after 50 bytes: each is read on with a range of
      // the same version (If-Match), and the archive is judged whole.
      proxy.gets.clear();
      fail = () => false;
      cutAfter = (_key, nth) => nth === 1 ? 50 : undefined;
      const cut = await runVerify(config, { fetchPolicy: retry });
      assert.equal(cut.code, 0, cut.out);
      assert.match(cut.out, /OK: the archive is whole/);
      // s3rver does not check If-Match (S3 does): that it is sent, with an ETag, is checked here.
      assert.deepEqual(
        proxy.ranges.map((r) => r.replace(/If-Match "[0-9a-f]{32}"$/, "If-Match <ETag>")).sort(),
        KEYS.map((key) => `${key} bytes=50- If-Match <ETag>`).sort(),
      );
      // A server that ignores Range answers the rest with the whole object: its first 50 bytes
      // are skipped, not read twice.
      proxy.gets.clear();
      ignoreRange = true;
      const whole = await runVerify(config, { fetchPolicy: retry });
      assert.equal(whole.out, cut.out);
      assert.equal(whole.code, 0);
      ignoreRange = false;
      cutAfter = () => undefined;

      // One object throttled for good: exit 2 naming it and S3's error, no verdict.
      fail = (key) => key === KEYS[2];
      const stuck = await runVerify(config, { fetchPolicy: retry });
      assert.equal(stuck.code, 2, stuck.out);
      assert.equal(
        stuck.out,
        `l2-uploader verify: cannot read ${KEYS[2]} from s3://${TEST_BUCKET}/binance: ` +
          `SlowDown (HTTP 503): Please reduce your request rate. ` +
          `(tried 2 times; nothing was judged; try again)\n`,
      );
      const book = await runBook(config, { fetchPolicy: retry });
      assert.equal(book.code, 2, book.err);
      assert.match(book.err, new RegExp(`cannot read ${KEYS[2]} from s3://.*SlowDown`));
      assert.doesNotMatch(book.err, /DAMAGED/);

      // A truncated object S3 does return is damage, reported as before.
      fail = () => false;
      await s3.client.send(
        new PutObjectCommand({
          Bucket: TEST_BUCKET,
          Key: KEYS[2],
          Body: objects[2].bytes.subarray(0, 60),
        }),
      );
      const damaged = await runVerify(config, { fetchPolicy: retry });
      assert.equal(damaged.code, 1, damaged.out);
      assert.match(
        damaged.out,
        new RegExp(`UNREADABLE .* ${KEYS[2]} {2}cut short, or its gzip checksum does not match`),
      );
    } finally {
      await proxy.server.shutdown();
    }
  },
});

Deno.test("the S3 reader reads on from an offset: a range answer from elsewhere is refused, a whole-object answer skipped", async () => {
  const bytes = new Uint8Array(100).map((_, i) => i);
  let answer: { ContentRange?: string; from: number } = { from: 0 };
  const client = {
    send: () =>
      Promise.resolve({
        Body: { transformToWebStream: () => new Response(bytes.slice(answer.from)).body },
        ETag: '"e"',
        ContentLength: bytes.length - answer.from,
        ContentRange: answer.ContentRange,
      }),
    destroy() {},
  } as unknown as S3Client;
  const config = { bucket: "b", prefix: "binance" } as Parameters<typeof s3ArchiveReader>[0];
  const reader = s3ArchiveReader(config, { client });
  const readFrom = async (from: number) => {
    const stored = await reader.read("k", { offset: from, version: '"e"' });
    return {
      size: stored.size,
      bytes: new Uint8Array(await new Response(stored.body).arrayBuffer()),
    };
  };
  answer = { ContentRange: "bytes 40-99/100", from: 40 };
  assert.deepEqual(await readFrom(40), { size: 100, bytes: bytes.subarray(40) });
  // Range ignored (200, the whole object): the bytes before the offset are dropped.
  answer = { from: 0 };
  assert.deepEqual(await readFrom(40), { size: 100, bytes: bytes.subarray(40) });
  answer = { ContentRange: "bytes 10-99/100", from: 10 };
  await assert.rejects(readFrom(40), /asked for the bytes from 40, answered from 10/);
});
