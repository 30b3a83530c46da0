import assert from "node:assert/strict";
import { join } from "node:path";
import { HeadObjectCommand } from "@aws-sdk/client-s3";
import type { S3Config } from "../src/config_types.ts";
import { s3Sink } from "../src/store/s3.ts";
import { parseConfig } from "../src/config.ts";
import { isRetryableS3Error } from "../src/store/s3_errors.ts";
import { checkBucket } from "../src/store/select.ts";
import type { ObjectMeta } from "../src/archive/meta.ts";
import { TEST_BUCKET, TEST_CREDENTIALS, TestS3 } from "./support/s3.ts";
import { tempDir } from "./support/temp.ts";
import { delay } from "./support/wait.ts";

/** An error shaped like the ones the AWS SDK throws. */
function sdkError(name: string, status?: number): Error {
  const error = new Error(`${name} happened`) as Error & { $metadata?: object };
  error.name = name;
  if (status !== undefined) error.$metadata = { httpStatusCode: status, attempts: 1 };
  return error;
}

const networkError = (code: string) =>
  Object.assign(new Error(`connect ${code} 127.0.0.1:9`), { code });

const RETRYABLE: Array<[string, unknown]> = [
  ["SlowDown, HTTP 503", sdkError("SlowDown", 503)],
  ["ServiceUnavailable, HTTP 503", sdkError("ServiceUnavailable", 503)],
  ["InternalError, HTTP 500", sdkError("InternalError", 500)],
  ["a bare HTTP 502", sdkError("Error", 502)],
  ["TooManyRequests, HTTP 429", sdkError("TooManyRequests", 429)],
  ["RequestTimeout, HTTP 408", sdkError("RequestTimeout", 408)],
  ["ConditionalRequestConflict, HTTP 409", sdkError("ConditionalRequestConflict", 409)],
  ["OperationAborted, HTTP 409", sdkError("OperationAborted", 409)],
  ["TimeoutError without an answer", sdkError("TimeoutError")],
  ["ECONNREFUSED", networkError("ECONNREFUSED")],
  ["ECONNRESET", networkError("ECONNRESET")],
  ["ENOTFOUND", networkError("ENOTFOUND")],
  ["a fetch TypeError", new TypeError("fetch failed")],
  ["an AbortError", new DOMException("aborted", "AbortError")],
  ["a string", "socket hang up"],
];

const PERMANENT: Array<[string, unknown]> = [
  ["AccessDenied, HTTP 403", sdkError("AccessDenied", 403)],
  ["a bare HTTP 403", sdkError("Forbidden", 403)],
  ["NoSuchBucket, HTTP 404", sdkError("NoSuchBucket", 404)],
  ["NotFound (HeadBucket), HTTP 404", sdkError("NotFound", 404)],
  ["InvalidAccessKeyId, HTTP 403", sdkError("InvalidAccessKeyId", 403)],
  ["SignatureDoesNotMatch, HTTP 403", sdkError("SignatureDoesNotMatch", 403)],
  ["InvalidBucketName, HTTP 400", sdkError("InvalidBucketName", 400)],
  ["CredentialsProviderError without an answer", sdkError("CredentialsProviderError")],
  ["Deno's NotCapable", new Deno.errors.NotCapable("Requires net access")],
  ["Deno's PermissionDenied", new Deno.errors.PermissionDenied("denied")],
  ["a code in `Code`", Object.assign(new Error("x"), { Code: "AccessDenied" })],
  ["a bucket in another region: HeadBucket's bare HTTP 301", sdkError("Unknown", 301)],
];

Deno.test("isRetryableS3Error calls throttling, server errors and network failures transient", () => {
  for (const [what, error] of RETRYABLE) assert.equal(isRetryableS3Error(error), true, what);
});

Deno.test("isRetryableS3Error calls wrong credentials, buckets and permissions permanent", () => {
  for (const [what, error] of PERMANENT) assert.equal(isRetryableS3Error(error), false, what);
});

