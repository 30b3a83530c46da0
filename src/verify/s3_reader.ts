/**
 * The archive in S3 (any S3-compatible store), read for `verify`:
 * ListObjectsV2 page by page (one level at a time by skipping ahead) and
 * GetObject streamed, so a large object is never held whole in memory; its
 * user metadata comes in the same response.
 *
 * The client is the sink's (store/s3.ts), except that the SDK's own
 * retries stay on: a read has no uploader around it to retry.
 */

import { GetObjectCommand, ListObjectsV2Command, type S3Client } from "@aws-sdk/client-s3";
import { s3Client } from "../store/s3.ts";
import type { S3Config } from "../config_types.ts";
import { type ArchiveEntry, type ArchiveReader, isObjectKey, type ReadFrom } from "./archive.ts";

export interface S3ReaderOptions {
  /** A client to use instead of one built from the config (tests). */
  readonly client?: S3Client;
  /** How long a request's connection may stay silent before it fails, ms (a GetObject: the longest wait for more bytes). */
  readonly idleTimeoutMs?: number;
}

export function s3ArchiveReader(config: S3Config, options: S3ReaderOptions = {}): ArchiveReader {
  const client = options.client ??
    s3Client(config, { idleTimeoutMs: options.idleTimeoutMs ?? 30_000 });
  const bucket = { client, bucket: config.bucket };
  return {
    location: `s3://${config.bucket}/${config.prefix}`,
    async *list(prefix: string) {
      for await (const page of pages(bucket, prefix)) {
        for (const item of page.Contents ?? []) {
          if (item.Key !== undefined && isObjectKey(item.Key)) yield item.Key;
        }
      }
    },
    children: (prefix: string) => children(bucket, prefix),
    async read(key: string, from?: ReadFrom) {
      const out = await client.send(
        new GetObjectCommand({
          Bucket: config.bucket,
          Key: key,
          // A resumed read: the rest of the same version (S3 answers 412 when it changed).
          ...(from && { Range: `bytes=${from.offset}-`, IfMatch: from.version }),
        }),
      );
      if (!out.Body) throw new Error(`GetObject ${key}: empty response body`);
      const body = out.Body.transformToWebStream() as ReadableStream<Uint8Array<ArrayBuffer>>;
      // The user metadata comes with the object: no HeadObject per object.
      const stored = { meta: out.Metadata, version: out.ETag };
      if (!from) return { ...stored, body, size: out.ContentLength };
      const range = rangeOf(out.ContentRange);
      // A server may ignore Range (RFC 9110) and send the whole object: its first bytes were read.
      if (!range) return { ...stored, body: skipped(body, from.offset), size: out.ContentLength };
      if (range.start !== from.offset) {
        await body.cancel().catch(() => {});
        throw new Error(
          `GetObject ${key}: asked for the bytes from ${from.offset}, answered from ${range.start}`,
        );
      }
      return { ...stored, body, size: range.total };
    },
    close: () => client.destroy(),
  };
}

/** A range answer's `Content-Range: bytes 50-99/100`: where it starts, and the whole object's size. */
function rangeOf(contentRange: string | undefined) {
  const match = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(contentRange ?? "");
  if (!match) return undefined;
  const total = Number(match[2]);
  return { start: Number(match[1]), total: Number.isSafeInteger(total) ? total : undefined };
}

/** `body` without its first `count` bytes. */
function skipped(
  body: ReadableStream<Uint8Array<ArrayBuffer>>,
  count: number,
): ReadableStream<Uint8Array<ArrayBuffer>> {
  let left = count;
  return body.pipeThrough(
    new TransformStream<Uint8Array<ArrayBuffer>, Uint8Array<ArrayBuffer>>({
      transform(chunk, controller) {
        if (left >= chunk.byteLength) left -= chunk.byteLength;
        else {
          controller.enqueue(chunk.subarray(left));
          left = 0;
        }
      },
    }),
  );
}

/** The bucket a reader lists, and the client it lists with. */
interface Bucket {
  readonly client: S3Client;
  readonly bucket: string;
}

/** Every listing page of the keys under `prefix`. */
async function* pages({ client, bucket }: Bucket, prefix: string) {
  let token: string | undefined;
  do {
    const page = await client.send(
      new ListObjectsV2Command({
        Bucket: bucket,
        Prefix: prefix,
        ContinuationToken: token,
      }),
    );
    yield page;
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
}

/**
 * One level below `prefix` without a `/` Delimiter (which s3rver gets wrong
 * for keys more than one level down): list in key order and, on meeting a
 * sub-prefix `name/`, jump past it with StartAfter `name0` ('0' follows
 * '/'), so each sub-prefix costs one small request whatever it holds.
 */
async function* children({ client, bucket }: Bucket, prefix: string): AsyncGenerator<ArchiveEntry> {
  let startAfter: string | undefined;
  for (;;) {
    const page = await client.send(
      new ListObjectsV2Command({
        Bucket: bucket,
        Prefix: prefix,
        StartAfter: startAfter,
        MaxKeys: 100,
      }),
    );
    let jumpTo: string | undefined;
    for (const item of page.Contents ?? []) {
      const key = item.Key;
      if (key === undefined) continue;
      const slash = key.indexOf("/", prefix.length);
      if (slash === -1) {
        if (isObjectKey(key)) yield { key };
        startAfter = key;
        continue;
      }
      yield { prefix: key.slice(0, slash + 1) };
      jumpTo = `${key.slice(0, slash)}0`;
      break;
    }
    if (jumpTo !== undefined) startAfter = jumpTo;
    else if (!page.IsTruncated) return;
  }
}
