/**
 * The overflow spool: sealed, compressed batches kept on disk while the sink
 * cannot take them, one file per batch, drained oldest first.
 *
 * Invariants:
 * - A spool file is written to a temporary name, flushed, then renamed; only
 *   final names (`*.spool`) are ever listed or read, and temporary files left
 *   by a crash are deleted when the spool opens.
 * - A file is deleted only after the sink confirmed the object it holds.
 * - A file is self-checking (header with length and SHA-256 of the body); one
 *   that fails the check is moved to `quarantine/`, reported, and never blocks
 *   the rest.
 * - The directory (and `quarantine/`) removed while the collector runs is
 *   made again by the next write (or quarantine) that needs it, logged once.
 * - The total size of final files never exceeds `maxBytes`: a batch that does
 *   not fit is refused (the caller counts it as dropped); nothing already
 *   spooled is deleted to make room.
 *
 * - A file that is damaged or removed before its batch was stored still says
 *   what it held where it can, so the loss is marked in the archive: its
 *   header (key and metadata) when that much can be read, else its name,
 *   which carries the batch's stream, message count and receive times.
 *
 * File name: `<ms>-<counter>-<random>.<messages>-<first µs>-<last µs>.<stream,
 * URI-encoded>.spool`; names of an earlier release end after `<random>`.
 *
 * File layout: one JSON header line, then the gzip body.
 *   {"v":2,"key":"…","meta":{…},"bytes":<body length>,"sha256":"<hex>"}\n<body>
 * A batch recovered from the crash journal adds `"ifAbsent":true` before
 * `sha256`: it is stored only where its key is absent. The SHA-256 covers
 * the header line up to its `sha256` field (closed with `}`), a newline and
 * the body, so a damaged key, meta or mark fails the check too. Version 1
 * files (the hash covered the body only) written before are still read.
 */

import { getLogger } from "@logtape/logtape";
import { createHash } from "node:crypto";
import { basename, join } from "node:path";
import { concatBytes } from "../archive/bytes.ts";
import type { ObjectMeta } from "../archive/meta.ts";
import { parseKey, streamOfKey } from "../archive/keys.ts";
import { exists, TEMP_MARKER, writeAtomically } from "./local.ts";

export interface SpoolEntry {
  readonly key: string;
  readonly body: Uint8Array;
  readonly meta: ObjectMeta;
  /** Store only where the key is absent (a batch recovered from the crash journal). */
  readonly ifAbsent?: boolean;
  /** The batch's stream, for the file's name (see `spooledBatchOfName`). */
  readonly stream?: string;
}

/**
 * What a spool file that cannot be stored (damaged, removed) still tells of
 * the batch it held: enough for a `dropped` line. `key` is absent when only
 * the file's name could be read.
 */
export interface SpooledBatch {
  readonly key?: string;
  readonly stream: string;
  readonly meta: {
    readonly messages: number;
    readonly firstRecvTs: number;
    readonly lastRecvTs: number;
  };
}

export class SpoolFileError extends Error {
  override name = "SpoolFileError";
  /** What the damaged file still tells of its batch, if anything. */
  readonly batch: SpooledBatch | undefined;

  constructor(message: string, batch?: SpooledBatch) {
    super(message);
    this.batch = batch;
  }
}

const SUFFIX = ".spool";
const QUARANTINE = "quarantine";

const log = getLogger(["l2", "spool"]);

export class Spool {
  readonly dir: string;
  readonly maxBytes: number;
  /** Final file name → size, in name order (names sort by spooling time). */
  readonly #files = new Map<string, number>();
  #bytes = 0;
  #counter = 0;
  /** Bytes promised to writes still in progress, so concurrent writes respect the bound. */
  #reserved = 0;
  /** A directory being made again (see `#inDir`): writes that find it gone share one mkdir. */
  readonly #remaking = new Map<string, Promise<void>>();

  private constructor(dir: string, maxBytes: number) {
    this.dir = dir;
    this.maxBytes = maxBytes;
  }