Deno.test({
  name: "isRetryableS3Error calls S3's RequestTimeout (HTTP 400) transient",
  fn() {
    assert.equal(isRetryableS3Error(sdkError("RequestTimeout", 400)), true);
  },
});

const meta: ObjectMeta = {
  messages: 42,
  events: 2,
  firstRecvTs: 1_723_075_200_000_123,
  lastRecvTs: 1_723_075_259_999_877,
  firstUpdateId: 49_000_000_001,
  lastUpdateId: 49_000_000_900,
};

/** Runs `fn` with the test credentials in the environment, as the SDK chain reads them. */
async function withCredentials(
  credentials: { accessKeyId: string; secretAccessKey: string },
  fn: () => Promise<void>,
): Promise<void> {
  const names = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] as const;
  const saved = names.map((name) => Deno.env.get(name));
  Deno.env.set("AWS_ACCESS_KEY_ID", credentials.accessKeyId);
  Deno.env.set("AWS_SECRET_ACCESS_KEY", credentials.secretAccessKey);
  try {
    await fn();
  } finally {
    names.forEach((name, i) => {
      const value = saved[i];
      if (value === undefined) Deno.env.delete(name);
      else Deno.env.set(name, value);
    });
  }
}

const configFor = (s3: TestS3, bucket = TEST_BUCKET): S3Config => ({
  bucket,
  prefix: "binance",
  region: "us-east-1",
  endpoint: s3.endpoint,
  forcePathStyle: true,
});

/** A bucket behind a server of the test's own on 127.0.0.1 (one that hangs, or reads slowly). */
const loopbackConfig = (port: number): S3Config => ({
  bucket: TEST_BUCKET,
  prefix: "binance",
  region: "us-east-1",
  endpoint: `http://127.0.0.1:${port}`,
  forcePathStyle: true,
});

/** The SDK keeps sockets and timers past a test; s3rver too. */
const s3Test = (name: string, fn: (s3: TestS3) => Promise<void>) =>
  Deno.test({
    name,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      await using s3 = await TestS3.start();
      await withCredentials(TEST_CREDENTIALS, () => fn(s3));
    },
  });

Deno.test({
  name:
    "s3 sink: keys given only in the configuration (the env file) reach the SDK, not only the environment's",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using s3 = await TestS3.start();
    assert.equal(
      Deno.env.get("AWS_ACCESS_KEY_ID"),
      undefined,
      "no key in this process's environment",
    );
    const config = parseConfig({
      S3_BUCKET_NAME: TEST_BUCKET,
      S3_ENDPOINT: s3.endpoint,
      S3_FORCE_PATH_STYLE: "true",
      AWS_REGION: "us-east-1",
      AWS_ACCESS_KEY_ID: TEST_CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: TEST_CREDENTIALS.secretAccessKey,
    });
    const profiled = parseConfig({ S3_BUCKET_NAME: TEST_BUCKET, AWS_PROFILE: "recorder" });
    assert.equal(profiled.s3?.profile, "recorder");
    const sink = s3Sink(config.s3!);
    try {
      const key = "binance/from-the-env-file.ndjson.gz";
      await sink.put(key, new Uint8Array([1, 2, 3]), meta);
      assert.deepEqual(await s3.keys(), [key]);
    } finally {
      sink.close();
    }
  },
});

s3Test("s3 sink stores the bytes with their metadata and content type", async (s3) => {
  const sink = s3Sink(configFor(s3), { requestTimeoutMs: 5000 });
  try {
    assert.equal(sink.kind, "s3");
    assert.equal(sink.location, `s3://${TEST_BUCKET}/binance`);
    const key = "binance/exchange=binance/market=spot/stream=depth20@100ms/a.ndjson.gz";
    const body = new Uint8Array(Array.from({ length: 2048 }, (_, i) => (i * 31) % 256));
    await sink.put(key, body, meta);
    assert.deepEqual(await s3.keys(), [key]);
    const stored = await s3.get(key);
    assert.deepEqual(stored.body, body);
    assert.deepEqual(stored.metadata, {
      "messages": "42",
      "events": "2",
      "first-recv-ts": "1723075200000123",
      "last-recv-ts": "1723075259999877",
      "first-update-id": "49000000001",
      "last-update-id": "49000000900",
    });
    const head = await s3.client.send(new HeadObjectCommand({ Bucket: TEST_BUCKET, Key: key }));
    assert.equal(head.ContentType, "application/gzip");
    assert.equal(head.ContentLength, body.length);
  } finally {
    sink.close();
  }
});

