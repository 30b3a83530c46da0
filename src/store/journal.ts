/**
 * The crash journal: what each open batch has received is on disk within
 * `flushMs` (default 250 ms), compressed, so a SIGKILL or a crash loses at
 * most that much, and the journal writes about as many bytes as the archive
 * (the journal of every line uncompressed that it replaces wrote 6-8×). At
 * start-up, batches left in the journal become sealed batches again, under
 * the key they were given when they opened.
 *
 * How: every flush asks each open batch's body for a piece of the text that
 * arrived since the last one (`GzipBody.flush`: raw deflate ending on a
 * full flush, see batch/body.ts) and appends it to the batch's own file,
 * `<run>-b<id>.gz.part`, after a gzip header: all files of a flush through
 * one `FileAppender` call (batch/file_appends.ts; in the collector the gzip
 * worker, so the main thread runs no file operation per batch, except for a
 * flush of a few KB to a few files, which costs less than the round trip:
 * compress.ts `HERE_BYTES`). The pieces
 * are the ones the body keeps for its object: nothing is compressed twice.
 * A record in the current segment (`<run>-<n>.v3.jnl`, CRC-checked lines:
 * see journal_records.ts and journal_pieces.ts) gives each piece's place,
 * CRC-32 and line count. At seal the file gets the empty final block and
 * the gzip trailer: it is then the object, byte for byte.
 *
 * Invariants:
 * - A piece's record is written only after the piece is in its batch file;
 *   a batch file's pieces are in order, each at the offset its record names.
 * - One segment is written at a time, with one `write` per flush; a new one
 *   starts every `segmentMs`. Segment names sort by age. A segment is
 *   deleted only when no batch that has records in it is still unsettled
 *   (stored, spooled or dropped) AND every older segment is gone. A batch
 *   file is deleted once its batch's settle record is written.
 * - A batch's upload waits for its seal record to be written, so recovery
 *   never mistakes an uploaded batch for an unfinished one — but not for
 *   ever (recording must go on on a full disk). So a rebuilt batch is
 *   marked `recovered` and stored only where its key is absent.
 * - Recovery is deterministic (journal_rebuild.ts).
 */

import { getLogger } from "@logtape/logtape";
import { basename, dirname, join } from "node:path";
import { crc32 } from "node:zlib";
import type { BatchObserver, ObjectFile, SealedBatch } from "../batch/batcher.ts";
import { intervalTicker, type Ticker } from "../beat.ts";
import {
  type BodyPiece,
  FINAL_BLOCK,
  type GzipBody,
  gzipHeader,
  gzipTrailer,
  localDeflater,
  SpillLostError,
  type SpillReader,
} from "../batch/body.ts";
import {
  type AppendResult,
  type FileAppend,
  type FileAppender,
  localAppender,
} from "../batch/file_appends.ts";
import { concatBytes } from "../archive/bytes.ts";
import { lineFactsOf } from "../archive/decode.ts";
import { ChunkPool } from "../batch/chunks.ts";
import { type JournalReading, readLineSegment } from "./journal_lines.ts";
import {
  BATCH_FILE_SUFFIX,
  batchFileName,
  HEADER_BYTES,
  PieceReader,
  readJournalFile,
  setAside,
} from "./journal_pieces.ts";
import { PIECE_SEGMENT_SUFFIX, SEGMENT_SUFFIX, stampCrc } from "./journal_records.ts";
import { type LineFacts, rebuildBatches, type RebuildOptions } from "./journal_rebuild.ts";
import { writeAtomically } from "./local.ts";

export type { LineFacts } from "./journal_rebuild.ts";

const log = getLogger(["l2", "journal"]);

/** Segment bytes kept for a retry while writes fail. */
const MAX_UNWRITTEN = 256 * 1024 * 1024;
/** Longest an upload waits for its seal record while the journal cannot write. */
const MAX_SEAL_WAIT_MS = 5000;

/** Segment writes up to this size are synchronous. */
const SYNC_SEGMENT_BYTES = 64 * 1024;

const encoder = new TextEncoder();

/** Segment records as UTF-8, each after its CRC-32 (journal_records.ts). */
class RecordBuffer {
  #bytes = new Uint8Array(64 * 1024);
  #length = 0;

  get length(): number {
    return this.#length;
  }

