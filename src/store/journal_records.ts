/**
 * How crash journal records are framed on disk, so that damage is found
 * instead of recovered as a changed line. A record is one line:
 *
 *   <CRC-32 of the record's UTF-8 bytes, 8 lower-case hex digits>\t<record>\n
 *
 * Segments of the journal of compressed pieces (store/journal.ts) end in
 * `.v3.jnl`; those of the earlier journal of lines in `.v2.jnl`, both framed
 * this way. The oldest segments (`.jnl` alone) hold bare records and are
 * still read, unchecked.
 */

import { crc32 } from "node:zlib";

export const SEGMENT_SUFFIX = ".jnl";
/** Names of segments of the journal of lines whose records carry a CRC. */
export const CHECKED_SEGMENT_SUFFIX = ".v2.jnl";
/** Names of segments of the journal of compressed pieces. */
export const PIECE_SEGMENT_SUFFIX = ".v3.jnl";
/** The CRC's hex digits and the tab after them. */
export const CRC_PREFIX_BYTES = 9;

const HEX = new TextEncoder().encode("0123456789abcdef");
const fatalDecoder = new TextDecoder("utf-8", { fatal: true });
const lenientDecoder = new TextDecoder();

/** Writes the CRC-32 of `bytes[from, to)` as 8 hex digits and a tab at `bytes[from - 9]`. */
export function stampCrc(bytes: Uint8Array, from: number, to: number): void {
  const crc = crc32(bytes.subarray(from, to)) >>> 0;
  const at = from - CRC_PREFIX_BYTES;
  for (let i = 0; i < 8; i++) bytes[at + i] = HEX[(crc >>> (28 - 4 * i)) & 0xf];
  bytes[at + 8] = 0x09;
}

export type JournalRecord =
  /** An intact record's tab-separated fields: kind, id, then the rest. */
  | { readonly ok: true; readonly fields: readonly string[] }
  /**
   * A damaged record (bad CRC, cut short, not UTF-8). `kind` and `id` are
   * what its start seems to say, when that is legible; they may be wrong.
   */
  | {
    readonly ok: false;
    readonly kind?: string;
    readonly id?: string;
    /** 1-based line number in the segment, for the log. */
    readonly line: number;
    readonly why: string;
  };

/**
 * The records of one segment, in order. The text after the last newline
 * is a torn write: every flush ends with a newline, so it is damaged even
 * when it happens to look whole.
 */
export function parseSegment(bytes: Uint8Array, checked: boolean): JournalRecord[] {
  const records: JournalRecord[] = [];
  let start = 0;
  let line = 0;
  while (start < bytes.length) {
    const end = bytes.indexOf(0x0a, start);
    const torn = end < 0;
    const stop = torn ? bytes.length : end;
    line++;
    if (stop > start) {
      const record = bytes.subarray(start, stop);
      records.push(
        torn ? damaged(record, checked, line, "cut short (a torn last write)") : (
          checked ? checkedRecord(record, line) : uncheckedRecord(record)
        ),
      );
    }
    start = stop + 1;
  }
  return records;
}

function checkedRecord(record: Uint8Array, line: number): JournalRecord {
  if (record.length < CRC_PREFIX_BYTES || record[8] !== 0x09) {
    return damaged(record, true, line, "no checksum");
  }
  const digits = lenientDecoder.decode(record.subarray(0, 8));
  if (!/^[0-9a-f]{8}$/.test(digits)) return damaged(record, true, line, "no checksum");
  const stated = Number.parseInt(digits, 16);
  const body = record.subarray(CRC_PREFIX_BYTES);
  if ((crc32(body) >>> 0) !== stated) return damaged(record, true, line, "checksum mismatch");
  let text: string;
  try {
    text = fatalDecoder.decode(body);
  } catch {
    return damaged(record, true, line, "not UTF-8");
  }
  return { ok: true, fields: text.split("\t") };
}

function uncheckedRecord(record: Uint8Array): JournalRecord {
  return { ok: true, fields: lenientDecoder.decode(record).split("\t") };
}

function damaged(record: Uint8Array, checked: boolean, line: number, why: string): JournalRecord {
  const text = lenientDecoder.decode(record.subarray(0, 64));
  // Only a complete id (a tab after it) is taken: a cut "l\t12" must not read as batch 1.
  const match = (checked ? /^[^\t]{8}\t([olsrp])\t(\d+)\t/ : /^([olsr])\t(\d+)\t/).exec(text);
  return match ? { ok: false, kind: match[1], id: match[2], line, why } : { ok: false, line, why };
}
