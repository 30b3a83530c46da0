/**
 * The S3 sink (any S3-compatible store). The only module that imports the
 * AWS SDK. Objects carry user metadata (counts, receive times, update ids)
 * and a Content-MD5 the server verifies, so a corrupted upload is refused.
 *
 * The SDK's own retries are off (maxAttempts 1): the uploader retries and
 * spools, so every attempt is counted and nothing waits in a hidden loop.
 */

import {
  DeleteObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  PutObjectCommand,
  S3Client,
  type ServerSideEncryption,
  type StorageClass,
} from "@aws-sdk/client-s3";
import { createHash } from "node:crypto";
import type { S3Config } from "../config_types.ts";
import { httpStatus, s3ErrorCode } from "./s3_errors.ts";
import { metaToRecord, type ObjectMeta } from "../archive/meta.ts";
import type { Sink } from "./sink.ts";

export interface S3Sink extends Sink {
  readonly kind: "s3";
  putNew(key: string, body: Uint8Array, meta: ObjectMeta, signal?: AbortSignal): Promise<boolean>;
  readonly bucket: string;
  /** HeadBucket: are the bucket and the credentials usable? */
  headBucket(signal?: AbortSignal): Promise<void>;
  deleteObject(key: string, signal?: AbortSignal): Promise<void>;
  /** Bucket, region and endpoint, for messages (never credentials). */
  describe(): string;
  close(): void;
}

export interface S3SinkOptions {
  /** A client to use instead of one built from the config (tests). */
  readonly client?: S3Client;
  /**
   * A request fails (as a timeout, retried) when it has not finished after
   * this many ms plus its body's size at `minBytesPerSecond`: a put on a dead
   * link (half-open after a network change, an endpoint that accepts and never
   * answers) never holds an upload slot or the spool's drain for good, and a
   * large upload on a slow link that keeps sending gets its time. Default 30 s.
   */
  readonly requestTimeoutMs?: number;
  /** The slowest upload a deadline allows for, bytes a second. Default 64 KiB/s. */
  readonly minBytesPerSecond?: number;
}

/** An S3 client for the configured store: the keys or profile configured, else the SDK's chain. */
export function s3Client(
  config: S3Config,
  options: { maxAttempts?: number; idleTimeoutMs?: number } = {},
): S3Client {
  // `idleTimeoutMs` (a download: each read resets it) fails a connection silent that long. Not
  // for uploads: the handler sends a body in one write, which resets it only once drained.
  return new S3Client({
    region: config.region ?? "us-east-1",
    // From the environment or the env file: the SDK's own chain sees only the environment.
    credentials: config.credentials,
    profile: config.profile,
    endpoint: config.endpoint,
    forcePathStyle: config.forcePathStyle,
    maxAttempts: options.maxAttempts,
    requestHandler: {
      connectionTimeout: 5_000,
      // (The handler's `requestTimeout` only logs a warning unless told to throw.)
      socketTimeout: options.idleTimeoutMs,
    },
  });
}

/** A HEAD's "no such key" (HEAD answers carry no error code, only 404). */
function isNotFound(error: unknown): boolean {
  const code = s3ErrorCode(error);
  return httpStatus(error) === 404 || code === "NotFound" || code === "NoSuchKey";
}

export function s3Sink(config: S3Config, options: S3SinkOptions = {}): S3Sink {
  const client = options.client ?? s3Client(config, { maxAttempts: 1 });
  const baseMs = options.requestTimeoutMs ?? 30_000;
  const bytesPerMs = (options.minBytesPerSecond ?? 64 * 1024) / 1000;
  /** The caller's signal (shutdown), or this request's deadline, whichever comes first. */
  const within = (signal: AbortSignal | undefined, bytes = 0): AbortSignal => {
    const deadline = AbortSignal.timeout(Math.ceil(baseMs + bytes / bytesPerMs));
    return signal ? AbortSignal.any([signal, deadline]) : deadline;
  };
  const describe = () =>
    `bucket "${config.bucket}" (region ${
      config.region ?? "us-east-1, AWS_REGION unset"
    }, endpoint ${config.endpoint ?? "AWS default"})`;
  const putCommand = putCommandFor(config);
  return {
    kind: "s3",
    bucket: config.bucket,
    location: `s3://${config.bucket}/${config.prefix}`,
    describe,
    async put(key: string, body: Uint8Array, meta: ObjectMeta, signal?: AbortSignal) {
      await client.send(putCommand(key, body, meta), {
        abortSignal: within(signal, body.length),
      });
    },
    putNew: (key: string, body: Uint8Array, meta: ObjectMeta, signal?: AbortSignal) =>
      putNew(client, {
        bucket: config.bucket,
        key,
        command: putCommand,
        meta,
        signal: within(signal, body.length),
      }, body),
    async headBucket(signal?: AbortSignal) {
      await client.send(new HeadBucketCommand({ Bucket: config.bucket }), {
        abortSignal: within(signal),
      });
    },
    async deleteObject(key: string, signal?: AbortSignal) {
      await client.send(new DeleteObjectCommand({ Bucket: config.bucket, Key: key }), {
        abortSignal: within(signal),
      });
    },
    close: () => client.destroy(),
  };
}

type PutCommandFor = (
  key: string,
  body: Uint8Array,
  meta: ObjectMeta,
  conditions?: { ifNoneMatch?: string },
) => PutObjectCommand;

/** The put of one object, as every put of this sink sends it. */
function putCommandFor(config: S3Config): PutCommandFor {
  return (key, body, meta, conditions = {}) =>
    new PutObjectCommand({
      Bucket: config.bucket,
      Key: key,
      Body: body,
      ContentLength: body.length,
      ContentType: "application/gzip",
      ContentMD5: createHash("md5").update(body).digest("base64"),
      Metadata: metaToRecord(meta),
      ServerSideEncryption: config.sse as ServerSideEncryption | undefined,
      SSEKMSKeyId: config.sseKmsKeyId,
      StorageClass: config.storageClass as StorageClass | undefined,
      IfNoneMatch: conditions.ifNoneMatch,
    });
}

/**
 * HEAD, then a put with `If-None-Match: *`: AWS S3 (and others) refuse it
 * with 412 if the key appeared in between. A store that ignores the header
 * (s3rver) still had the HEAD; one that refuses it as not implemented gets
 * the plain put, after the HEAD. False when the key exists.
 */
async function putNew(
  client: S3Client,
  put: {
    bucket: string;
    key: string;
    command: PutCommandFor;
    meta: ObjectMeta;
    signal?: AbortSignal;
  },
  body: Uint8Array,
): Promise<boolean> {
  const { bucket, key, meta, signal } = put;
  try {
    await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: signal });
    return false;
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
  try {
    await client.send(put.command(key, body, meta, { ifNoneMatch: "*" }), { abortSignal: signal });
    return true;
  } catch (error) {
    // 412: the key appeared meanwhile. A 409 (ConditionalRequestConflict) says
    // another write of the key is in progress, not that it succeeded: thrown,
    // and retried (the retry's HEAD then finds the object, or the put goes).
    const status = httpStatus(error);
    if (status === 412) return false;
    if (status !== 501 && s3ErrorCode(error) !== "NotImplemented") throw error;
  }
  await client.send(put.command(key, body, meta), { abortSignal: signal });
  return true;
}
