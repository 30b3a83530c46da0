/**
 * Reading the journal of compressed pieces (written by journal.ts) back at
 * start-up. Segment records (`.v3.jnl`, each after its CRC-32):
 *   o <id> <key> <stream>                                 a batch opened
 *   p <id> <offset> <length> <crc> <lines> <totalLines>   a piece is in the batch file
 *   s <id> <totalLines>                                   the batch was sealed (its file is whole)
 *   r <id>                                                the batch was settled
 * A batch's pieces are in its own file, `<run>-b<id>.gz.part`: a gzip header
 * and then each piece (raw deflate ending on a full flush, so each inflates
 * on its own) at the offset its record gives, its CRC-32 in the record.
 *
 * A piece that is missing or damaged (CRC) costs its own lines, no more: they
 * become one exact `dropped` line (counted from its record), and the pieces
 * around it are kept. Lines of records that are damaged themselves are
 * counted from the running totals of the records after them; lines after
 * the last record read are lost with the crash (the `recovered` line says so).
 */

import { getLogger } from "@logtape/logtape";
import { join } from "node:path";
import { constants, crc32, inflateRawSync } from "node:zlib";
import { type JournalReading, pendingFor } from "./journal_lines.ts";
import { type JournalRecord, parseSegment } from "./journal_records.ts";
import { addHole, type Pending } from "./journal_rebuild.ts";

const log = getLogger(["l2", "journal"]);

/** Where a batch's pieces are: `<run>-b<id>.gz.part` in the journal directory. */
export const BATCH_FILE_SUFFIX = ".gz.part";
export const batchFileName = (run: string, id: number | string): string =>
  `${run}-b${id}${BATCH_FILE_SUFFIX}`;
/** The gzip header in front of the first piece. */
export const HEADER_BYTES = 10;

interface PieceRecord {
  readonly offset: number;
  readonly length: number;
  readonly crc: number;
  readonly lines: number;
  /** Lines in the batch up to and including this piece. */
  readonly totalLines: number;
}

/** The pieces of one batch as its records list them; `gap` where a record was damaged. */
interface PieceList {
  readonly file: string;
  readonly pieces: Array<PieceRecord | "gap">;
  /** Lines in the batch by its latest record that says. */
  totalLines: number;
}

/** Where journal files that cannot be read are moved, inside the journal directory. */
export const JOURNAL_QUARANTINE = "quarantine";

/**
 * A journal file's bytes; undefined when it is gone, or cannot be read
 * (permissions, an I/O error, a directory in its place). One unreadable file
 * never stops the start: it is logged, counted with the skipped records and
 * moved to `quarantine/` for a person to look at (left in place, it would be
 * read at a later start without the files recovered with it now), and the
 * batches are rebuilt from the other files as far as they go.
 */
export async function readJournalFile(
  dir: string,
  name: string,
  reading: Pick<JournalReading, "skipped" | "badRecords">,
): Promise<Uint8Array | undefined> {
  try {
    return await Deno.readFile(join(dir, name));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    reading.badRecords++;
    reading.skipped.push(`${name} (cannot be read: ${(error as Error).message})`);
    const moved = await setAside(dir, name);
    log.error(
      "Cannot read the crash journal's {name}: {error}; {where}. What it held is recovered as " +
        "far as the other journal files allow; lost lines are marked `dropped`",
      { name, error, where: moved === true ? "moved to quarantine/" : `left in place (${moved})` },
    );
    return undefined;
  }
}

