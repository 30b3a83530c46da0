/**
 * A real S3 HTTP server (npm s3rver) on 127.0.0.1 for tests, which can be
 * stopped and started again on the same port and directory to simulate an
 * outage, plus a client to read back what was stored.
 *
 * s3rver runs in its own process (s3rver_main.ts, pinned by s3rver.lock), so
 * it is not a dependency of the project: a first `deno task start` does not
 * fetch it and its web framework.
 */

import { GetObjectCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";

export const TEST_BUCKET = "l2-test-bucket";
export const TEST_CREDENTIALS = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };

export class TestS3 implements AsyncDisposable {
  readonly directory: string;
  #port: number;
  #server: Deno.ChildProcess | undefined;
  #client: S3Client | undefined;

  private constructor(directory: string, port: number) {
    this.directory = directory;
    this.#port = port;
  }

  static async start(): Promise<TestS3> {
    const directory = await Deno.makeTempDir({ prefix: "l2-s3rver-" });
    const s3 = new TestS3(directory, 0);
    await s3.resume();
    return s3;
  }

  /** A client for reading back; the port is known once the server first ran. */
  get client(): S3Client {
    this.#client ??= new S3Client({
      region: "us-east-1",
      endpoint: this.endpoint,
      forcePathStyle: true,
      credentials: TEST_CREDENTIALS,
    });
    return this.#client;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.#port}`;
  }

  get running(): boolean {
    return this.#server !== undefined;
  }

  /** The environment that points the collector at this server. */
  env(): Record<string, string> {
    return {
      S3_BUCKET_NAME: TEST_BUCKET,
      S3_ENDPOINT: this.endpoint,
      S3_FORCE_PATH_STYLE: "true",
      AWS_REGION: "us-east-1",
      AWS_ACCESS_KEY_ID: TEST_CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: TEST_CREDENTIALS.secretAccessKey,
    };
  }

  /** Stops answering (connections are refused) until `resume`. */
  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    if (!server) return;
    // Killed, not closed: open connections are cut at once, like an outage.
    try {
      server.kill("SIGKILL");
    } catch {
      // already exited
    }
    await server.status;
  }

  /** Starts (again) on the same port and directory. */
  async resume(): Promise<void> {
    if (this.#server) return;
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--no-config",
        `--lock=${SUPPORT}s3rver.lock`,
        "--frozen",
        `${SUPPORT}s3rver_main.ts`,
        "--port",
        String(this.#port),
        "--directory",
        this.directory,
        "--bucket",
        TEST_BUCKET,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderr = collect(child.stderr);
    const line = await firstLine(child.stdout, 60_000);
    if (line === undefined) {
      try {
        child.kill("SIGKILL");
      } catch {
        // already exited
      }
      await child.status;
      throw new Error(`s3rver did not start: ${(await stderr).slice(-2000)}`);
    }
    this.#port = (JSON.parse(line) as { port: number }).port;
    this.#server = child;
  }

  /** Every key in the bucket, sorted. */
  async keys(prefix = ""): Promise<string[]> {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({ Bucket: TEST_BUCKET, Prefix: prefix, ContinuationToken: token }),
      );
      for (const item of page.Contents ?? []) if (item.Key) keys.push(item.Key);
      token = page.NextContinuationToken;
    } while (token);
    return keys.sort();
  }

  async get(key: string): Promise<{ body: Uint8Array; metadata: Record<string, string> }> {
    const out = await this.client.send(new GetObjectCommand({ Bucket: TEST_BUCKET, Key: key }));
    return { body: await out.Body!.transformToByteArray(), metadata: out.Metadata ?? {} };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
    this.#client?.destroy();
    await Deno.remove(this.directory, { recursive: true }).catch(() => {});
  }
}

const SUPPORT = new URL("./", import.meta.url).pathname;

/** The first line of `stream` (the rest is drained), or undefined after `timeoutMs` or at its end. */
async function firstLine(
  stream: ReadableStream<Uint8Array>,
  timeoutMs: number,
): Promise<string | undefined> {
  const lines = stream.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const timer = setTimeout(() => lines.cancel().catch(() => {}), timeoutMs);
  try {
    while (!text.includes("\n")) {
      const { value, done } = await lines.read();
      if (done) return undefined;
      text += value;
    }
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
  }
  (async () => {
    while (!(await lines.read()).done);
  })().catch(() => {});
  return text.slice(0, text.indexOf("\n"));
}

/** Everything `stream` yields, as text, once it ends. */
async function collect(stream: ReadableStream<Uint8Array>): Promise<string> {
  let text = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) text += chunk;
  return text;
}