  /** Opens (creating) the spool directory, discarding temporary files left by a crash. */
  static async open(dir: string, options: { maxBytes: number }): Promise<Spool> {
    const spool = new Spool(dir, options.maxBytes);
    await Deno.mkdir(join(dir, QUARANTINE), { recursive: true });
    const names: string[] = [];
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.isFile) continue;
      if (entry.name.includes(TEMP_MARKER)) await Deno.remove(join(dir, entry.name));
      else if (entry.name.endsWith(SUFFIX)) names.push(entry.name);
    }
    names.sort();
    for (const name of names) {
      const { size } = await Deno.stat(join(dir, name));
      spool.#files.set(name, size);
      spool.#bytes += size;
    }
    return spool;
  }

  get bytes(): number {
    return this.#bytes;
  }

  get count(): number {
    return this.#files.size;
  }

  /** File names, oldest first (writes can finish out of order: sort). */
  names(): string[] {
    return [...this.#files.keys()].sort();
  }

  /**
   * Writes one batch. Returns false, writing nothing, when it would take the
   * spool past its bound.
   */
  async write(entry: SpoolEntry): Promise<boolean> {
    const bytes = encodeSpoolFile(entry);
    if (this.#bytes + this.#reserved + bytes.length > this.maxBytes) return false;
    this.#reserved += bytes.length;
    try {
      // Time first so names sort oldest first; the counter and a random tail
      // keep names unique within a millisecond and across restarts.
      const stamp = String(Date.now()).padStart(15, "0");
      const seq = String(this.#counter++).padStart(6, "0");
      const name = `${stamp}-${seq}-${crypto.randomUUID().slice(0, 8)}${nameFacts(entry)}${SUFFIX}`;
      await this.#inDir(this.dir, () => writeAtomically(join(this.dir, name), bytes));
      this.#files.set(name, bytes.length);
      this.#bytes += bytes.length;
      return true;
    } finally {
      this.#reserved -= bytes.length;
    }
  }

  /** Reads and checks one file; throws SpoolFileError when it is damaged. */
  async read(name: string): Promise<SpoolEntry> {
    return decodeSpoolFile(await Deno.readFile(join(this.dir, name)), name);
  }

  /** Deletes a file whose batch the sink confirmed. */
  async remove(name: string): Promise<void> {
    await Deno.remove(join(this.dir, name)).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
    this.#forget(name);
  }

  /** Moves a damaged file aside, out of the drain order and the size bound. */
  async quarantine(name: string): Promise<string> {
    const target = join(this.dir, QUARANTINE, name);
    await this.#inDir(join(this.dir, QUARANTINE), () => Deno.rename(join(this.dir, name), target));
    this.#forget(name);
    return target;
  }

  /**
   * Runs `step`; if it fails with NotFound because `dir` is gone (removed by
   * hand while the collector runs), makes `dir` again and runs it once more.
   * The first write to find it gone logs it; writes that find it gone
   * meanwhile wait for the same mkdir (or, made already, just try again).
   */
  async #inDir<T>(dir: string, step: () => Promise<T>): Promise<T> {
    try {
      return await step();
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      let remaking = this.#remaking.get(dir);
      if (!remaking && !exists(dir)) {
        log.warn("Spool directory {dir} was removed; made it again", { dir });
        remaking = Deno.mkdir(dir, { recursive: true })
          .finally(() => this.#remaking.delete(dir));
        this.#remaking.set(dir, remaking);
      }
      await remaking;
      return await step();
    }
  }

  #forget(name: string): void {
    const size = this.#files.get(name);
    if (size === undefined) return;
    this.#files.delete(name);
    this.#bytes -= size;
  }
}

/** Longest URI-encoded stream a file name carries (names stay far below 255 bytes). */
const MAX_NAME_STREAM = 120;

/** The batch's facts for its file name: `.<messages>-<first>-<last>.<stream>`, or none. */
function nameFacts(entry: SpoolEntry): string {
  const stream = entry.stream ?? streamOfParsedKey(entry.key);
  if (stream === undefined) return "";
  const encoded = encodeURIComponent(stream);
  if (encoded.length > MAX_NAME_STREAM) return "";
  const { messages, firstRecvTs, lastRecvTs } = entry.meta;
  return `.${messages}-${firstRecvTs}-${lastRecvTs}.${encoded}`;
}

const NAME_FACTS = /^\d+-\d+-[0-9a-f]+\.(\d+)-(\d+)-(\d+)\.(.+)\.spool$/;

/** What a spool file's name tells of its batch (names of an earlier release tell nothing). */
export function spooledBatchOfName(name: string): SpooledBatch | undefined {
  const m = NAME_FACTS.exec(basename(name));
  if (!m) return undefined;
  let stream: string;
  try {
    stream = decodeURIComponent(m[4]);
  } catch {
    return undefined;
  }
  return spanOf(undefined, stream, { messages: m[1], firstRecvTs: m[2], lastRecvTs: m[3] });
}

function streamOfParsedKey(key: string): string | undefined {
  const parts = parseKey(key);
  return parts ? streamOfKey(parts) : undefined;
}

/** A batch's facts when they are whole numbers in order, else undefined. */
function spanOf(
  key: string | undefined,
  stream: string,
  meta: { messages?: unknown; firstRecvTs?: unknown; lastRecvTs?: unknown },
): SpooledBatch | undefined {
  const [messages, firstRecvTs, lastRecvTs] = [meta.messages, meta.firstRecvTs, meta.lastRecvTs]
    .map(Number);
  const whole = [messages, firstRecvTs, lastRecvTs].every((n) => Number.isSafeInteger(n) && n >= 0);
  if (!whole || firstRecvTs > lastRecvTs || stream === "") return undefined;
  return {
    ...(key === undefined ? {} : { key }),
    stream,
    meta: { messages, firstRecvTs, lastRecvTs },
  };
}

/**
 * What a damaged file's header still tells (a key of the archive's layout,
 * metadata with counts and receive times), or, failing that, its name.
 */
function spooledBatchOf(header: unknown, name: string): SpooledBatch | undefined {
  const { key, meta } = (typeof header === "object" && header !== null ? header : {}) as {
    key?: unknown;
    meta?: unknown;
  };
  const stream = typeof key === "string" ? streamOfParsedKey(key) : undefined;
  const fromHeader = stream !== undefined && typeof meta === "object" && meta !== null
    ? spanOf(key as string, stream, meta)
    : undefined;
  return fromHeader ?? spooledBatchOfName(name);
}

const encoder = new TextEncoder();
/** How a version 2 header line ends: the hash of what comes before it, and the body. */
const SHA_FIELD = /,"sha256":"([0-9a-f]{64})"\}$/;

