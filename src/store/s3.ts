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
  PutObjectCommand,
  S3Client,
  type ServerSideEncryption,
  type StorageClass,
} from "@aws-sdk/client-s3";
import { createHash } from "node:crypto";
import type { S3Config } from "../config_types.ts";
import { metaToRecord, type ObjectMeta, type Sink } from "./sink.ts";

export interface S3Sink extends Sink {
  readonly kind: "s3";
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
  /** Per-request timeout, ms. */
  readonly requestTimeoutMs?: number;
}

/** An S3 client for the configured store; credentials from the SDK's chain. */
export function s3Client(
  config: S3Config,
  options: { maxAttempts?: number; requestTimeoutMs?: number } = {},
): S3Client {
  return new S3Client({
    region: config.region ?? "us-east-1",
    endpoint: config.endpoint,
    forcePathStyle: config.forcePathStyle,
    maxAttempts: options.maxAttempts,
    requestHandler: {
      connectionTimeout: 5_000,
      requestTimeout: options.requestTimeoutMs ?? 30_000,
    },
  });
}

export function s3Sink(config: S3Config, options: S3SinkOptions = {}): S3Sink {
  const client = options.client ??
    s3Client(config, { maxAttempts: 1, requestTimeoutMs: options.requestTimeoutMs });
  const describe = () =>
    `bucket "${config.bucket}" (region ${config.region ?? "from the AWS config"}, endpoint ${
      config.endpoint ?? "AWS default"
    })`;
  return {
    kind: "s3",
    bucket: config.bucket,
    location: `s3://${config.bucket}/${config.prefix}`,
    describe,
    async put(key: string, body: Uint8Array, meta: ObjectMeta, signal?: AbortSignal) {
      await client.send(
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
        }),
        { abortSignal: signal },
      );
    },
    async headBucket(signal?: AbortSignal) {
      await client.send(new HeadBucketCommand({ Bucket: config.bucket }), { abortSignal: signal });
    },
    async deleteObject(key: string, signal?: AbortSignal) {
      await client.send(new DeleteObjectCommand({ Bucket: config.bucket, Key: key }), {
        abortSignal: signal,
      });
    },
    close: () => client.destroy(),
  };
}
