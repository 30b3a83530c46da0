/**
 * Classifies one WebSocket text frame from a combined-stream connection.
 * Pure. The payload of a data frame is returned as the exact substring the
 * exchange sent, so the archive keeps Binance's bytes, not a re-encoding.
 */

import { whyNotOneLine } from "../archive/decode.ts";
import { updateIds } from "../archive/update_ids.ts";

export type Frame =
  | {
    readonly kind: "data";
    readonly stream: string;
    /** The `data` value as JSON text, byte-identical to the frame where possible. */
    readonly dataText: string;
    /** First and last update id the payload covers, when it carries any. */
    readonly firstUpdateId?: number;
    readonly lastUpdateId?: number;
    /** USD-M diff depth: the previous update id (`pu`). */
    readonly prevUpdateId?: number;
  }
  | { readonly kind: "malformed"; readonly reason: string; readonly stream?: string }
  | { readonly kind: "control"; readonly event: string; readonly payload: Record<string, unknown> };

const STREAM_PREFIX = '{"stream":';
/** The stream name Binance gives `serverShutdown` on a combined connection. */
const SERVER_SHUTDOWN_STREAM = "!serverShutdown";

/**
 * Fast path grammar: the compact (whitespace-free) subset of JSON that Binance
 * combined-stream depth frames use, `{"stream":"<name>","data":{...}}` where
 * each member value of `data` is a string, a number or an array of arrays of
 * strings. Strings carry no escapes, no control characters and nothing beyond
 * ASCII: a match is ASCII, so its length is its UTF-8 length (the recorder
 * counts received bytes that way; a frame with other characters takes the
 * slow path, with the same result).
 *
 * A match is therefore valid JSON with exactly the two outer keys, `data` an
 * object and a stream name whose raw text is its decoded value. (ASCII also
 * keeps out surrogates: `JSON.stringify` escapes a lone one, so the slow path
 * would not find the exact splice for it.)
 *
 * No catastrophic backtracking: every alternative and repetition starts with a
 * character no sibling starts with (`"` string, `-`/digit number, `[` array,
 * `,` next element, `.` fraction, `e`/`E` exponent), and a char-class loop ends
 * only at a character its class excludes, so a failed attempt is given up after
 * one character per saved choice point: time is linear in the input.
 */
const FAST_FRAME = (() => {
  const str = String.raw`"[^"\\\u0000-\u001f\u0080-\uffff]*"`;
  const num = String.raw`-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?`;
  const inner = String.raw`\[(?:${str}(?:,${str})*)?\]`;
  const outer = String.raw`\[(?:${inner}(?:,${inner})*)?\]`;
  const member = `${str}:(?:${str}|${num}|${outer})`;
  const name = String.raw`"[^"\\\u0000-\u001f\u0080-\uffff]*"`;
  return new RegExp(
    String.raw`^\{"stream":${name},"data":\{(?:${member}(?:,${member})*)?\}\}$`,
  );
})();

/**
 * Longer frames skip the fast path. Linear time is not enough: V8 keeps one
 * backtrack entry per repetition and throws a RangeError past ~16 M of them
 * (~50 MB of `"",`). Real depth frames are below 40 KB.
 */
const FAST_MAX_LENGTH = 1 << 20;

/** The fast path cannot answer for certain; the slow path decides. */
const UNSURE = null;

/** Index of the first character of the stream name, after `{"stream":"`. */
const NAME_START = STREAM_PREFIX.length + 1;
/** `","data":` between the name and the payload. */
const NAME_TO_DATA = 9;

/**
 * Classifies a frame. Same result as {@link parseFrameSlow} for every input,
 * but a frame in the fast grammar (every Binance depth frame) is recognised
 * by one RegExp test and a few `indexOf`s instead of `JSON.parse`, which was
 * ~12 % of the collector's CPU at 20,000 msg/s.
 */
export function parseFrame(text: string): Frame {
  return parseFrameFast(text) ?? parseFrameSlow(text);
}

/**
 * The fast path alone: null when the frame is outside the fast grammar or the
 * fast path cannot be sure of the answer. Exported so tests can check that it
 * is actually taken; callers want {@link parseFrame}.
 */