  add(record: string): void {
    // UTF-8 needs at most 3 bytes per UTF-16 unit; 10 for the CRC, tab and newline.
    const need = this.#length + record.length * 3 + 10;
    if (need > this.#bytes.length) {
      const bigger = new Uint8Array(Math.max(need, this.#bytes.length * 2));
      bigger.set(this.#bytes.subarray(0, this.#length));
      this.#bytes = bigger;
    }
    const start = this.#length + 9;
    const end = start + encoder.encodeInto(record, this.#bytes.subarray(start)).written;
    stampCrc(this.#bytes, start, end);
    this.#bytes[end] = 0x0a;
    this.#length = end + 1;
  }

  /** The bytes so far (a copy), and an empty buffer for what follows. */
  take(): Uint8Array {
    const taken = this.#bytes.slice(0, this.#length);
    this.#length = 0;
    return taken;
  }
}

export interface JournalOptions {
  readonly flushMs?: number;
  readonly segmentMs?: number;
  /** Wall clock, ms (for the run's name). */
  readonly now?: () => number;
  /**
   * Monotonic clock, ms (segment ages, how long writes have failed): a wall
   * clock stepped back would keep one segment current, growing, for as long
   * as the step.
   */
  readonly monotonic?: () => number;
  /** Called on every failed write to a journal file (l2_disk_write_failures_total). */
  readonly onWriteFailed?: (error: unknown) => void;
  /** Writes the batch files (default: on this thread; the collector uses the gzip worker). */
  readonly appender?: FileAppender;
  /** Runs the flush every `flushMs` (default: a timer of its own; the collector shares its beat). */
  readonly ticker?: Ticker;
}

interface Segment {
  readonly name: string;
  /** Batches with records in this segment that are not yet settled. */
  readonly live: Set<number>;
  file?: Deno.FsFile;
}

/** A seal waiting to be durable. */
interface Waiter {
  readonly entry: Entry;
  resolve(file: ObjectFile | undefined): void;
}

/** One entry's bytes for one flush, and what they hold. */
interface EntryAppend extends FileAppend {
  readonly entry: Entry;
  /** `parts[first]` is the first piece's bytes (the gzip header comes before it in a new file). */
  readonly first: number;
  /** The pieces in `parts`, in order. */
  readonly pieces: readonly BodyPiece[];
  /** The parts end with the final block and the trailer. */
  readonly ends: boolean;
  /** A piece after these could not be compressed. */
  readonly broken: boolean;
}

/** One batch the journal follows, from `opened` until `settled`. */
interface Entry {
  readonly id: number;
  readonly body: GzipBody;
  readonly path: string;
  /** Reads bytes of the batch file back (the body keeps it for its spilled pieces). */
  read: SpillReader;
  /** Bytes in the batch file so far (its header included). */
  written: number;
  /** Pieces taken from the body and not yet in the file, in order. */
  readonly queue: BodyPiece[];
  /** Sealed: once its pieces are in, the file gets its end and a seal record. */
  sealing: boolean;
  /** The file has its end: nothing more to write. */
  ended: boolean;
  /** A piece could not be compressed: the file stops there (recovery drops the rest, counted). */
  broken: boolean;
  /** Settled: nothing more is written for it. */
  settled: boolean;
  /** A write failed: the file may hold bytes beyond `written`. */
  torn?: boolean;
  /** The file as last read back for spilled pieces, and how far it was written then. */
  readBack?: { upTo: number; bytes: Promise<Uint8Array> };
  /** Its `o` record, written again should the journal's directory be removed before its file is. */
  readonly openRecord: string;
  /** Text CRC-32 and length up to the last piece written. */
  textCrc: number;
  textBytes: number;
  totalLines: number;
}

export class Journal implements BatchObserver {
  readonly dir: string;
  readonly #runId: string;
  readonly #flushMs: number;
  readonly #segmentMs: number;
  readonly #now: () => number;
  readonly #monotonic: () => number;
  readonly #onWriteFailed: ((error: unknown) => void) | undefined;
  readonly #appender: FileAppender;
  readonly #entries = new Map<string, Entry>();
  /** Segments of this run still on disk, oldest first; the last is current. */
  readonly #segments: Segment[] = [];
  /** Per batch id, the segments it has records in. */
  readonly #touched = new Map<number, Set<Segment>>();
  /** The current segment was lost (its directory removed): the next one opens every batch again. */
  #reopenAll = false;
  /** Making the removed directory again failed (logged once until it works). */
  #remakeFailing = false;
  /**
   * Batches settled whose `r` record is not on disk yet: their files, and the
   * segments that have their records. Both stay until it is (a segment
   * deleted earlier, a kill before the `r` is written would leave the batch's
   * later records without its `o`, and recovery would store its rest again).
   */
  #settling: Array<
    { readonly id: number; readonly path: string; readonly segments?: Set<Segment> }
  > = [];
  #nextId = 0;
  readonly #records = new RecordBuffer();
  #segmentStartedAt = 0;
  #segmentCounter = 0;
  #flushing: Promise<void> = Promise.resolve();
  /** The flush waiting for the one in progress; later calls join it. */
  #nextFlush: Promise<void> | undefined;
  /** The next flush takes every open batch's new text, not only the sealed batches'. */
  #allDue = false;
  /** Seals waiting to be durable, each with its batch. */
  #waiters: Waiter[] = [];
  #timer: Disposable | undefined;
  /** Segment bytes a failed write left behind, written first next time. */
  #unwritten: Uint8Array | undefined;
  #failingSince: number | undefined;
  /** A write of the flush in progress failed (a batch file's or the segment's). */
  #flushFailed = false;

  private constructor(dir: string, options: JournalOptions) {
    this.dir = dir;
    this.#flushMs = options.flushMs ?? 250;
    this.#segmentMs = options.segmentMs ?? 60_000;
    this.#now = options.now ?? Date.now;
    this.#monotonic = options.monotonic ?? (() => performance.now());
    this.#onWriteFailed = options.onWriteFailed;
    this.#appender = options.appender ?? localAppender();
    this.#runId = String(this.#now()).padStart(15, "0");
  }

  /** Starts a journal for this run; call `recoverJournal` on the directory first. */
  static async start(dir: string, options: JournalOptions = {}): Promise<Journal> {
    await Deno.mkdir(dir, { recursive: true });
    const journal = new Journal(dir, options);
    await journal.#rotate();
    journal.#timer = (options.ticker ?? intervalTicker).every(
      journal.#flushMs,
      () => journal.flush(),
    );
    return journal;
  }

  opened(key: string, stream: string, body: GzipBody): void {
    const id = this.#nextId++;
    const entry: Entry = {
      id,
      body,
      openRecord: `o\t${id}\t${key}\t${stream}`,
      path: join(this.dir, batchFileName(this.#runId, id)),
      read: () => Promise.reject(new Error("not yet written")),
      written: 0,
      queue: [],
      sealing: false,
      ended: false,
      broken: false,
      settled: false,
      textCrc: 0,
      textBytes: 0,
      totalLines: 0,
    };
    entry.read = this.#readerOf(entry);
    this.#entries.set(key, entry);
    this.#record(id, entry.openRecord);
  }

  /** Resolves once the seal is written, with the batch file (then the whole object) if it is whole. */
  sealed(key: string): Promise<ObjectFile | undefined> {
    const entry = this.#entries.get(key);
    if (!entry) return Promise.resolve(undefined);
    entry.sealing = true;
    this.#take(entry);
    const written = new Promise<ObjectFile | undefined>((resolve) =>
      this.#waiters.push({ entry, resolve })
    );
    this.#schedule(false);
    return written;
  }

  /** The batch is stored, spooled or dropped: it no longer needs the journal. */
  settled(key: string): void {
    const entry = this.#entries.get(key);
    if (!entry) return;
    this.#entries.delete(key);
    entry.settled = true;
    this.#records.add(`r\t${entry.id}`);
    this.#settling.push({ id: entry.id, path: entry.path, segments: this.#touched.get(entry.id) });
    this.#touched.delete(entry.id);
  }

  /**
   * Writes what open batches received since the last flush; resolves when
   * it is in the files. Calls made while a flush waits for its turn share
   * it, so at most one write runs and one waits, however many batches seal
   * at once.
   */
  flush(): Promise<void> {
    return this.#schedule(true);
  }

  /**
   * A flush of every open batch (`all`), or one for the seals only: a seal
   * needs its own batch written, and the other batches' text can wait for
   * the timer's flush. (Cutting every batch's piece at each seal made twice
   * the pieces, each half as large, at 1,500 streams.)
   */
  #schedule(all: boolean): Promise<void> {
    if (all) this.#allDue = true;
    if (this.#nextFlush) return this.#nextFlush;
    const next = this.#flushing.then(() => {
      this.#nextFlush = undefined;
      const everyBatch = this.#allDue;
      this.#allDue = false;
      return this.#flushNow(everyBatch);
    }).catch((error) => {
      // Never leave the chain rejected: one failure must not stop later flushes.
      log.error("Crash journal flush failed: {error}", { error });
    });
    this.#nextFlush = next;
    this.#flushing = next;
    return next;
  }

  /**
   * Stops journalling. Segments that no unsettled batch needs are deleted;
   * the rest stay, with their batch files, for the next start to recover.
   */
  async close(): Promise<void> {
    this.#timer?.[Symbol.dispose]();
    await this.flush();
    // A seal while that flush waited for its pieces scheduled one more (its last piece and its end).
    for (let last = this.#flushing;; last = this.#flushing) {
      await last;
      if (last === this.#flushing) break;
    }
    this.#appender.close?.();
    for (const segment of this.#segments) segment.file?.close();
    if (this.#segments.every((segment) => segment.live.size === 0)) {
      for (const segment of this.#segments) {
        await Deno.remove(join(this.dir, segment.name)).catch(() => {});
      }
    }
    this.#segments.length = 0;
  }

  #record(id: number, record: string): void {
    this.#records.add(record);
    const current = this.#segments[this.#segments.length - 1];
    current.live.add(id);
    let touched = this.#touched.get(id);
    if (!touched) this.#touched.set(id, touched = new Set());
    touched.add(current);
  }

  /** Moves the body's new text into pieces, and the pieces into the entry's queue. */
  #take(entry: Entry): void {
    if (entry.ended || entry.broken) return;
    entry.body.flush();
    entry.queue.push(...entry.body.takePieces());
  }

  async #flushNow(everyBatch: boolean): Promise<void> {
    const waiters = this.#waiters;
    this.#waiters = [];
    this.#flushFailed = false;
    const entries: Entry[] = [];
    for (const entry of this.#entries.values()) {
      if (everyBatch || entry.sealing) this.#take(entry);
      if (entry.queue.length > 0 || (entry.sealing && !entry.ended && !entry.broken)) {
        entries.push(entry);
      }
    }
    // Nothing arrived and nothing is owed: the tick costs little more than this loop.
    const idle = entries.length === 0 && waiters.length === 0 && this.#records.length === 0 &&
      !this.#unwritten && this.#settling.length === 0;
    // Do not rotate with records still owed to this segment.
    if (!idle && !await this.#write(entries, waiters)) return;
    if (!idle && !this.#reopenAll && this.#segmentRemoved()) {
      log.warn("The crash journal's current segment was removed; starting a new one");
      this.#remakeDirIfGone();
      this.#segmentLost();
    }
    await this.#rotateIfDue();
    await this.#deleteSettledSegments();
  }

  /**
   * Writes the entries' pieces, then the segment's records; resolves the
   * seals that are durable. False when records are still owed to the segment.
   */
  async #write(entries: Entry[], waiters: Waiter[]): Promise<boolean> {
    // The pieces compress on the gzip workers; all of them are awaited together,
    // then read from one array (awaiting each again cost 1,500 async calls a flush).
    const taken = entries.map((entry) => entry.queue.length);
    const outcomes = await Promise.allSettled(entries.flatMap((e) => e.queue.map((p) => p.bytes)));
    const appends: EntryAppend[] = [];
    let from = 0;
    entries.forEach((entry, i) => {
      const append = this.#appendOf(entry, outcomes, from, taken[i]);
      from += taken[i];
      if (append) appends.push(append);
    });
    // All batch files in one go (on the gzip worker, in the collector); records only for what is written.
    const results = appends.length > 0 ? await this.#appender.append(appends) : [];
    appends.forEach((append, i) => this.#appended(append, results[i]));
    // The batches whose settle record goes out in this write, taken with it.
    const settling = this.#settling;
    this.#settling = [];
    const segmentWritten = await this.#writeSegment();
    if (!segmentWritten) this.#settling.unshift(...settling);
    // A seal is durable once written. While the journal cannot write, uploads
    // wait for it, but not for ever: recording must not stop on a bad disk.
    const stuck = this.#failingSince !== undefined &&
      this.#monotonic() - this.#failingSince < MAX_SEAL_WAIT_MS;
    if (stuck) this.#waiters.unshift(...waiters);
    else {
      for (const { entry, resolve } of waiters) {
        resolve(entry.ended ? { path: entry.path, bytes: entry.written } : undefined);
      }
    }
    if (!segmentWritten) return false;
    // Synchronous: unlinking a name is quick, where an async call costs a thread-pool round trip.
    for (const { id, path, segments } of settling) {
      for (const segment of segments ?? []) segment.live.delete(id);
      try {
        Deno.removeSync(path);
      } catch {
        // Already gone; or left for the next start, which deletes what no segment names.
      }
    }
    return true;
  }

  /**
   * What the entry's file gets this flush: its compressed pieces (and, once
   * sealed, its end), or undefined when there is nothing to write. The first
   * `count` pieces of its queue are the ones settled: `outcomes[from]` on.
   * Pieces queued after those (a seal while they compressed) wait for the
   * next flush, and so does the file's end.
   */
  #appendOf(
    entry: Entry,
    outcomes: ReadonlyArray<PromiseSettledResult<Uint8Array>>,
    from: number,
    count: number,
  ): EntryAppend | undefined {
    if (entry.ended || entry.broken || entry.settled) return undefined;
    const parts: Uint8Array[] = entry.written === 0 ? [gzipHeader(entry.body.level)] : [];
    const first = parts.length;
    const pieces: BodyPiece[] = [];
    let broken = false;
    for (let i = 0; i < count; i++) {
      const outcome = outcomes[from + i];
      if (outcome.status === "rejected") {
        broken = true;
        break;
      }
      pieces.push(entry.queue[i]);
      parts.push(outcome.value);
    }
    const ends = entry.sealing && !broken && count === entry.queue.length;
    if (ends) parts.push(FINAL_BLOCK, endOf(pieces[pieces.length - 1], entry));
    if (parts.length === 0 || (pieces.length === 0 && !ends)) {
      this.#markBroken(entry, broken);
      return undefined;
    }
    const truncate = entry.torn ?? false;
    return {
      entry,
      path: entry.path,
      at: entry.written,
      truncate,
      parts,
      last: ends || broken,
      first,
      pieces,
      ends,
      broken,
    };
  }

  /**
   * The entry's append is written (then its pieces' records go to the
   * segment buffer, and the body lets go of their bytes) or failed (then
   * they stay queued for the next flush, written again from the same offset).
   */
  #appended(append: EntryAppend, result: AppendResult): void {
    const { entry, parts, first, pieces } = append;
    // Settled while its append was in flight (a batch spooled without waiting for its seal): its
    // file goes with this flush's settle records, and no record may name the batch again, or the
    // segment would keep it live (and the next start would recover a batch already stored).
    if (entry.settled) return;
    if ("error" in result) {
      if (result.error instanceof Deno.errors.NotFound) this.#fileGone(entry, result.error);
      else {
        entry.torn = true;
        this.#writeFailed(result.error);
      }
      return;
    }
    entry.torn = false;
    let offset = entry.written;
    for (let i = 0; i < first; i++) offset += parts[i].length;
    pieces.forEach((piece, i) => {
      const length = parts[first + i].length;
      const at = offset;
      this.#record(entry.id, pieceRecord(entry.id, at, length, result.crcs[first + i], piece));
      // Written: the body need not hold the piece any more, and can read it back.
      entry.body.spill(piece, at, length, entry.read);
      offset += length;
    });
    for (const part of parts) entry.written += part.length;
    entry.queue.splice(0, pieces.length);
    const last = pieces[pieces.length - 1];
    if (last) {
      ({ textCrc: entry.textCrc, textBytes: entry.textBytes } = last);
      entry.totalLines = last.totalLines;
    }
    if (append.ends) {
      entry.ended = true;
      this.#record(entry.id, sealRecord(entry));
    }
    this.#markBroken(entry, append.broken);
  }

  /**
   * The entry's reader of written pieces, one per batch. Made here, not where
   * pieces are written: a closure keeps the whole scope chain it was made in,
   * and the body keeps this one (for minutes), so it must not hold the piece
   * bytes the writing code has in scope. It closes over the entry only.
   */
  #readerOf(entry: Entry): SpillReader {
    return (at, length) => this.#read(entry, at, length);
  }

  /**
   * A batch file that is not there (only a file's first append creates it:
   * file_appends.ts). A later append: the file was removed with the pieces it
   * held; the journal stops for this batch (what it had written is lost, and
   * its seal drops it with a `dropped` line; what it holds in memory is not
   * journalled either). Its first append: tried again at the next flush,
   * once the directory is there again.
   */
  #fileGone(entry: Entry, error: Error): void {
    this.#remakeDirIfGone();
    if (entry.written > 0) {
      this.#stopFor(entry);
      log.error("The crash journal's file of batch {id} is gone ({error}): its journal stops", {
        id: entry.id,
        error,
      });
      return;
    }
    entry.torn = true;
    this.#writeFailed(error);
  }