s3Test("s3 sink leaves metadata out when a batch has no update ids", async (s3) => {
  const sink = s3Sink(configFor(s3));
  try {
    await sink.put("k.ndjson.gz", new Uint8Array([1]), {
      messages: 0,
      events: 1,
      firstRecvTs: 5,
      lastRecvTs: 5,
    });
    const { metadata } = await s3.get("k.ndjson.gz");
    assert.deepEqual(Object.keys(metadata).sort(), [
      "events",
      "first-recv-ts",
      "last-recv-ts",
      "messages",
    ]);
  } finally {
    sink.close();
  }
});

s3Test("s3 sink put to the same key twice leaves one object with the second body", async (s3) => {
  const sink = s3Sink(configFor(s3));
  try {
    await sink.put("p/same.ndjson.gz", new Uint8Array([1, 2, 3]), meta);
    await sink.put("p/same.ndjson.gz", new Uint8Array([4, 5, 6, 7]), { ...meta, messages: 43 });
    assert.deepEqual(await s3.keys(), ["p/same.ndjson.gz"]);
    const stored = await s3.get("p/same.ndjson.gz");
    assert.deepEqual([...stored.body], [4, 5, 6, 7]);
    assert.equal(stored.metadata.messages, "43");
  } finally {
    sink.close();
  }
});

s3Test("s3 sink deleteObject removes the object", async (s3) => {
  const sink = s3Sink(configFor(s3));
  try {
    await sink.put("p/a.ndjson.gz", new Uint8Array([1]), meta);
    await sink.put("p/b.ndjson.gz", new Uint8Array([2]), meta);
    await sink.deleteObject("p/a.ndjson.gz");
    assert.deepEqual(await s3.keys(), ["p/b.ndjson.gz"]);
  } finally {
    sink.close();
  }
});

s3Test("s3 sink put fails with a retryable error while the server is down", async (s3) => {
  const sink = s3Sink(configFor(s3));
  try {
    await s3.stop();
    await assert.rejects(sink.put("p/x.ndjson.gz", new Uint8Array([1]), meta), (error) => {
      assert.equal(isRetryableS3Error(error), true, String(error));
      return true;
    });
    await s3.resume();
    await sink.put("p/x.ndjson.gz", new Uint8Array([1]), meta);
    assert.deepEqual(await s3.keys(), ["p/x.ndjson.gz"]);
  } finally {
    sink.close();
  }
});

s3Test("checkBucket passes for the test bucket", async (s3) => {
  const sink = s3Sink(configFor(s3));
  try {
    assert.deepEqual(await checkBucket(sink), { ok: true });
  } finally {
    sink.close();
  }
});

s3Test(
  "checkBucket calls a missing bucket permanent and names the bucket and endpoint",
  async (s3) => {
    const sink = s3Sink(configFor(s3, "no-such-bucket-here"));
    try {
      const check = await checkBucket(sink);
      assert.equal(check.ok, false);
      if (check.ok) return;
      assert.equal(check.permanent, true);
      assert.match(check.message, /"no-such-bucket-here"/);
      assert.ok(check.message.includes(s3.endpoint), check.message);
      assert.match(check.message, /does not exist/);
      assert.ok(!check.message.includes(TEST_CREDENTIALS.secretAccessKey), check.message);
    } finally {
      sink.close();
    }
  },
);

