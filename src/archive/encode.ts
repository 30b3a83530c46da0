/**
 * The archive's line format and compression. Pure apart from gzip, which is
 * asynchronous (node:zlib). The collector compresses in a worker instead
 * (batch/compress.ts): node:zlib deflates on the calling thread in Deno. gzip is
 * the collector's largest CPU cost, so its level matters (see `deno task bench`).
 *
 * Data line:  {"recv_ts":<µs>,"stream":"<name>","data":<payload as received>}
 * Event line: {"recv_ts":<µs>,"stream":"<name>","event":"<what>",...details}
 */

import { gzip } from "node:zlib";
import { concatBytes } from "./bytes.ts";

export type EventName =
  | "connected"
  | "disconnected"
  | "stale"
  | "malformed"
  | "control"
  | "gap"
  | "rotated"
  | "recovered"
  | "dropped"
  | "shutdown"
  | "suspended"
  | "clock_step"
  /** exchangeInfo lists a new status for the symbol (TRADING ↔ BREAK, HALT…); recording goes on. */
  | "status"
  /** The symbol left the recorded set (delisted, excluded, another shard's): its last line. */
  | "stopped";

const FIXED_KEYS = new Set(["recv_ts", "stream", "event"]);

/** `dataText` must already be valid JSON (the exchange's own bytes). */
export function dataLine(recvTs: number, stream: string, dataText: string): string {
  return `{"recv_ts":${recvTs},"stream":${JSON.stringify(stream)},"data":${dataText}}`;
}

/** A data line before it is written: `dataLine`'s arguments but the receive time. */
export interface DataLineParts {
  readonly stream: string;
  /** Valid JSON, as for `dataLine`. */
  readonly dataText: string;
}

const utf8 = new TextEncoder();
const RECV_TS_OPEN = utf8.encode('{"recv_ts":');
const CLOSE_BRACE = 0x7d;

/** The part of `stream`'s data lines between the receive time and the payload, as UTF-8. */
export function dataLineMiddle(stream: string): Uint8Array {
  return utf8.encode(`,"stream":${JSON.stringify(stream)},"data":`);
}

/** Bytes `writeDataLine` may need for a payload of `dataText.length` UTF-16 units. */
export function dataLineMaxBytes(dataText: string, middle: Uint8Array): number {
  // UTF-8 takes at most 3 bytes per UTF-16 unit; a receive time at most 25 characters
  // (`String(-1.2345678901234567e-6)`; the clock gives whole µs, 16 digits today).
  return RECV_TS_OPEN.length + 25 + middle.length + dataText.length * 3 + 1;
}

/**
 * Writes the UTF-8 of `dataLine(recvTs, stream, dataText)` at the start of
 * `out` and returns its length; `middle` is `dataLineMiddle(stream)`, and
 * `out` holds at least `dataLineMaxBytes` bytes. The same bytes as encoding
 * the line, but the line is never built: at 20,000 messages/s that string
 * (~1 KB, joined only to be encoded) was a large share of what the main
 * thread allocated.
 */
export function writeDataLine(
  out: Uint8Array,
  recvTs: number,
  middle: Uint8Array,
  dataText: string,
): number {
  out.set(RECV_TS_OPEN);
  let at = RECV_TS_OPEN.length;
  at += Number.isSafeInteger(recvTs) && recvTs >= 0
    ? writeDigits(out, at, recvTs)
    : utf8.encodeInto(String(recvTs), out.subarray(at)).written;
  out.set(middle, at);
  at += middle.length;
  at += utf8.encodeInto(dataText, out.subarray(at)).written;
  out[at++] = CLOSE_BRACE;
  return at;
}

/** The decimal digits of a non-negative safe integer at `out[at]`, as `String(n)` spells it; their count. */
function writeDigits(out: Uint8Array, at: number, n: number): number {
  // Two halves of at most 8 digits, so the loops run on small integers (a
  // receive time in µs has 16 digits; dividing the double was ~4 % of the path).
  if (n < 1e8) return writeSmall(out, at, n, digitCount(n));
  const high = Math.floor(n / 1e8);
  const count = digitCount(high);
  writeSmall(out, at, high, count);
  writeSmall(out, at + count, n - high * 1e8, 8);
  return count + 8;
}

/** The digits of `n` < 1e8, zero-padded to `count`, at `out[at]`. */
function writeSmall(out: Uint8Array, at: number, n: number, count: number): number {
  let rest = n | 0;
  for (let i = at + count - 1; i >= at; i--) {
    const tenth = (rest / 10) | 0;
    out[i] = 0x30 + rest - tenth * 10;
    rest = tenth;
  }
  return count;
}

function digitCount(n: number): number {
  let count = 1;
  for (let rest = n; rest >= 10; rest = (rest / 10) | 0) count++;
  return count;
}

export function eventLine(
  recvTs: number,
  stream: string,
  event: EventName,
  details: Readonly<Record<string, unknown>> = {},
): string {
  // The fixed fields come first, and details cannot override them.
  const line: Record<string, unknown> = { recv_ts: recvTs, stream, event };
  for (const [key, value] of Object.entries(details)) {
    if (!FIXED_KEYS.has(key)) line[key] = value;
  }
  // A detail may quote text with a lone UTF-16 surrogate (a stream name from a
  // frame, V8's message naming one unit of an emoji): JSON.stringify would
  // escape it as `\udXXX`, which DuckDB refuses, and with it the whole file.
  return JSON.stringify(line, wellFormedStrings);
}

function wellFormedStrings(_key: string, value: unknown): unknown {
  return typeof value === "string" ? value.toWellFormed() : value;
}

/** What a `dropped` line says: why, how many, and between which receive times (µs). */
export interface DroppedFacts {
  readonly reason: string;
  readonly messages: number;
  readonly firstRecvTs: number;
  readonly lastRecvTs: number;
}

/**
 * A hole written into the record: `messages` messages of `stream`, received
 * between `firstRecvTs` and `lastRecvTs`, were lost for `reason`.
 */
export function droppedLine(recvTs: number, stream: string, facts: DroppedFacts): string {
  return eventLine(recvTs, stream, "dropped", {
    reason: facts.reason,
    messages: facts.messages,
    first_recv_ts: facts.firstRecvTs,
    last_recv_ts: facts.lastRecvTs,
  });
}

/** Joins lines into NDJSON (every line ends with a newline) and gzips it. */
export function gzipLines(lines: readonly string[], level: number): Promise<Uint8Array> {
  const text = lines.length === 0 ? "" : lines.join("\n") + "\n";
  return gzipChunks([new TextEncoder().encode(text)], level);
}

/**
 * Gzips `chunks` back to back as one gzip member. The chunks are read while
 * the promise is pending: do not reuse them before it settles.
 */
export function gzipChunks(chunks: readonly Uint8Array[], level: number): Promise<Uint8Array> {
  const input = concatBytes(chunks);
  return new Promise((resolve, reject) => {
    gzip(input, { level }, (error, result) => {
      if (error) reject(error);
      else resolve(new Uint8Array(result.buffer, result.byteOffset, result.byteLength));
    });
  });
}
