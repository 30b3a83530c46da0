/**
 * The crash journal: every line of every open batch is appended to a
 * journal segment on disk within `flushMs` (default 250 ms) of arriving, or
 * sooner once 1 MB is buffered, so a SIGKILL or a crash loses at most that
 * much. At start-up, batches left in the journal become sealed batches
 * again, under the key they were given when they opened.
 *
 * Invariants:
 * - One segment file is written at a time, with one `write` per flush; a
 *   new segment starts every `segmentMs`. Segment names sort by age.
 * - A segment is deleted only when no batch that touched it is still
 *   unsettled (stored, spooled or dropped) AND every older segment is gone.
 *   So a batch in the journal either has all its records, or has lost its
 *   `open` record (and is skipped at recovery): never a silent middle hole.
 * - A batch's upload waits for its `seal` record to be written, so recovery
 *   never mistakes an uploaded batch for an unfinished one — but not for
 *   ever (recording must go on on a full disk). So a rebuilt batch is
 *   marked `recovered` and stored only where its key is absent: one whose
 *   seal never reached the disk cannot replace the whole copy stored.
 * - Recovery is deterministic: recovering the same journal twice yields the
 *   same objects under the same keys, so a repeat upload overwrites a batch
 *   with identical content instead of storing it twice.
 *
 * Record format, one per line, fields separated by tabs, each record after
 * its CRC-32 (see journal_records.ts; damage is skipped, never recovered as
 * a changed line):
 *   o <id> <key> <stream>   a batch opened
 *   l <id> <line>           an archive line (JSON, never contains a tab-free newline)
 *   s <id>                  the batch was sealed (complete)
 *   r <id>                  the batch was settled (no longer needs recovery)
 * Ids are numbers local to the process run, which is part of the segment name.
 */

import { getLogger } from "@logtape/logtape";
import { join } from "node:path";
import type { BatchObserver, SealedBatch } from "../batch/batcher.ts";
import { localDeflater } from "../batch/body.ts";
import { ChunkPool } from "../batch/chunks.ts";
import { type JournalReading, readLineSegment } from "./journal_lines.ts";
import { CHECKED_SEGMENT_SUFFIX, SEGMENT_SUFFIX, stampCrc } from "./journal_records.ts";
import { type LineFacts, rebuildBatches, type RebuildOptions } from "./journal_rebuild.ts";

export type { LineFacts } from "./journal_rebuild.ts";

const log = getLogger(["l2", "journal"]);

/** Buffered records that start a write before the timer does: keeps the buffers small. */
const FLUSH_BYTES = 1024 * 1024;
/** Journal bytes kept for a retry while writes fail. */
const MAX_UNWRITTEN = 256 * 1024 * 1024;
/** Longest an upload waits for its seal record while the journal cannot write. */
const MAX_SEAL_WAIT_MS = 5000;

const encoder = new TextEncoder();

/**
 * Records as UTF-8, encoded once as they arrive into a reused buffer (two
 * buffers in turn: one being written to disk, one taking records).
 */
class RecordBuffer {
  #bytes = new Uint8Array(1024 * 1024);
  #length = 0;
  #recordStart = 0;
  #spare: Uint8Array<ArrayBuffer> | undefined;

  get length(): number {
    return this.#length;
  }