  /**
   * The journal's directory removed while recording: made again, and a new
   * segment started in it at the end of this flush (the current one went
   * with the directory), where every open batch is opened again (`#rotate`),
   * so it keeps its key after a crash.
   */
  #remakeDirIfGone(): void {
    try {
      Deno.statSync(this.dir);
      return;
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) return;
    }
    try {
      Deno.mkdirSync(this.dir, { recursive: true });
    } catch (error) {
      // Once while it lasts: every flush tries again.
      if (!this.#remakeFailing) {
        log.error("Cannot make the crash journal's directory again: {error}", { error });
      }
      this.#remakeFailing = true;
      return;
    }
    this.#remakeFailing = false;
    log.warn("The crash journal's directory {dir} was removed; made again", { dir: this.dir });
    this.#segmentLost();
  }

  /** The current segment is gone: a new one at the end of this flush, opening every batch again. */
  #segmentLost(): void {
    this.#segmentStartedAt = -Infinity;
    this.#reopenAll = true;
  }

  /**
   * Whether the current segment was removed (its directory, or the file
   * alone): writes to it still succeed, into a file no name leads to.
   */
  #segmentRemoved(): boolean {
    const current = this.#segments[this.#segments.length - 1];
    try {
      const open = current?.file?.statSync();
      if (open?.nlink !== 0) return false;
      // A file system that reports no links for a live file: its name still leads to it.
      const named = Deno.statSync(join(this.dir, current.name));
      return named.ino !== open.ino || named.dev !== open.dev;
    } catch (error) {
      return error instanceof Deno.errors.NotFound;
    }
  }

  #markBroken(entry: Entry, broken: boolean): void {
    if (!broken || entry.broken) return;
    this.#stopFor(entry);
    log.error("A piece of batch {id} could not be compressed: its journal stops there", {
      id: entry.id,
    });
  }

  /** Nothing more is journalled for the batch (its queued pieces stay in its body only). */
  #stopFor(entry: Entry): void {
    entry.broken = true;
    entry.queue.length = 0;
  }

  /**
   * A piece the entry's file holds at `offset`, read back (one read of the
   * file for all the pieces of a batch that is finished from its bytes).
   */
  async #read(entry: Entry, offset: number, length: number): Promise<Uint8Array> {
    const end = offset + length;
    if (!entry.readBack || entry.readBack.upTo < end) {
      const readBack = { upTo: entry.written, bytes: Deno.readFile(entry.path) };
      entry.readBack = readBack;
      // A failed read (out of descriptors, say) is not kept: the next read tries again.
      readBack.bytes.catch(() => {
        if (entry.readBack === readBack) entry.readBack = undefined;
      });
    }
    let file: Uint8Array;
    try {
      file = await entry.readBack.bytes;
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) throw new SpillLostError(entry.path, error);
      throw error;
    }
    const bytes = file.subarray(offset, end);
    if (bytes.length !== length) throw new Error(`${entry.path} is shorter than written`);
    return bytes;
  }

  /** Writes the buffered records to the current segment; false when some are still owed to it. */
  async #writeSegment(): Promise<boolean> {
    if (this.#records.length === 0 && !this.#unwritten) return true;
    const fresh = this.#records.take();
    // Bytes a failed write left behind go first, so records stay whole and in order.
    const bytes = this.#unwritten ? concatBytes([this.#unwritten, fresh]) : fresh;
    this.#unwritten = undefined;
    const current = this.#segments[this.#segments.length - 1];
    let written = 0;
    try {
      // A flush's records are usually a few KB: written at once, without a
      // round trip to Deno's thread pool that an async write costs.
      const here = bytes.length <= SYNC_SEGMENT_BYTES;
      while (written < bytes.length) {
        const rest = bytes.subarray(written);
        written += here ? current.file!.writeSync(rest) : await current.file!.write(rest);
      }
      if (!this.#flushFailed) {
        if (this.#failingSince !== undefined) log.info("The crash journal writes again");
        this.#failingSince = undefined;
      }
      return true;
    } catch (error) {
      this.#unwritten = bytes.slice(written);
      this.#writeFailed(error);
      if (this.#unwritten.length > MAX_UNWRITTEN) {
        log.error("Crash journal unwritable for long: dropping {bytes} bytes of it", {
          bytes: this.#unwritten.length,
        });
        this.#unwritten = undefined;
      }
      return false;
    }
  }

  #writeFailed(error: unknown): void {
    this.#flushFailed = true;
    this.#onWriteFailed?.(error);
    if (this.#failingSince === undefined) {
      log.error("Cannot write the crash journal: {error}; retrying", { error });
      this.#failingSince = this.#monotonic();
    }
  }

  async #rotateIfDue(): Promise<void> {
    if (this.#monotonic() - this.#segmentStartedAt < this.#segmentMs) return;
    try {
      await this.#rotate();
    } catch (error) {
      // Keep writing to the current segment; try a new one next period (at once, once the
      // directory removed is made again).
      log.error("Cannot start a new journal segment: {error}", { error });
      this.#segmentStartedAt = this.#monotonic();
      if (error instanceof Deno.errors.NotFound) this.#remakeDirIfGone();
    }
  }

  /** Opens the next segment first, so a failure leaves the current one in use. */
  async #rotate(): Promise<void> {
    const name = `${this.#runId}-${
      String(this.#segmentCounter++).padStart(9, "0")
    }${PIECE_SEGMENT_SUFFIX}`;
    const file = await Deno.open(join(this.dir, name), { write: true, createNew: true });
    const previous = this.#segments[this.#segments.length - 1];
    previous?.file?.close();
    if (previous) previous.file = undefined;
    this.#segments.push({ name, live: new Set(), file });
    this.#segmentStartedAt = this.#monotonic();
    if (!this.#reopenAll) return;
    this.#reopenAll = false;
    for (const entry of this.#entries.values()) await this.#reopen(entry);
    // Every open batch is whole in the new segment: the older ones hold nothing more
    // (what they say of batches settled meanwhile would bring those back), and go.
    for (const older of this.#segments.slice(0, -1)) older.live.clear();
    // Written now: until then the batch files are named by no record on disk.
    await this.#writeSegment();
  }

  /**
   * Records an open batch again in a new segment, its earlier records lost
   * with the old one: its `o`, and what its file holds so far as one piece
   * (its pieces back to back are one deflate stream, so the whole of it
   * inflates as one), read back for its CRC. A file that is gone (removed
   * with the directory, or kept open while it was unlinked) stops the
   * journal for the batch: its `s` record then gives the lines it held, so a
   * crash later rebuilds it under its key with them marked lost.
   */
  async #reopen(entry: Entry): Promise<void> {
    this.#record(entry.id, entry.openRecord);
    if (entry.written === 0) return;
    // A file with its end: the piece stops before the final block and the trailer.
    const end = entry.ended ? entry.written - FINAL_BLOCK.length - 8 : entry.written;
    let bytes: Uint8Array | undefined;
    try {
      bytes = (await Deno.readFile(entry.path)).subarray(0, entry.written);
    } catch {
      bytes = undefined;
    }
    // Settled while its file was read: no record may name it after its `r`.
    if (entry.settled) return;
    if (bytes && bytes.length === entry.written) {
      const crc = crc32(bytes.subarray(HEADER_BYTES, end)) >>> 0;
      const lines = entry.totalLines;
      this.#record(
        entry.id,
        piecesRecord(entry.id, HEADER_BYTES, end - HEADER_BYTES, crc, lines, lines),
      );
      if (entry.ended) this.#record(entry.id, sealRecord(entry));
      return;
    }
    this.#stopFor(entry);
    this.#record(entry.id, sealRecord(entry));
  }

  /** Oldest first, and never the current segment. */
  async #deleteSettledSegments(): Promise<void> {
    while (this.#segments.length > 1 && this.#segments[0].live.size === 0) {
      const [oldest] = this.#segments;
      await Deno.remove(join(this.dir, oldest.name)).catch(() => {});
      this.#segments.shift();
    }
  }
}

