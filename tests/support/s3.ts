/**
 * A real S3 HTTP server (npm s3rver) on 127.0.0.1 for tests, which can be
 * stopped and started again on the same port and directory to simulate an
 * outage, plus a client to read back what was stored.
 */

import { GetObjectCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import S3rver from "s3rver";

export const TEST_BUCKET = "l2-test-bucket";
export const TEST_CREDENTIALS = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };

export class TestS3 implements AsyncDisposable {
  readonly directory: string;
  #port: number;
  #server: S3rver | undefined;
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
    // close() waits for keep-alive connections to end: cut them, like an outage.
    const http = (server as unknown as { httpServer?: { closeAllConnections(): void } }).httpServer;
    const closed = server.close();
    http?.closeAllConnections();
    await closed;
  }

  /** Starts (again) on the same port and directory. */
  async resume(): Promise<void> {
    if (this.#server) return;
    const server = new S3rver({
      address: "127.0.0.1",
      port: this.#port,
      silent: true,
      directory: this.directory,
      configureBuckets: [{ name: TEST_BUCKET, configs: [] }],
    });
    const address = await server.run();
    this.#port = address.port;
    this.#server = server;
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