/** Moves a journal file to `quarantine/`: true, or why it could not be moved. */
export async function setAside(dir: string, name: string): Promise<true | string> {
  try {
    await Deno.mkdir(join(dir, JOURNAL_QUARANTINE), { recursive: true });
    await Deno.rename(join(dir, name), join(dir, JOURNAL_QUARANTINE, name));
    return true;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

export class PieceReader {
  readonly #reading: JournalReading;
  readonly #dir: string;
  readonly #lists = new Map<string, PieceList>();

  constructor(reading: JournalReading, dir: string) {
    this.#reading = reading;
    this.#dir = dir;
  }

  /** Adds the records of one segment. */
  readSegment(name: string, bytes: Uint8Array): void {
    const run = name.slice(0, name.indexOf("-"));
    for (const record of parseSegment(bytes, true)) {
      if (record.ok) this.#record(run, record.fields);
      else this.#damage(run, name, record);
    }
  }

  /** The batch files the records name. */
  get namedFiles(): ReadonlySet<string> {
    return new Set([...this.#lists.values()].map((list) => list.file));
  }

  /** Reads every listed batch's pieces from its file into its lines. */
  async readPieces(): Promise<void> {
    for (const [ref, list] of this.#lists) {
      const batch = pendingFor(this.#reading, ref);
      if (batch.settled) continue;
      // Gone or unreadable: its lines are lost, each piece a hole with its line count.
      const bytes = await readJournalFile(this.#dir, list.file, this.#reading);
      this.#linesOf(batch, list, bytes ?? new Uint8Array(0));
    }
  }

  #listFor(run: string, id: string): PieceList {
    const ref = `${run}/${id}`;
    let list = this.#lists.get(ref);
    if (!list) {
      this.#lists.set(ref, list = { file: batchFileName(run, id), pieces: [], totalLines: 0 });
    }
    return list;
  }

  #record(run: string, fields: readonly string[]): void {
    const [kind, id, ...rest] = fields;
    const ref = `${run}/${id}`;
    const numbers = rest.map(Number);
    if (kind === "o" && rest.length === 2) {
      const batch = pendingFor(this.#reading, ref);
      batch.key = rest[0];
      batch.stream = rest[1];
      this.#listFor(run, id);
    } else if (kind === "p" && rest.length === 5 && isPiece(numbers, rest[2])) {
      const [offset, length, , lines, totalLines] = numbers;
      const list = this.#listFor(run, id);
      // A piece at or before one listed supersedes it and all after it: a batch recorded
      // again in a new segment (its file so far as one piece) while an older segment with
      // its first records is still there. Its lines must not be read twice.
      const superseded = list.pieces.findIndex((p) => p !== "gap" && p.offset >= offset);
      if (superseded !== -1) list.pieces.length = superseded;
      list.pieces.push({ offset, length, crc: Number.parseInt(rest[2], 16), lines, totalLines });
      list.totalLines = Math.max(list.totalLines, totalLines);
    } else if (kind === "s" && rest.length === 1 && Number.isSafeInteger(numbers[0])) {
      pendingFor(this.#reading, ref).sealed = true;
      const list = this.#listFor(run, id);
      list.totalLines = Math.max(list.totalLines, numbers[0]);
    } else if (kind === "r" && id !== undefined) pendingFor(this.#reading, ref).settled = true;
    else this.#reading.badRecords++;
  }

  #damage(run: string, name: string, record: Extract<JournalRecord, { ok: false }>): void {
    this.#reading.badRecords++;
    this.#reading.skipped.push(`${name}:${record.line} (${record.why})`);
    if (record.kind === "p" && record.id !== undefined) {
      this.#listFor(run, record.id).pieces.push("gap");
    } else if (record.kind === undefined) this.#reading.unattributed++;
  }

  /** The batch's lines from its intact pieces, a hole for the lines of each damaged one. */
  #linesOf(batch: Pending, list: PieceList, bytes: Uint8Array): void {
    let accounted = 0;
    const lose = (lines: number, why: string) => {
      if (lines <= 0) return;
      this.#reading.skipped.push(`${list.file} (${lines} lines: ${why})`);
      addHole(batch, lines);
      accounted += lines;
    };
    for (const piece of list.pieces) {
      if (piece === "gap") continue; // its lines are counted by the next record's total
      lose(piece.totalLines - piece.lines - accounted, "a damaged piece record");
      const lines = linesOfPiece(piece, bytes);
      if (lines === undefined) {
        lose(piece.lines, "piece missing or damaged");
        continue;
      }
      for (const line of lines) this.#addLine(batch, list.file, line);
      accounted += lines.length;
    }
    lose(list.totalLines - accounted, "a damaged piece record");
  }

  #addLine(batch: Pending, file: string, line: string): void {
    try {
      batch.items.push({ text: line, ...this.#reading.describe(line) });
    } catch {
      this.#reading.badRecords++;
      this.#reading.skipped.push(`${file} (a line that is not an archive line)`);
      addHole(batch);
    }
  }
}

/** The lines of one piece, or undefined when it is missing, damaged or not as many as its record says. */
function linesOfPiece(piece: PieceRecord, bytes: Uint8Array): string[] | undefined {
  const end = piece.offset + piece.length;
  if (piece.offset < HEADER_BYTES || end > bytes.length) return undefined;
  const data = bytes.subarray(piece.offset, end);
  if ((crc32(data) >>> 0) !== piece.crc) return undefined;
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(
      inflateRawSync(data, { finishFlush: constants.Z_SYNC_FLUSH }),
    );
    const lines = text.slice(0, -1).split("\n");
    return text.endsWith("\n") && lines.length === piece.lines ? lines : undefined;
  } catch {
    return undefined;
  }
}

/** A piece record's numbers are whole, and its CRC is 8 hex digits. */
function isPiece(numbers: readonly number[], crc: string): boolean {
  return /^[0-9a-f]{8}$/.test(crc) &&
    numbers.every((n, i) => i === 2 || (Number.isSafeInteger(n) && n >= 0));
}