function pieceRecord(
  id: number,
  offset: number,
  length: number,
  crc: number,
  piece: BodyPiece,
): string {
  return piecesRecord(id, offset, length, crc, piece.lines, piece.totalLines);
}

/** An `s` record: the batch's file holds `totalLines` lines and nothing more will be added. */
function sealRecord(entry: Pick<Entry, "id" | "totalLines">): string {
  return `s\t${entry.id}\t${entry.totalLines}`;
}

/** A `p` record: `length` bytes at `offset` with this CRC hold `lines` lines, `totalLines` so far. */
function piecesRecord(
  id: number,
  offset: number,
  length: number,
  crc: number,
  lines: number,
  totalLines: number,
): string {
  const hex = crc.toString(16).padStart(8, "0");
  return `p\t${id}\t${offset}\t${length}\t${hex}\t${lines}\t${totalLines}`;
}

/** The gzip trailer after the last piece (or of no text at all). */
function endOf(last: BodyPiece | undefined, entry: Entry): Uint8Array {
  return last
    ? gzipTrailer(last.textCrc, last.textBytes)
    : gzipTrailer(entry.textCrc, entry.textBytes);
}

export interface RecoveredJournal {
  /** Batches rebuilt from the journal, in the order they were opened. */
  readonly batches: SealedBatch[];
  /** Journal files of earlier runs: delete them once every batch is settled. */
  readonly files: string[];
  /** Records that could not be read (a torn last write, damage). */
  readonly badRecords: number;
  /** Damaged records that may have held lines but name no legible batch: lost unmarked. */
  readonly unattributed: number;
  /** Each skipped record or lost run of lines, as `<file>:<line> (<why>)`. */
  readonly skipped: readonly string[];
}