export function parseFrameFast(text: string): Frame | null {
  if (text.length > FAST_MAX_LENGTH || !FAST_FRAME.test(text)) return null;
  // `!serverShutdown` and other `!` streams are announcements: the slow path decides.
  if (text.charCodeAt(NAME_START) === 0x21 /* ! */) return null;
  const nameEnd = text.indexOf('"', NAME_START);
  const dataText = text.slice(nameEnd + NAME_TO_DATA, -1);
  return fastFrame(text.slice(NAME_START, nameEnd), dataText);
}

/**
 * The data frame for a fast-grammar match, with `updateIds`' rules applied to
 * ids read straight from the text; UNSURE when a key the rules consult occurs
 * more than once (`JSON.parse` keeps the last; not worth handling here).
 * Object literals rather than a spread: no intermediate object per message.
 */
function fastFrame(stream: string, dataText: string): Frame | typeof UNSURE {
  const first = numberAt(dataText, 'U":');
  if (first === UNSURE) return UNSURE;
  if (first !== undefined) {
    const last = numberAt(dataText, 'u":');
    if (last === UNSURE) return UNSURE;
    if (last !== undefined) {
      const prev = numberAt(dataText, 'pu":');
      if (prev === UNSURE) return UNSURE;
      if (prev === undefined) {
        return { kind: "data", stream, dataText, firstUpdateId: first, lastUpdateId: last };
      }
      return {
        kind: "data",
        stream,
        dataText,
        firstUpdateId: first,
        lastUpdateId: last,
        prevUpdateId: prev,
      };
    }
  }
  const id = numberAt(dataText, 'lastUpdateId":');
  if (id === UNSURE) return UNSURE;
  if (id !== undefined) {
    return { kind: "data", stream, dataText, firstUpdateId: id, lastUpdateId: id };
  }
  // Trades and other events (they name an `e`): the slow path applies updateIds' rules.
  if (keyIndex(dataText, 'e":', 0) >= 0) return UNSURE;
  // Spot book ticker: `u` alone.
  const u = numberAt(dataText, 'u":');
  if (u === UNSURE) return UNSURE;
  if (u === undefined || keyIndex(dataText, 'U":', 0) >= 0) {
    return { kind: "data", stream, dataText };
  }
  return { kind: "data", stream, dataText, firstUpdateId: u, lastUpdateId: u };
}

/**
 * The number a top-level key of a fast-grammar `data` text holds: undefined
 * when the key is absent or its value is not a number, UNSURE when it occurs
 * twice. `key` is the key's text after its opening quote, e.g. `U":`.
 *
 * Why a `"<key>":` found in the text is a top-level key: strings in the grammar
 * hold no `"`, so every `"` opens or closes a string, and one followed by a
 * letter cannot close one (a closing quote is followed by `:`, `,`, `]` or `}`).
 * So the match is a whole string followed by `:`, i.e. a member key, and the
 * only object in `data` is `data` itself. `Number` of a JSON number literal is
 * the double `JSON.parse` gives for it.
 */
function numberAt(dataText: string, key: string): number | undefined | typeof UNSURE {
  const at = keyIndex(dataText, key, 0);
  if (at < 0) return undefined;
  const start = at + key.length;
  if (keyIndex(dataText, key, start) >= 0) return UNSURE;
  const c = dataText.charCodeAt(start);
  if (c === 0x22 /* " */ || c === 0x5b /* [ */) return undefined;
  // A number in this grammar ends at the member's `,` or the object's `}`.
  let end = start;
  let value = 0;
  let digitsOnly = true;
  for (let d = c; d !== 0x2c && d !== 0x7d; d = dataText.charCodeAt(++end)) {
    value = value * 10 + d - 0x30;
    digitsOnly &&= d >= 0x30 && d <= 0x39;
  }
  // Up to 15 digits the sum is exact (no string cut out); a sign, fraction,
  // exponent or longer number is read by `Number`.
  return digitsOnly && end - start <= 15 ? value : Number(dataText.slice(start, end));
}

/**
 * Index just after the `"` of the first `"<key>` at or after `from`, or -1.
 * Searching without the leading quote is what makes this cheap: V8 scans for a
 * short pattern's first character, and `"` is everywhere in a depth frame
 * (`indexOf('"U":')` alone cost more than the RegExp), while `U`, `u`, `p`
 * and `l` are rare; `lastIndexOf` is slower still, hence a second forward search.
 */
function keyIndex(text: string, key: string, from: number): number {
  for (let i = text.indexOf(key, from); i >= 0; i = text.indexOf(key, i + 1)) {
    if (text.charCodeAt(i - 1) === 0x22 /* " */) return i;
  }
  return -1;
}

