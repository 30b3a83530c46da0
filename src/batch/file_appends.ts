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
 * where the bytes are and trust the record. Files stay open between
 * appends only as far as descriptors allow (`SyncAppender`): 1,500 open
 * batches would need more than a default limit (256 for a program started
 * from a macOS shell), so the worker keeps at most `keptFilesBudget` of
 * what `spareDescriptors` found free at start; the rest are opened, written
 * and closed.
 */

import { crc32 } from "node:zlib";
import { concatBytes } from "../archive/bytes.ts";

/** One file's bytes for one flush. */
export interface FileAppend {
  readonly path: string;
  /**
   * Bytes of the file written whole so far: where these bytes go. Only an
   * append at 0 creates the file: one that is gone later (removed by hand)
   * fails with NotFound, never starting a new file whose bytes would not be
   * where the records say.
   */
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

/** What a `SyncAppender` keeps open, and for how long. */
export interface KeepOptions {
  /** Files kept open at most (default 16). */
  readonly keep?: number;
  /**
   * When `keep` files are open and another comes: `evict` closes the least
   * recently used one (a few files in turn, as on the main thread); `pass`
   * writes the newcomer without keeping it (many files in turn, every flush
   * the same order, where evicting would keep none of them long enough to
   * gain).
   */
  readonly whenFull?: "evict" | "pass";
  /**
   * `closeIdle` closes the files not written for this long (their batch may
   * have ended while another appender wrote its last bytes). Default: never.
   */
  readonly idleMs?: number;
  /** Monotonic ms, for `idleMs`. */
  readonly now?: () => number;
}

/**
 * Appends on the calling thread, synchronously, one file after another:
 * for a few small appends, where a round trip to another thread (a worker,
 * or Deno's pool for async file operations) costs more than the writes;
 * and on the gzip worker, for all of them. Files stay open between calls
 * (opening one costs more than writing a few KB to it), as `KeepOptions`
 * say; a file is closed after its `last` append, and all of them by
 * `close`. Batch files are named once per run (journal.ts), so a kept
 * descriptor is never stale under its path.
 */
export class SyncAppender implements FileAppender {
  readonly #keep: number;
  readonly #whenFull: "evict" | "pass";
  readonly #idleMs: number;
  readonly #now: () => number;
  /** Open files and when each was last written, least recently used first. */
  readonly #open = new Map<string, { file: Deno.FsFile; at: number }>();

  constructor(options: KeepOptions = {}) {
    this.#keep = options.keep ?? 16;
    this.#whenFull = options.whenFull ?? "evict";
    this.#idleMs = options.idleMs ?? Infinity;
    this.#now = options.now ?? (() => performance.now());
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
        this.write(append);
        return { crcs: crcsOf(append.parts) };
      } catch (error) {
        return { error: error instanceof Error ? error : new Error(String(error)) };
      }
    });
  }

  /** Writes one append now, without CRCs; throws what the file system throws (the file is closed then). */
  write(append: FileAppend): void {
    try {
      this.#write(append, this.#now());
    } catch (error) {
      this.#drop(append.path);
      throw error;
    }
  }

  /** Closes every file kept open. */
  close(): void {
    for (const path of [...this.#open.keys()]) this.#drop(path);
  }

  /** Closes the file if it is kept open (another appender writes its last bytes). */
  release(path: string): void {
    this.#drop(path);
  }

  /** Closes the files not written for `idleMs`. */
  closeIdle(): void {
    const now = this.#now();
    for (const [path, { at }] of [...this.#open]) {
      if (now - at >= this.#idleMs) this.#drop(path);
    }
  }

  #write({ path, at, truncate, parts, last }: FileAppend, now: number): void {
    const kept = this.#open.get(path);
    this.#open.delete(path);
    const file = kept?.file ?? this.#openFile(path, at === 0);
    const keep = !last && (kept !== undefined || this.#open.size < this.#keep ||
      this.#whenFull === "evict");
    // Kept before writing, so a failed write closes it (`appendNow`).
    if (keep) this.#open.set(path, { file, at: now });
    try {
      if (truncate) file.truncateSync(at);
      for (const part of parts) {
        let written = 0;
        while (written < part.length) written += file.writeSync(part.subarray(written));
      }
    } finally {
      if (!keep) closeQuietly(file);
    }
    while (this.#open.size > this.#keep) this.#drop(this.#open.keys().next().value!);
  }

  /**
   * Opens `path` to append (`create`: only for a file's first bytes, see
   * `FileAppend.at`); out of descriptors, lets go of the kept ones and tries
   * once more.
   */
  #openFile(path: string, create: boolean): Deno.FsFile {
    try {
      return Deno.openSync(path, { append: true, create });
    } catch (error) {
      if (!outOfDescriptors(error) || this.#open.size === 0) throw error;
      this.close();
      return Deno.openSync(path, { append: true, create });
    }
  }

  #drop(path: string): void {
    const kept = this.#open.get(path);
    this.#open.delete(path);
    if (kept) closeQuietly(kept.file);
  }
}

function closeQuietly(file: { close(): void }): void {
  try {
    file.close();
  } catch {
    // Already closed, or the descriptor is bad: it is gone either way.
  }
}

/** EMFILE (this process) or ENFILE (the system): no descriptor to open a file with. */
function outOfDescriptors(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === "EMFILE" || code === "ENFILE";
}

/** The gzip worker keeps at most this many batch files open: 1,500 streams' worth and more. */
export const MAX_KEPT_FILES = 2_048;
/** Descriptors always left for everything else: sockets, the spool, the log, S3 connections. */
const RESERVED_DESCRIPTORS = 64;

/**
 * How many batch files the gzip worker may keep open, given `spare`
 * descriptors free at start (`spareDescriptors(KEPT_FILES_PROBE)`): half of
 * what is free beyond a reserve, at most `MAX_KEPT_FILES`. A program started
 * from a macOS shell has 256 (about 90 kept); under launchd the plist raises
 * the limit (ops/launchd.ts), and Deno itself raises it to the hard limit
 * when it runs the source.
 */
export function keptFilesBudget(spare: number): number {
  return Math.max(0, Math.min(MAX_KEPT_FILES, Math.floor((spare - RESERVED_DESCRIPTORS) / 2)));
}

/** Enough to find `MAX_KEPT_FILES` and its share of the rest free. */
export const KEPT_FILES_PROBE = 2 * MAX_KEPT_FILES + RESERVED_DESCRIPTORS;

/**
 * File descriptors this process can still open, up to `wanted`: found by
 * opening `/dev/null` until `wanted` are open or none is left, then closing
 * them all (a program cannot read its limit on macOS). Call it once at
 * start, before connections open: it briefly holds what it finds. 0 where
 * there is no `/dev/null` to open.
 */
export function spareDescriptors(
  wanted: number,
  open: () => { close(): void } = () => Deno.openSync("/dev/null"),
): number {
  const held: Array<{ close(): void }> = [];
  try {
    while (held.length < wanted) held.push(open());
  } catch (error) {
    if (!outOfDescriptors(error) && held.length === 0) return 0;
  } finally {
    for (const file of held) closeQuietly(file);
  }
  return held.length;
}

async function appendHere({ path, at, truncate, parts }: FileAppend): Promise<void> {
  if (truncate) {
    await Deno.truncate(path, at).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
  }
  // One operation (open, append, close): the cheapest for many files at once.
  await Deno.writeFile(path, concatBytes(parts), { append: true, create: at === 0 });
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
