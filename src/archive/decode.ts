/**
 * Reading one archive line back: the inverse of encode.ts, and the one place
 * that knows a line's field names when reading. Pure. `verify`, `book` and
 * the crash journal's recovery all read lines through `decodeLine`.
 *
 * A line is valid when it is a JSON object with an integer `recv_ts`, a
 * string `stream`, and either a string `event` (an event line) or an object
 * `data` (a data line: a message, or a snapshot when its stream ends with
 * the snapshot suffix, meta.ts).
 */

import type { DroppedFacts } from "./encode.ts";
import { lineKindOf } from "./meta.ts";
import { updateIds } from "./update_ids.ts";

/** The update ids of a data line's payload (update_ids.ts). */
/**
 * Event lines after which the record may miss messages (DESIGN.md, "A reader
 * can tell from the archive alone"): a break of a stream's update-id chain or
 * a long silence bordered by one is explained. `verify` and `book` read the
 * same set, so they agree on what is explained.
 */
export const EXPLAINING_EVENTS: ReadonlySet<string> = new Set([
  "gap",
  "disconnected",
  "stale",
  "recovered",
  "rotated",
  "shutdown",
  "connected",
  // The process did not run (the Mac slept), or the wall clock jumped forward.
  "suspended",
  "clock_step",
  "dropped",
]);

export interface LineIds {
  readonly firstUpdateId?: number;
  readonly lastUpdateId?: number;
  /** USD-M diff depth: the previous update id (`pu`). */
  readonly prevUpdateId?: number;
}

interface LineHead {
  /** Receive time, µs since the epoch. */
  readonly recvTs: number;
  readonly stream: string;
  /** Every field of the line, as parsed (an event's details are here). */
  readonly fields: Readonly<Record<string, unknown>>;
}

/** A message from the exchange's stream, or a REST snapshot stored with it. */
export interface DecodedData extends LineHead {
  readonly kind: "message" | "snapshot";
  readonly data: Readonly<Record<string, unknown>>;
  /** A snapshot's are its `lastUpdateId` (first and last alike). */
  readonly ids: LineIds;
}

/** A line the collector wrote about its own recording. */
export interface DecodedEvent extends LineHead {
  readonly kind: "event";
  readonly event: string;
}

/** Why a line cannot be read, from the first check it fails, in this order. */
export type LineFaultKind = "not-json" | "not-object" | "no-head" | "no-body";

export interface LineFault {
  readonly kind: "malformed";
  readonly fault: LineFaultKind;
  /** For people: what is wrong with the line. */
  readonly reason: string;
  /** The line's receive time, when it has a valid one. */
  readonly recvTs?: number;
}

export type DecodedLine = DecodedData | DecodedEvent;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * An escape that may stand for half of a UTF-16 surrogate pair (`\uD800` to
 * `\uDFFF`); only escapes can: text decoded from UTF-8 holds none.
 */
const SURROGATE_ESCAPE = /\\u[dD][89a-fA-F]/;

/**
 * Whether a JSON text holds a string (or key) with a lone UTF-16 surrogate,
 * e.g. `"\ud800"`: valid JSON for `JSON.parse`, not for DuckDB, which
 * refuses the whole file. `value` is the text parsed.
 */
export function hasLoneSurrogate(text: string, value: unknown): boolean {
  return SURROGATE_ESCAPE.test(text) && !wellFormed(value);
}

/**
 * Why a JSON text (`value`, parsed) cannot be spliced into an archive line as
 * sent, or undefined when it can: JSON allows a line break as whitespace but
 * an NDJSON line cannot hold one, and DuckDB refuses a lone surrogate.
 */
export function whyNotOneLine(text: string, value: unknown): string | undefined {
  if (/[\n\r]/.test(text)) return "a line break";
  if (hasLoneSurrogate(text, value)) return "a lone UTF-16 surrogate escape";
  return undefined;
}

/** Every string and key well formed. A loop, not recursion: JSON.parse takes nesting no call stack does. */
function wellFormed(value: unknown): boolean {
  const left: unknown[] = [value];
  while (left.length > 0) {
    const next = left.pop();
    if (typeof next === "string") {
      if (!next.isWellFormed()) return false;
    } else if (Array.isArray(next)) {
      for (const inner of next) left.push(inner);
    } else if (typeof next === "object" && next !== null) {
      for (const [key, inner] of Object.entries(next)) {
        if (!key.isWellFormed()) return false;
        left.push(inner);
      }
    }
  }
  return true;
}

/** One line of an object's decompressed text (without its newline). */
export function decodeLine(text: string): DecodedLine | LineFault {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return fault("not-json", `not JSON: ${(error as Error).message}`);
  }
  if (hasLoneSurrogate(text, value)) {
    return fault(
      "not-json",
      "a lone UTF-16 surrogate escape (\\uD800 to \\uDFFF unpaired): DuckDB cannot read it",
    );
  }
  if (!isRecord(value)) return fault("not-object", "not a JSON object");
  const recvTs = value.recv_ts;
  const stream = value.stream;
  if (typeof recvTs !== "number" || !Number.isSafeInteger(recvTs)) {
    return fault("no-head", "no integer recv_ts or no string stream");
  }
  if (typeof stream !== "string") {
    return { ...fault("no-head", "no integer recv_ts or no string stream"), recvTs };
  }
  const event = value.event;
  if (typeof event === "string") return { kind: "event", recvTs, stream, event, fields: value };
  const data = value.data;
  if (!isRecord(data)) {
    return { ...fault("no-body", "neither an event nor a data object"), recvTs };
  }
  const kind = lineKindOf(stream, false) === "snapshot" ? "snapshot" : "message";
  return { kind, recvTs, stream, data, ids: updateIds(data), fields: value };
}

function fault(kind: LineFaultKind, reason: string): LineFault {
  return { kind: "malformed", fault: kind, reason };
}

/** The facts of a `dropped` event line (encode.ts `droppedLine`); undefined without its time span. */
export function droppedFactsOf(
  line: Pick<DecodedEvent, "event" | "fields">,
): DroppedFacts | undefined {
  const { first_recv_ts: first, last_recv_ts: last } = line.fields;
  if (line.event !== "dropped" || typeof first !== "number" || typeof last !== "number") {
    return undefined;
  }
  return {
    reason: String(line.fields.reason),
    messages: Number(line.fields.messages),
    firstRecvTs: first,
    lastRecvTs: last,
  };
}

/** What a batch counts of a line (meta.ts), as the batcher had it live. */
export interface LineFacts extends LineIds {
  readonly recvTs: number;
  readonly isData: boolean;
  readonly isSnapshot: boolean;
}

/**
 * The facts of a stored line, for rebuilding a batch's metadata from its
 * lines (the crash journal's recovery): snapshots carry no update ids there.
 * Throws on a line that is not an archive line.
 */
export function lineFactsOf(text: string): LineFacts {
  const line = decodeLine(text);
  if (line.kind === "malformed") throw new Error(`not an archive line: ${line.reason}`);
  if (line.kind === "event") return { recvTs: line.recvTs, isData: false, isSnapshot: false };
  const isSnapshot = line.kind === "snapshot";
  return { recvTs: line.recvTs, isData: true, isSnapshot, ...(isSnapshot ? {} : line.ids) };
}