/**
 * The reference classifier: `JSON.parse` and shape checks. `parseFrame` must
 * return a deep-equal result for every input (tests/frames_test.ts checks this);
 * it is exported for that test and is what `parseFrame` falls back to.
 */
export function parseFrameSlow(text: string): Frame {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    return {
      kind: "malformed",
      reason: `not JSON: ${(error as Error).message}`,
      stream: guessStream(text),
    };
  }
  if (!isRecord(parsed)) return { kind: "malformed", reason: "not a JSON object" };
  if (typeof parsed.stream === "string" && isRecord(parsed.data)) {
    const data = parsed.data;
    // A combined connection wraps announcements too (BINANCE.md, serverShutdown):
    // {"stream":"!serverShutdown","data":{"e":"serverShutdown","E":…}}.
    if (parsed.stream === SERVER_SHUTDOWN_STREAM && typeof data.e === "string") {
      return { kind: "control", event: data.e, payload: data };
    }
    // Anything a data line would not carry as sent is kept whole, as raw text.
    if (Object.keys(parsed).length !== 2) {
      return { kind: "malformed", reason: "keys beside stream and data", stream: parsed.stream };
    }
    const dataText = dataValueText(text);
    if (dataText === undefined) {
      // `stream` or `data` twice: a data line would keep only the last value.
      return { kind: "malformed", reason: "a key given twice", stream: parsed.stream };
    }
    const why = whyNotOneLine(dataText, data);
    if (why) return { kind: "malformed", reason: `${why} inside data`, stream: parsed.stream };
    // The name goes into the line as JSON too: DuckDB refuses a lone surrogate anywhere.
    if (!parsed.stream.isWellFormed()) {
      return { kind: "malformed", reason: "a lone UTF-16 surrogate escape in the stream name" };
    }
    return { kind: "data", stream: parsed.stream, dataText, ...updateIds(data) };
  }
  // Binance sends a few non-stream messages on a connection, e.g. the raw
  // shape {"e":"serverShutdown",...} before a planned disconnect.
  if (typeof parsed.e === "string" && parsed.stream === undefined) {
    return { kind: "control", event: parsed.e, payload: parsed };
  }
  return {
    kind: "malformed",
    reason: "unknown shape: expected {stream, data}",
    stream: typeof parsed.stream === "string" ? parsed.stream : undefined,
  };
}

/**
 * The text of the value of the top-level key `data`, exactly as the frame
 * has it, whatever the layout: key order, whitespace, escapes in keys;
 * undefined when the object has other than two members (a key given twice).
 * `text` must be valid JSON.
 */
function dataValueText(text: string): string | undefined {
  let at = skipSpace(text, 0);
  if (text[at] !== "{") return undefined;
  at = skipSpace(text, at + 1);
  let found: string | undefined;
  let keys = 0;
  while (text[at] === '"') {
    const keyEnd = valueEnd(text, at);
    const key: unknown = JSON.parse(text.slice(at, keyEnd));
    const valueStart = skipSpace(text, skipSpace(text, keyEnd) + 1); // past the colon
    const end = valueEnd(text, valueStart);
    keys++;
    if (key === "data") found = text.slice(valueStart, end);
    at = skipSpace(text, end);
    if (text[at] !== ",") break;
    at = skipSpace(text, at + 1);
  }
  // A key given twice (JSON.parse keeps the last): the first value would be lost.
  return keys === 2 ? found : undefined;
}

function skipSpace(text: string, at: number): number {
  while (at < text.length && " \t\n\r".includes(text[at])) at++;
  return at;
}

/** Where the JSON value starting at `at` ends (exclusive). */
function valueEnd(text: string, at: number): number {
  let depth = 0;
  for (let i = at; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      for (i++; text[i] !== '"'; i++) if (text[i] === "\\") i++;
      if (depth === 0) return i + 1;
    } else if (c === "{" || c === "[") depth++;
    else if (c === "}" || c === "]") {
      if (--depth <= 0) return depth === 0 ? i + 1 : i;
    } else if (depth === 0 && ", \t\n\r".includes(c)) return i;
  }
  return text.length;
}

/** Best effort: the stream a broken frame was meant for, if its text names one. */
function guessStream(text: string): string | undefined {
  const match = /^\{"stream":"([a-z0-9_]+@[a-z0-9@]+)"/.exec(text);
  return match?.[1];
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
