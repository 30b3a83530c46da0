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
  return JSON.stringify(line);
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