s3Test("checkBucket is not permanent while the server is stopped", async (s3) => {
  const sink = s3Sink(configFor(s3));
  try {
    await s3.stop();
    const check = await checkBucket(sink, AbortSignal.timeout(5000));
    assert.equal(check.ok, false);
    if (check.ok) return;
    assert.equal(check.permanent, false, check.message);
    assert.match(check.message, /could not be reached/);
    assert.ok(check.message.includes(TEST_BUCKET) && check.message.includes(s3.endpoint));
    assert.ok(!check.message.includes(TEST_CREDENTIALS.secretAccessKey), check.message);
  } finally {
    sink.close();
  }
});

Deno.test({
  name: "checkBucket calls unknown credentials permanent and never shows the secret key",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using s3 = await TestS3.start();
    const secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzSECRETzz";
    await withCredentials(
      { accessKeyId: "AKIANOTKNOWNHERE0000", secretAccessKey: secret },
      async () => {
        const sink = s3Sink(configFor(s3));
        try {
          const check = await checkBucket(sink);
          assert.equal(check.ok, false);
          if (check.ok) return;
          assert.equal(check.permanent, true, check.message);
          assert.ok(!check.message.includes(secret), check.message);
          assert.ok(!check.message.includes("SECRET"), check.message);
          assert.ok(!sink.describe().includes(secret));
        } finally {
          sink.close();
        }
      },
    );
  },
});

Deno.test("with a local archive the collector, check and verify never load the AWS SDK", async () => {
  // The SDK replaced by a module that fails as soon as anything imports it.
  const root = new URL("../", import.meta.url);
  const project = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
  const poisoned = "data:text/javascript," +
    encodeURIComponent('throw new Error("the AWS SDK was loaded");');
  await using tmp = await tempDir();
  const configPath = join(tmp.path, "deno.json");
  await Deno.writeTextFile(
    configPath,
    JSON.stringify({ imports: { ...project.imports, "@aws-sdk/client-s3": poisoned } }),
  );
  const script = (env: Record<string, string>) => `
    import { parseConfig } from "${new URL("src/config.ts", root)}";
    import "${new URL("src/main.ts", root)}";
    import { selectSink } from "${new URL("src/store/select.ts", root)}";
    import { archiveReaderFor } from "${new URL("src/cli/verify.ts", root)}";
    const config = parseConfig(${JSON.stringify({ DATA_DIR: tmp.path, ...env })});
    const selected = await selectSink(config);
    await archiveReaderFor(config);
    console.log(selected.sink.kind);
  `;
  const runScript = async (env: Record<string, string>) => {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-check", "--config", configPath, "-"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(script(env)));
    await writer.close();
    const { code, stdout, stderr } = await child.output();
    const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
    return { code, stdout: text(stdout).trim(), stderr: text(stderr) };
  };
  const local = await runScript({});
  assert.equal(local.code, 0, local.stderr);
  assert.equal(local.stdout, "local");
  // The control: with a bucket the SDK is loaded, and the poison shows (as a
  // missing export when the module is linked, or the error when it runs).
  const s3 = await runScript({ S3_BUCKET_NAME: "archive-bucket", AWS_REGION: "us-east-1" });
  assert.notEqual(s3.code, 0);
  assert.match(s3.stderr, /the AWS SDK was loaded|module '@aws-sdk\/client-s3'/);
});

Deno.test({
  name:
    "a bucket in another region is a configuration error: HeadBucket's bare 301 and PutObject's PermanentRedirect",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    // As S3 answers a client that asks the wrong region: HEAD gets 301 and no
    // body (so the SDK has no error code), other requests a PermanentRedirect.
    await using server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      (req) =>
        req.method === "HEAD"
          ? new Response(null, { status: 301, headers: { "x-amz-bucket-region": "eu-west-1" } })
          : new Response(
            '<?xml version="1.0" encoding="UTF-8"?><Error><Code>PermanentRedirect</Code>' +
              "<Message>The bucket you are attempting to access must be addressed using the " +
              "specified endpoint.</Message></Error>",
            { status: 301, headers: { "content-type": "application/xml" } },
          ),
    );
    await withCredentials(TEST_CREDENTIALS, async () => {
      const sink = s3Sink({
        bucket: TEST_BUCKET,
        prefix: "binance",
        region: "us-east-1",
        endpoint: `http://127.0.0.1:${server.addr.port}`,
        forcePathStyle: true,
      });
      try {
        const check = await checkBucket(sink);
        assert.equal(check.ok, false);
        if (check.ok) return;
        assert.equal(check.permanent, true, check.message);
        assert.match(check.message, /another region: set AWS_REGION/);
        const put = await sink.put("binance/k", new Uint8Array([1]), meta).then(
          () => undefined,
          (error: unknown) => error,
        );
        assert.equal(isRetryableS3Error(put), false);
      } finally {
        sink.close();
      }
    });
  },
});