export interface RecoverOptions extends Partial<RebuildOptions> {
  /**
   * What a line says about itself: receive time, data or event, update ids.
   * Default: the archive's own reader (archive/decode.ts `lineFactsOf`).
   */
  readonly describe?: (line: string) => Omit<LineFacts, "text">;
}

/**
 * Rebuilds the batches an earlier run left in the journal (both formats:
 * the pieces journal.ts writes, and the lines earlier versions wrote,
 * journal_lines.ts).
 * Damage is skipped and logged; it never turns into a changed line: lines
 * lost to it become `dropped` lines with exact counts (journal_rebuild.ts).
 * Without `pool` and `deflater`, the batches are compressed on this thread
 * at level 5; without `rekey`, a batch whose open record is damaged is lost
 * (logged and counted).
 */
export async function recoverJournal(
  dir: string,
  options: RecoverOptions,
): Promise<RecoveredJournal> {
  const settled = await finishSettledRemoval(dir);
  const files = (await journalFiles(dir)).filter((name) => !settled.has(name));
  const reading: JournalReading = {
    pending: new Map(),
    describe: options.describe ?? lineFactsOf,
    badRecords: 0,
    unattributed: 0,
    skipped: [],
  };
  const pieces = new PieceReader(reading, dir);
  let segmentLost = false;
  for (const name of files.filter((f) => f.endsWith(SEGMENT_SUFFIX))) {
    const skipped = reading.skipped.length;
    const bytes = await readJournalFile(dir, name, reading);
    if (bytes === undefined) {
      // Unreadable (not merely gone): its records are lost with it.
      segmentLost ||= reading.skipped.length > skipped;
      continue;
    }
    if (name.endsWith(PIECE_SEGMENT_SUFFIX)) pieces.readSegment(name, bytes);
    else readLineSegment(reading, name, bytes);
  }
  await pieces.readPieces();
  // Records lost (a segment unreadable, or damaged records in one): a batch file no record
  // left names may be one of theirs.
  if (segmentLost || reading.badRecords > 0) await setAsideUnnamed(dir, files, pieces.namedFiles);
  const { batches, unattributed } = rebuildBatches(reading.pending.values(), {
    pool: options.pool ?? new ChunkPool(),
    deflater: options.deflater ?? localDeflater(5),
    rekey: options.rekey,
  });
  const { badRecords, skipped } = reading;
  if (skipped.length > 0) {
    log.warn("Skipped {badRecords} unreadable journal records: {skipped}", {
      badRecords,
      skipped: skipped.slice(0, 20).join(", ") + (skipped.length > 20 ? ", …" : ""),
      unattributed: reading.unattributed + unattributed,
    });
  }
  return {
    batches,
    files: files.map((f) => join(dir, f)),
    badRecords,
    unattributed: reading.unattributed + unattributed,
    skipped,
  };
}