function sha256Of(head: string, body: Uint8Array): string {
  return createHash("sha256").update(encoder.encode(head + "\n")).update(body).digest("hex");
}

export function encodeSpoolFile(entry: SpoolEntry): Uint8Array {
  const head = JSON.stringify({
    v: 2,
    key: entry.key,
    meta: entry.meta,
    bytes: entry.body.length,
    ...(entry.ifAbsent ? { ifAbsent: true } : {}),
  });
  const header = `${head.slice(0, -1)},"sha256":"${sha256Of(head, entry.body)}"}`;
  return concatBytes([encoder.encode(header + "\n"), entry.body]);
}

export function decodeSpoolFile(bytes: Uint8Array, name = "spool file"): SpoolEntry {
  // A damaged file says what it held as far as it can (see SpooledBatch).
  let said: unknown;
  const fail = (why: string) => new SpoolFileError(`${name}: ${why}`, spooledBatchOf(said, name));
  const newline = bytes.indexOf(10);
  if (newline < 0) throw fail("no header line");
  const line = new TextDecoder().decode(bytes.subarray(0, newline));
  let header: {
    v?: unknown;
    key?: unknown;
    meta?: unknown;
    bytes?: unknown;
    sha256?: unknown;
    ifAbsent?: unknown;
  };
  try {
    header = said = JSON.parse(line);
  } catch {
    throw fail("header is not JSON");
  }
  if (typeof header !== "object" || header === null) {
    throw fail("header is not a JSON object");
  }
  if (
    (header.v !== 1 && header.v !== 2) || typeof header.key !== "string" ||
    typeof header.bytes !== "number" ||
    typeof header.sha256 !== "string" || typeof header.meta !== "object" || header.meta === null
  ) {
    throw fail("header lacks key, meta, bytes or sha256");
  }
  const body = bytes.subarray(newline + 1);
  if (body.length !== header.bytes) {
    throw fail(`body is ${body.length} bytes, header says ${header.bytes}`);
  }
  if (header.v === 1) {
    if (createHash("sha256").update(body).digest("hex") !== header.sha256) {
      throw fail("body does not match its SHA-256");
    }
  } else {
    const sha = SHA_FIELD.exec(line);
    if (!sha || sha256Of(`${line.slice(0, sha.index)}}`, body) !== sha[1]) {
      throw fail("header and body do not match their SHA-256");
    }
  }
  const entry = { key: header.key, body, meta: header.meta as ObjectMeta };
  return header.ifAbsent === true ? { ...entry, ifAbsent: true } : entry;
}