  text(text: string): void {
    // UTF-8 needs at most 3 bytes per UTF-16 unit: reserve that, encode once.
    const need = this.#length + text.length * 3;
    if (need > this.#bytes.length) {
      const bigger = new Uint8Array(Math.max(need, this.#bytes.length * 2));
      bigger.set(this.#bytes.subarray(0, this.#length));
      this.#bytes = bigger;
    }
    this.#length += encoder.encodeInto(text, this.#bytes.subarray(this.#length)).written;
  }

  /** Bytes already encoded (copied). */
  bytes(bytes: Uint8Array): void {
    const need = this.#length + bytes.length;
    if (need > this.#bytes.length) {
      const bigger = new Uint8Array(Math.max(need, this.#bytes.length * 2));
      bigger.set(this.#bytes.subarray(0, this.#length));
      this.#bytes = bigger;
    }
    this.#bytes.set(bytes, this.#length);
    this.#length += bytes.length;
  }

  /** Starts a record: room for its CRC, filled in by `end`. */
  begin(): void {
    this.text("00000000\t");
    this.#recordStart = this.#length;
  }

  /** Ends a record: its CRC-32 in front, a newline after it. */
  end(): void {
    stampCrc(this.#bytes, this.#recordStart, this.#length);
    if (this.#length === this.#bytes.length) this.text("\n");
    else this.#bytes[this.#length++] = 0x0a;
  }

  /** The bytes so far, and an empty buffer for what follows; hand the view back when written. */
  take(): Uint8Array<ArrayBuffer> {
    const taken = this.#bytes.subarray(0, this.#length);
    const spare = this.#spare;
    this.#bytes = spare && spare.length >= this.#bytes.length
      ? spare
      : new Uint8Array(this.#bytes.length);
    this.#spare = undefined;
    this.#length = 0;
    return taken;
  }

  giveBack(taken: Uint8Array<ArrayBuffer>): void {
    this.#spare = new Uint8Array(taken.buffer);
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

export interface JournalOptions {
  readonly flushMs?: number;
  readonly segmentMs?: number;
  /** Wall clock, ms (for segment names). */
  readonly now?: () => number;
  /** Called on every failed write to the journal file (l2_disk_write_failures_total). */
  readonly onWriteFailed?: (error: unknown) => void;
}

interface Segment {
  readonly name: string;
  /** Batches with records in this segment that are not yet settled. */
  readonly live: Set<number>;
  file?: Deno.FsFile;
}

export class Journal implements BatchObserver {
  readonly dir: string;
  readonly #runId: string;
  readonly #flushMs: number;
  readonly #segmentMs: number;
  readonly #now: () => number;
  readonly #onWriteFailed: ((error: unknown) => void) | undefined;
  readonly #ids = new Map<string, number>();
  /** Segments of this run still on disk, oldest first; the last is current. */
  readonly #segments: Segment[] = [];
  /** Per batch id, the segments it has records in. */
  readonly #touched = new Map<number, Set<Segment>>();
  #nextId = 0;
  readonly #buffer = new RecordBuffer();
  #segmentStartedAt = 0;
  #segmentCounter = 0;
  #flushing: Promise<void> = Promise.resolve();
  /** The flush waiting for the one in progress; later calls join it. */
  #nextFlush: Promise<void> | undefined;
  #waiters: Array<() => void> = [];
  #timer: ReturnType<typeof setInterval> | undefined;
  /** Bytes a failed write left behind, written first next time. */
  #unwritten: Uint8Array | undefined;
  #failingSince: number | undefined;

  private constructor(dir: string, options: JournalOptions) {
    this.dir = dir;
    this.#flushMs = options.flushMs ?? 250;
    this.#segmentMs = options.segmentMs ?? 60_000;
    this.#now = options.now ?? Date.now;
    this.#onWriteFailed = options.onWriteFailed;
    this.#runId = String(this.#now()).padStart(15, "0");
  }

  /** Starts a journal for this run; call `recoverJournal` on the directory first. */
  static async start(dir: string, options: JournalOptions = {}): Promise<Journal> {
    await Deno.mkdir(dir, { recursive: true });
    const journal = new Journal(dir, options);
    await journal.#rotate();
    journal.#timer = setInterval(() => journal.flush(), journal.#flushMs);
    return journal;
  }

  opened(key: string, stream: string): void {
    const id = this.#nextId++;
    this.#ids.set(key, id);
    this.#record(id, `o\t${id}\t${key}\t${stream}`);
  }

  appended(key: string, text: string, bytes?: Uint8Array): void {
    const id = this.#ids.get(key);
    if (id === undefined) return;
    // In two parts: no per-line copy of the text just to prefix it; the
    // line's bytes when the batcher has them, not a second encoding.
    this.#buffer.begin();
    this.#buffer.text(`l\t${id}\t`);
    if (bytes) this.#buffer.bytes(bytes);
    else this.#buffer.text(text);
    this.#buffer.end();
    this.#touch(id);
    // A flush already waiting takes this call along (see `flush`).
    if (this.#buffer.length >= FLUSH_BYTES) this.flush();
  }

  sealed(key: string): Promise<void> {
    const id = this.#ids.get(key);
    if (id === undefined) return Promise.resolve();
    this.#record(id, `s\t${id}`);
    const written = new Promise<void>((resolve) => this.#waiters.push(resolve));
    this.flush();
    return written;
  }

  /** The batch is stored, spooled or dropped: it no longer needs the journal. */
  settled(key: string): void {
    const id = this.#ids.get(key);
    if (id === undefined) return;
    this.#ids.delete(key);
    this.#buffer.begin();
    this.#buffer.text(`r\t${id}`);
    this.#buffer.end();
    for (const segment of this.#touched.get(id) ?? []) segment.live.delete(id);
    this.#touched.delete(id);
  }

  /**
   * Writes buffered records; resolves when they are in the file. Calls made
   * while a flush waits for its turn share it: it takes every record buffered
   * when it starts, so at most one write runs and one waits, however many
   * batches seal at once (one write per seal capped the seal rate).
   */
  flush(): Promise<void> {
    if (this.#nextFlush) return this.#nextFlush;
    const next = this.#flushing.then(() => {
      this.#nextFlush = undefined;
      return this.#flushNow();
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
   * the rest stay for the next start to recover.
   */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.flush();
    for (const segment of this.#segments) segment.file?.close();
    if (this.#segments.every((segment) => segment.live.size === 0)) {
      for (const segment of this.#segments) {
        await Deno.remove(join(this.dir, segment.name)).catch(() => {});
      }
    }
    this.#segments.length = 0;
  }

  #record(id: number, record: string): void {
    this.#buffer.begin();
    this.#buffer.text(record);
    this.#buffer.end();
    this.#touch(id);
  }

  /** Marks batch `id` as having records in the current segment. */
  #touch(id: number): void {
    const current = this.#segments[this.#segments.length - 1];
    current.live.add(id);
    let touched = this.#touched.get(id);
    if (!touched) this.#touched.set(id, touched = new Set());
    touched.add(current);
  }

  async #flushNow(): Promise<void> {
    const waiters = this.#waiters;
    this.#waiters = [];
    if (this.#buffer.length > 0 || this.#unwritten) {
      const fresh = this.#buffer.take();
      // Bytes a failed write left behind go first, so records stay whole and in order.
      const bytes = this.#unwritten ? concat(this.#unwritten, fresh) : fresh;
      this.#unwritten = undefined;
      const current = this.#segments[this.#segments.length - 1];
      let written = 0;
      try {
        while (written < bytes.length) {
          written += await current.file!.write(bytes.subarray(written));
        }
        if (this.#failingSince !== undefined) log.info("The crash journal writes again");
        this.#failingSince = undefined;
      } catch (error) {
        // A copy: the buffer `fresh` views goes back to taking records.
        this.#unwritten = bytes.slice(written);
        this.#onWriteFailed?.(error);
        if (this.#failingSince === undefined) {
          log.error("Cannot write the crash journal: {error}; retrying", { error });
          this.#failingSince = this.#now();
        }
        if (this.#unwritten.length > MAX_UNWRITTEN) {
          log.error("Crash journal unwritable for long: dropping {bytes} bytes of it", {
            bytes: this.#unwritten.length,
          });
          this.#unwritten = undefined;
        }
      }
      this.#buffer.giveBack(fresh);
    }
    // A seal is durable once written. While the journal cannot write, uploads
    // wait for it, but not for ever: recording must not stop on a bad disk.
    const stuck = this.#failingSince !== undefined &&
      this.#now() - this.#failingSince < MAX_SEAL_WAIT_MS;
    if (stuck) this.#waiters.unshift(...waiters);
    else for (const resolve of waiters) resolve();
    if (this.#unwritten) return; // do not rotate with records still owed to this segment
    if (this.#now() - this.#segmentStartedAt >= this.#segmentMs) {
      try {
        await this.#rotate();
      } catch (error) {
        // Keep writing to the current segment; try a new one next period.
        log.error("Cannot start a new journal segment: {error}", { error });
        this.#segmentStartedAt = this.#now();
      }
    }
    await this.#deleteSettledSegments();
  }

  /** Opens the next segment first, so a failure leaves the current one in use. */
  async #rotate(): Promise<void> {
    const name = `${this.#runId}-${
      String(this.#segmentCounter++).padStart(6, "0")
    }${CHECKED_SEGMENT_SUFFIX}`;
    const file = await Deno.open(join(this.dir, name), { write: true, createNew: true });
    const previous = this.#segments[this.#segments.length - 1];
    previous?.file?.close();
    if (previous) previous.file = undefined;
    this.#segments.push({ name, live: new Set(), file });
    this.#segmentStartedAt = this.#now();
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

export interface RecoveredJournal {
  /** Batches rebuilt from the journal, in the order they were opened. */
  readonly batches: SealedBatch[];
  /** Journal files of earlier runs: delete them once every batch is settled. */
  readonly files: string[];
  /** Records that could not be read (a torn last write, damage). */
  readonly badRecords: number;
  /** Damaged records that may have been lines but name no legible batch: lost unmarked. */
  readonly unattributed: number;
  /** Each skipped record, as `<segment>:<line> (<why>)`. */
  readonly skipped: readonly string[];
}

export interface RecoverOptions extends Partial<RebuildOptions> {
  /** What a line says about itself: receive time, data or event, update ids. */
  readonly describe: (line: string) => Omit<LineFacts, "text">;
}

/**
 * Rebuilds the batches an earlier run left in the journal. Batches that were
 * settled are skipped; a batch that was sealed comes back exactly as sealed;
 * one still open gets a `recovered` event line at its end.
 *
 * Damage (a bad checksum, a torn write) is skipped record by record and
 * logged; it never turns into a changed line. A damaged line record whose
 * batch is legible becomes a `dropped` event in its place (reason
 * "journal damage", with the count), and the intact lines around it are
 * kept. A batch whose open record is damaged is rebuilt under the key
 * `rekey` gives it (from its lines) with a `recovered` line saying so;
 * without `rekey`, or when it returns undefined, those lines are lost
 * (logged and counted). The rebuilt batches are compressed with `deflater`
 * (default: on this thread, level 5) into `pool` (default: their own).
 */
export async function recoverJournal(
  dir: string,
  options: RecoverOptions,
): Promise<RecoveredJournal> {
  const files = await segmentFiles(dir);
  const reading: JournalReading = {
    pending: new Map(),
    describe: options.describe,
    badRecords: 0,
    unattributed: 0,
    skipped: [],
  };
  for (const name of files) readLineSegment(reading, name, await Deno.readFile(join(dir, name)));
  const rebuilt = rebuildBatches(reading.pending.values(), {
    pool: options.pool ?? new ChunkPool(),
    deflater: options.deflater ?? localDeflater(5),
    rekey: options.rekey,
  });
  const { badRecords, skipped } = reading;
  const unattributed = reading.unattributed + rebuilt.unattributed;
  if (badRecords > 0) {
    log.warn("Skipped {badRecords} unreadable journal records: {skipped}", {
      badRecords,
      skipped: skipped.slice(0, 20).join(", ") + (skipped.length > 20 ? ", …" : ""),
      unattributed,
    });
  }
  const paths = files.map((f) => join(dir, f));
  return { batches: rebuilt.batches, files: paths, badRecords, unattributed, skipped };
}

/** The journal's segments, oldest first; none when the directory does not exist. */
async function segmentFiles(dir: string): Promise<string[]> {
  const files: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isFile && entry.name.endsWith(SEGMENT_SUFFIX)) files.push(entry.name);
    }
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
  return files.sort();
}
