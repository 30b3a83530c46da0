/**
 * Fetching one archive object for `verify` and `book`, so that a store that
 * failed to hand an object over is never taken for an object that is damaged.
 *
 * - The read request failing (an S3 error answer such as 503 SlowDown, a
 *   network error, a timeout; for the local archive a filesystem error such
 *   as EACCES) is retried a few times with backoff, on top of the SDK's own
 *   retries; when it still fails, a `FetchError`: the caller stops, having
 *   judged nothing about that object (exit 2, as for a listing that fails).
 * - The body stream breaking while it is read (a connection cut, the idle
 *   timeout) is a `FetchError` too, at once: lines before it were already
 *   handed on, so it cannot be read again from the start without judging
 *   them twice.
 * - A listed object that is gone when read (S3 NoSuchKey, a local NotFound)
 *   was deleted during the read: a `GoneError`, a finding about the archive.
 * - Anything else (a gzip or text decoding error while reading the body) is
 *   about the stored bytes: damage, which the callers report as before.
 */

import { delay } from "../delay.ts";
import { httpStatus, isRetryableS3Error, s3ErrorCode } from "../store/s3_errors.ts";
import type { ArchiveReader, StoredObject } from "./archive.ts";

/** The object could not be fetched: nothing is known about its bytes. */
export class FetchError extends Error {
  constructor(
    readonly key: string,
    override readonly cause: unknown,
    /** Requests made (1 when the body broke, or the error is not worth another). */
    readonly attempts: number,
  ) {
    super(describeReadError(cause));
    this.name = "FetchError";
  }
}

/** A listed object that no longer exists when read. */
export class GoneError extends Error {
  constructor(readonly key: string, override readonly cause: unknown) {
    super(`it was listed but is gone when read: deleted meanwhile? (${describeReadError(cause)})`);
    this.name = "GoneError";
  }
}

export interface FetchPolicy {
  /** Requests made at most for one object (each may be several by the SDK's own retries). */
  readonly attempts: number;
  /** The wait before the second request, ms; it doubles before each one after. */
  readonly backoffMs: number;
}

/**
 * Four requests, waiting 1, 2 and 4 s between them: beyond the SDK's own
 * three attempts (under a second), enough to ride out S3 throttling a burst
 * of reads, short enough that a store that is down ends the command soon.
 */
export const DEFAULT_FETCH_POLICY: FetchPolicy = { attempts: 4, backoffMs: 1000 };

/**
 * Reads `key`, retrying a failed request by `policy`; the body comes wrapped
 * by `guardBody`. Rejects with `FetchError` or `GoneError`; stops retrying
 * (with a `FetchError`) when `signal` aborts.
 */
export async function fetchObject(
  reader: ArchiveReader,
  key: string,
  options: { readonly policy?: FetchPolicy; readonly signal?: AbortSignal } = {},
): Promise<StoredObject> {
  const { attempts, backoffMs } = options.policy ?? DEFAULT_FETCH_POLICY;
  for (let attempt = 1;; attempt++) {
    try {
      const stored = await reader.read(key);
      return { ...stored, body: guardBody(key, stored.body) };
    } catch (error) {
      if (isGone(error)) throw new GoneError(key, error);
      const last = attempt >= attempts || !isRetryableS3Error(error) || options.signal?.aborted;
      if (last) throw new FetchError(key, error, attempt);
      await delay(backoffMs * 2 ** (attempt - 1), options.signal);
      // Stopped while waiting (delay resolves early, never rejects): no further request.
      if (options.signal?.aborted) throw new FetchError(key, error, attempt);
    }
  }
}

/**
 * The body, with an error of the stream itself (not of what reads it)
 * turned into a `FetchError`: piped through a decompressor, the error comes
 * out as it went in, so a reader tells a cut connection from damaged gzip.
 */
export function guardBody(
  key: string,
  body: ReadableStream<Uint8Array<ArrayBuffer>>,
): ReadableStream<Uint8Array<ArrayBuffer>> {
  const reader = body.getReader();
  return new ReadableStream({
    async pull(controller) {
      let result: ReadableStreamReadResult<Uint8Array<ArrayBuffer>>;
      try {
        result = await reader.read();
      } catch (error) {
        throw new FetchError(key, error, 1);
      }
      if (result.done) controller.close();
      else controller.enqueue(result.value);
    },
    cancel: (reason) => reader.cancel(reason),
  });
}

/** A read of a listed key that found nothing there (not a missing bucket). */
function isGone(error: unknown): boolean {
  return error instanceof Deno.errors.NotFound || s3ErrorCode(error) === "NoSuchKey";
}

/** An S3 or filesystem error for people: its code and HTTP status, then its message. */
export function describeReadError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = s3ErrorCode(error);
  const status = httpStatus(error);
  const head = status === undefined ? code : `${code} (HTTP ${status})`;
  const message = error.message.trim();
  if (message === "" || message === code) return head;
  return message.startsWith(code) ? message : `${head}: ${message}`;
}
