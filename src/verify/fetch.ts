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
 *   timeout) is resumed where it broke: the rest is asked for (an S3 range
 *   read with `If-Match` on the first read's ETag; the local file reopened,
 *   same inode, size and mtime), so the reader sees one unbroken stream and
 *   no line is judged twice. Each resumed read is retried like a first one;
 *   three resumed reads in a row that bring no byte (or 20 in all), the rest
 *   not to be had, another version, a store that gives no version, or S3's
 *   checksum failing: a `FetchError`.
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
    /** Requests made (1 when the error is not worth another). */
    readonly attempts: number,
    /** What was going on, for people: the body broke off after N bytes. */
    context?: string,
  ) {
    super(context ? `${context}: ${describeReadError(cause)}` : describeReadError(cause));
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
 * Reads `key`, retrying a failed request by `policy`; a body that breaks is
 * read on from where it broke (`resumingBody`). Rejects with `FetchError` or
 * `GoneError`; stops retrying (with a `FetchError`) when `signal` aborts.
 */
export async function fetchObject(
  reader: ArchiveReader,
  key: string,
  options: { readonly policy?: FetchPolicy; readonly signal?: AbortSignal } = {},
): Promise<StoredObject> {
  const stored = await readWithRetries(key, () => reader.read(key), options);
  const { version } = stored;
  const resume = version === undefined
    ? undefined
    : (offset: number) =>
      readWithRetries(key, () => reader.read(key, { offset, version }), options);
  return { ...stored, body: resumingBody(key, stored, resume, options) };
}

/** `read` until it succeeds, tried by `policy`; a `FetchError` or `GoneError` when it never does. */
async function readWithRetries(
  key: string,
  read: () => Promise<StoredObject>,
  options: { readonly policy?: FetchPolicy; readonly signal?: AbortSignal },
): Promise<StoredObject> {
  const { attempts, backoffMs } = options.policy ?? DEFAULT_FETCH_POLICY;
  for (let attempt = 1;; attempt++) {
    try {
      return await read();
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
 * The object's bytes as one stream, read on by `resume(offset)` from where
 * the body broke: an error of the stream itself (not of what reads it) is a
 * `FetchError` only when the rest cannot be had. Piped through a
 * decompressor, that error comes out as it went in, so a reader tells a cut
 * connection from damaged gzip. A resumed read must find the version the
 * first read found; without a version (a store that sends no ETag) a break
 * is not read on. Resumed reads that bring no byte wait longer each time.
 */
export function resumingBody(
  key: string,
  first: StoredObject,
  resume: ((offset: number) => Promise<StoredObject>) | undefined,
  options: { readonly policy?: FetchPolicy; readonly signal?: AbortSignal } = {},
): ReadableStream<Uint8Array<ArrayBuffer>> {
  const { backoffMs } = options.policy ?? DEFAULT_FETCH_POLICY;
  let reader = first.body.getReader();
  let offset = 0;
  let resumes = 0;
  /** Breaks in a row with no byte between them. */
  let barren = 0;
  let cancelled = false;
  const broke = (cause: unknown, attempts = 1) =>
    new FetchError(key, cause, attempts, `its body broke off after ${offset} bytes`);
  const next = async (): Promise<ReadableStreamReadResult<Uint8Array<ArrayBuffer>>> => {
    for (;;) {
      try {
        const result = await reader.read();
        if (!result.done && result.value.byteLength > 0) barren = 0;
        return result;
      } catch (error) {
        // S3's checksum of what it sent fails after the last byte: those bytes are not to be had.
        const checksum = isChecksumMismatch(error);
        // Every byte came before the break.
        if (offset === first.size && !checksum) return { done: true, value: undefined };
        if (!resume || checksum) throw broke(error);
        if (++barren > RESUMES_WITHOUT_PROGRESS || ++resumes > MAX_RESUMES) {
          throw broke(error, resumes);
        }
        if (barren > 1) await delay(backoffMs * 2 ** (barren - 2), options.signal);
        reader = await readOn(first, () => resume(offset), broke);
        if (cancelled) await reader.cancel().catch(() => {});
      }
    }
  };
  return new ReadableStream({
    async pull(controller) {
      const result = await next();
      if (result.done) controller.close();
      else {
        offset += result.value.byteLength;
        controller.enqueue(result.value);
      }
    },
    async cancel(reason) {
      cancelled = true;
      // A reader that broke rejects its cancel with the break: nothing is left to release.
      await reader.cancel(reason).catch(() => {});
    },
  });
}

/**
 * The reader of the rest of `first`, read by `resume()` after its stream
 * broke; a `FetchError` (by `broke`) when the rest cannot be had or is
 * another version of the object (S3 answers 412 to the `If-Match`).
 */
async function readOn(
  first: StoredObject,
  resume: () => Promise<StoredObject>,
  broke: (cause: unknown, attempts?: number) => FetchError,
): Promise<ReadableStreamDefaultReader<Uint8Array<ArrayBuffer>>> {
  let rest: StoredObject;
  try {
    rest = await resume();
  } catch (error) {
    if (!(error instanceof FetchError)) throw error;
    if (s3ErrorCode(error.cause) === "PreconditionFailed") {
      throw broke(new ChangedWhileReadError(first.version, undefined, error.cause));
    }
    throw broke(error.cause, error.attempts);
  }
  if (rest.version !== first.version) {
    await rest.body.cancel().catch(() => {});
    throw broke(new ChangedWhileReadError(first.version, rest.version, undefined));
  }
  return rest.body.getReader();
}

/** Breaks resumed in a row without a byte read between them before the read is given up. */
const RESUMES_WITHOUT_PROGRESS = 3;
/** Breaks resumed in all, per object. */
const MAX_RESUMES = 20;

/** S3's own check of the bytes it sent (the SDK's response checksum) failed: they are not to be trusted. */
function isChecksumMismatch(error: unknown): boolean {
  return error instanceof Error && /checksum mismatch/i.test(error.message);
}

/** The object was replaced between the read that broke and the one resuming it. */
export class ChangedWhileReadError extends Error {
  constructor(
    readonly before: string | undefined,
    readonly after: string | undefined,
    override readonly cause: unknown,
  ) {
    super(
      `it changed while it was read (version ${before}, then ${after ?? "another"}` +
        (cause === undefined ? ")" : `; ${describeReadError(cause)})`),
    );
    this.name = "ChangedWhileRead";
  }
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