/**
 * Names the earlier runs' files being removed (`removeSettledFiles`): while
 * it exists, those files are a run in part, never to be read as a journal.
 */
const SETTLED_LIST = "settled.list";

/**
 * Removes earlier runs' journal files (`RecoveredJournal.files`, all in one
 * directory) once every batch they held is settled. Their names are written
 * first (fsync, rename), then the files go, then the list: a stop or a crash
 * part-way leaves the list, and the next start (`recoverJournal`) removes the
 * rest before it reads the journal. Read as it stood, a run's newer segments
 * without the older one that opened their batches would be rebuilt, stored a
 * second time under new keys, with lines counted lost that were stored.
 */
export async function removeSettledFiles(paths: readonly string[]): Promise<void> {
  if (paths.length === 0) return;
  const dir = dirname(paths[0]);
  const names = paths.map((path) => basename(path));
  await writeAtomically(join(dir, SETTLED_LIST), new TextEncoder().encode(names.join("\n") + "\n"));
  await removeNamed(dir, names);
}

/**
 * Finishes a removal a stop or a crash cut short: the files its list names,
 * then the list. A file that cannot be removed (EPERM, say) is logged and
 * left with the list, to be tried at the next start; the names it returns
 * are never read as a journal either way.
 */
async function finishSettledRemoval(dir: string): Promise<ReadonlySet<string>> {
  let text: string;
  try {
    text = await Deno.readTextFile(join(dir, SETTLED_LIST));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return new Set();
    throw error;
  }
  const names = text.split("\n").filter((name) =>
    name !== "" && name === basename(name) &&
    (name.endsWith(SEGMENT_SUFFIX) || name.endsWith(BATCH_FILE_SUFFIX))
  );
  log.info("Removing {count} journal files of batches settled before the last stop", {
    count: names.length,
  });
  try {
    await removeNamed(dir, names);
  } catch (error) {
    log.warn("Could not remove every settled journal file ({error}); they are left unread", {
      error: error instanceof Error ? error.message : String(error),
    });
  }
  return new Set(names);
}