Deno.test({
  name: "s3 sink: a put whose connection goes silent fails at its deadline (retryable), not never",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    // An endpoint that accepts and never answers: a half-open link after a network change.
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const held: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const conn of listener) held.push(conn);
    })();
    try {
      const config = loopbackConfig(listener.addr.port);
      await withCredentials(TEST_CREDENTIALS, async () => {
        const sink = s3Sink(config, { requestTimeoutMs: 500 });
        try {
          const started = performance.now();
          const error = await sink.put("binance/k.ndjson.gz", new Uint8Array(100), meta).then(
            () => undefined,
            (e: unknown) => e,
          );
          const tookMs = performance.now() - started;
          assert.ok(error instanceof Error, "the put failed");
          assert.equal(isRetryableS3Error(error), true, String(error));
          assert.ok(tookMs >= 400 && tookMs < 5000, `failed after ${Math.round(tookMs)} ms`);
        } finally {
          sink.close();
        }
      });
    } finally {
      listener.close();
      await accepting.catch(() => {});
      for (const conn of held) conn.close();
    }
  },
});

Deno.test({
  name: "s3 sink: a large put on a slow link that keeps reading gets the time its size needs",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    // Reads at most 64 KiB every 40 ms, then answers 200: 2 MiB take seconds, far past
    // the 500 ms base, well within the allowance for its size at 64 KiB/s.
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const serving = (async () => {
      for await (const conn of listener) {
        const buffer = new Uint8Array(64 * 1024);
        let head = "";
        let length = -1;
        let body = 0;
        for (;;) {
          await delay(40);
          const n = await conn.read(buffer);
          if (n === null) break;
          if (length < 0) {
            head += new TextDecoder().decode(buffer.subarray(0, n));
            const end = head.indexOf("\r\n\r\n");
            if (end < 0) continue;
            length = Number(/content-length: (\d+)/i.exec(head)![1]);
            body = head.length - end - 4;
          } else body += n;
          if (length >= 0 && body >= length) {
            const ok = 'HTTP/1.1 200 OK\r\nETag: "x"\r\nContent-Length: 0\r\n\r\n';
            await conn.write(new TextEncoder().encode(ok));
            break;
          }
        }
        conn.close();
      }
    })();
    try {
      const config = { ...loopbackConfig(listener.addr.port), credentials: TEST_CREDENTIALS };
      const sink = s3Sink(config, { requestTimeoutMs: 500 });
      const hurried = s3Sink(config, { requestTimeoutMs: 500, minBytesPerSecond: 1e12 });
      try {
        const started = performance.now();
        await sink.put("binance/big.ndjson.gz", new Uint8Array(2 * 1024 * 1024), meta);
        const tookMs = performance.now() - started;
        assert.ok(
          tookMs > 700,
          `the link was slow: ${Math.round(tookMs)} ms, past the 500 ms base`,
        );
        // Without the allowance for its size, the same put fails at the base deadline.
        const error = await hurried.put("binance/big.ndjson.gz", new Uint8Array(1024 * 1024), meta)
          .then(() => undefined, (e: unknown) => e);
        assert.ok(error instanceof Error && isRetryableS3Error(error), String(error));
      } finally {
        sink.close();
        hurried.close();
      }
    } finally {
      listener.close();
      await serving.catch(() => {});
    }
  },
});
