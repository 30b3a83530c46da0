/**
 * Appending bytes to many files at once: how the crash journal writes each
 * open batch's new compressed piece to the batch's own file every 250 ms
 * (store/journal.ts). The gzip worker does it (compress.ts
 * `workerAppender`): 1,500 open batches mean 6,000 appends a second, which
 * as async file operations on the main thread cost it a thread-pool round
 * trip each, beside the WebSocket handling that stamps receive times.
 * `localAppender` does the same on the calling thread (tests, and the
 * fallback when the worker fails); `SyncAppender` too, synchronously, for a
 * flush of a few small appends (a quiet recorder), where the round trip to
 * the worker would cost more than the writes.
 *
 * Promise: a write's result comes only after its bytes are written (or the
 * write failed), with the CRC-32 of each part, so the caller can record
 * where the bytes are and trust the record. Each file is opened, written
 * and closed again (`SyncAppender` keeps at most 16 open): 1,500 open
 * batches would need more descriptors than a default limit allows (256
 * under launchd on macOS).
 */

import { crc32 } from "node:zlib";
import { concatBytes } from "../archive/bytes.ts";

/** One file's bytes for one flush. */
export interface FileAppend {
  readonly path: string;
  /** Bytes of the file written whole so far: where these bytes go. */
  readonly at: number;
  /**
   * An earlier write to it failed: cut the file back to `at` first, since
   * it may hold part of that write.
   */
  readonly truncate: boolean;
  /** The bytes, in parts; the result has the CRC-32 of each part. */
  readonly parts: readonly Uint8Array[];
  /** Nothing more will be appended to the file (an appender that keeps it open closes it). */
  readonly last?: boolean;
}

/** What became of one `FileAppend`: written (each part's CRC-32), or the error. */
export type AppendResult = { readonly crcs: ArrayLike<number> } | { readonly error: Error };

/** Writes several files' appends; one result per append, in order. Never rejects. */
export interface FileAppender {
  append(appends: readonly FileAppend[]): Promise<AppendResult[]>;
  /** Lets go of what it keeps open (files); later appends may open them again. */
  close?(): void;
}

/** The CRC-32 of each part (unsigned). */
export function crcsOf(parts: readonly Uint8Array[]): number[] {
  return parts.map((part) => crc32(part) >>> 0);
}

/** Appends on the calling thread, asynchronously, all files at once. */
export function localAppender(): FileAppender {
  return {
    append: (appends) =>
      Promise.all(appends.map(async (append): Promise<AppendResult> => {
        try {
          await appendHere(append);
          return { crcs: crcsOf(append.parts) };
        } catch (error) {
          return { error: error instanceof Error ? error : new Error(String(error)) };
        }
      })),
  };
}

/**
 * Appends on the calling thread, synchronously, one file after another:
 * for a few small appends, where a round trip to another thread (a worker,
 * or Deno's pool for async file operations) costs more than the writes. Up
 * to `keep` files stay open between calls (opening a file costs more than
 * writing a few KB to it), the least recently used closed first; a file is
 * closed after its `last` append, and all of them by `close`.
 */
export class SyncAppender implements FileAppender {
  readonly #keep: number;
  /** Open files, least recently used first. */
  readonly #open = new Map<string, Deno.FsFile>();

  constructor(keep = 16) {
    this.#keep = keep;
  }

  /** Files open now. */
  get openFiles(): number {
    return this.#open.size;
  }

  append(appends: readonly FileAppend[]): Promise<AppendResult[]> {
    return Promise.resolve(this.appendNow(appends));
  }

  /** `append`, done before it returns. */
  appendNow(appends: readonly FileAppend[]): AppendResult[] {
    return appends.map((append): AppendResult => {
      try {
        this.#write(append);
        return { crcs: crcsOf(append.parts) };
      } catch (error) {
        this.#drop(append.path);
        return { error: error instanceof Error ? error : new Error(String(error)) };
      }
    });
  }

  /** Closes every file kept open. */
  close(): void {
    for (const path of [...this.#open.keys()]) this.#drop(path);
  }

  /** Closes the file if it is kept open (another appender writes its last bytes). */
  release(path: string): void {
    this.#drop(path);
  }

  #write({ path, at, truncate, parts, last }: FileAppend): void {
    let file = this.#open.get(path);
    this.#open.delete(path);
    file ??= Deno.openSync(path, { append: true, create: true });
    this.#open.set(path, file);
    if (truncate) file.truncateSync(at);
    for (const part of parts) {
      let written = 0;
      while (written < part.length) written += file.writeSync(part.subarray(written));
    }
    if (last) this.#drop(path);
    while (this.#open.size > this.#keep) this.#drop(this.#open.keys().next().value!);
  }

  #drop(path: string): void {
    const file = this.#open.get(path);
    this.#open.delete(path);
    try {
      file?.close();
    } catch {
      // Already closed, or the descriptor is bad: it is gone either way.
    }
  }
}

async function appendHere({ path, at, truncate, parts }: FileAppend): Promise<void> {
  if (truncate) {
    await Deno.truncate(path, at).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
  }
  // One operation (open, append, close): the cheapest for many files at once.
  await Deno.writeFile(path, concatBytes(parts), { append: true });
}

/**
 * `append` synchronously: for a worker thread, where blocking costs nothing
 * but that thread's time. Throws what the file system throws.
 */
export function appendSync(
  path: string,
  bytes: Uint8Array,
  options: { at: number; truncate: boolean },
): void {
  const file = Deno.openSync(path, { append: true, create: true });
  try {
    if (options.truncate) file.truncateSync(options.at);
    let written = 0;
    while (written < bytes.length) written += file.writeSync(bytes.subarray(written));
  } finally {
    file.close();
  }
}

/** An error sent from a worker as its name and message: the same Deno error class again where there is one. */
export function errorFrom(sent: { readonly name: string; readonly message: string }): Error {
  const classes = Deno.errors as unknown as Record<
    string,
    (new (message: string) => Error) | undefined
  >;
  const ErrorClass = Object.hasOwn(classes, sent.name) ? classes[sent.name] : undefined;
  const error = ErrorClass ? new ErrorClass(sent.message) : new Error(sent.message);
  if (!ErrorClass) error.name = sent.name;
  return error;
}