/** Removes the named files, then the list; throws the first failure (the list is kept then). */
async function removeNamed(dir: string, names: readonly string[]): Promise<void> {
  let failure: unknown;
  for (const name of names) {
    await Deno.remove(join(dir, name)).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) failure ??= error;
    });
  }
  if (failure !== undefined) throw failure;
  await Deno.remove(join(dir, SETTLED_LIST));
}

/**
 * With a segment that could not be read, or records damaged, the batch files
 * no readable record names may be batches whose records were lost: not rebuilt (their keys are
 * unknown, and they may be stored already), but never deleted either. They
 * go to `quarantine/` for a person to look at.
 */
async function setAsideUnnamed(
  dir: string,
  files: readonly string[],
  named: ReadonlySet<string>,
): Promise<void> {
  const unnamed = files.filter((f) => f.endsWith(BATCH_FILE_SUFFIX) && !named.has(f));
  for (const name of unnamed) {
    const moved = await setAside(dir, name);
    log.error(
      "The crash journal's {name} is named by no record left (records were lost): " +
        "{where}; its lines are not recovered",
      { name, where: moved === true ? "moved to quarantine/" : `left in place (${moved})` },
    );
  }
}

/** The journal's segments and batch files, sorted by name (segments by age); none without the directory. */
async function journalFiles(dir: string): Promise<string[]> {
  const files: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      const ours = entry.name.endsWith(SEGMENT_SUFFIX) || entry.name.endsWith(BATCH_FILE_SUFFIX);
      if (entry.isFile && ours) files.push(entry.name);
    }
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
  return files.sort();
}
