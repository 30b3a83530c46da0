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
import { join } from "node:path";
import { concatBytes } from "../archive/bytes.ts";
import type { ObjectMeta } from "../archive/meta.ts";
import { TEMP_MARKER, writeAtomically } from "./local.ts";

export interface SpoolEntry {
  readonly key: string;
  readonly body: Uint8Array;
  readonly meta: ObjectMeta;
  /** Store only where the key is absent (a batch recovered from the crash journal). */
  readonly ifAbsent?: boolean;
}

export class SpoolFileError extends Error {
  override name = "SpoolFileError";
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
      const name = `${stamp}-${seq}-${crypto.randomUUID().slice(0, 8)}${SUFFIX}`;
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

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
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
  const newline = bytes.indexOf(10);
  if (newline < 0) throw new SpoolFileError(`${name}: no header line`);
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
    header = JSON.parse(line);
  } catch {
    throw new SpoolFileError(`${name}: header is not JSON`);
  }
  if (typeof header !== "object" || header === null) {
    throw new SpoolFileError(`${name}: header is not a JSON object`);
  }
  if (
    (header.v !== 1 && header.v !== 2) || typeof header.key !== "string" ||
    typeof header.bytes !== "number" ||
    typeof header.sha256 !== "string" || typeof header.meta !== "object" || header.meta === null
  ) {
    throw new SpoolFileError(`${name}: header lacks key, meta, bytes or sha256`);
  }
  const body = bytes.subarray(newline + 1);
  if (body.length !== header.bytes) {
    throw new SpoolFileError(`${name}: body is ${body.length} bytes, header says ${header.bytes}`);
  }
  if (header.v === 1) {
    if (createHash("sha256").update(body).digest("hex") !== header.sha256) {
      throw new SpoolFileError(`${name}: body does not match its SHA-256`);
    }
  } else {
    const sha = SHA_FIELD.exec(line);
    if (!sha || sha256Of(`${line.slice(0, sha.index)}}`, body) !== sha[1]) {
      throw new SpoolFileError(`${name}: header and body do not match their SHA-256`);
    }
  }
  const entry = { key: header.key, body, meta: header.meta as ObjectMeta };
  return header.ifAbsent === true ? { ...entry, ifAbsent: true } : entry;
}
