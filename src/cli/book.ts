/**
 * `l2-uploader book`: rebuilds one symbol's order book from the archive
 * (DATA_DIR/archive or the S3 bucket, through the same reader and key
 * selection as `verify`) and prints the top `--levels` levels every
 * `--every` (a duration, or `update` for every message) as CSV or NDJSON.
 * The procedure and its checks are in book/rebuild.ts; this file picks the
 * objects, streams their lines (one object at a time, a few reads started
 * ahead) and writes rows. Notes (where the book starts, goes down and why,
 * snapshot checks) go to stderr.
 *
 * Exit 0 when the book was rebuilt and every check passed (downtime the
 * archive explains is fine), 1 when a snapshot check failed, the record has
 * an unexplained break or damage, or no book could be built at all (no
 * depth stream of the symbol in the range); 2 a usage error (also a
 * `--channel` that picks none of the symbol's depth streams in the range),
 * an archive that cannot be listed, or an object that cannot be fetched
 * (after retries, verify/fetch.ts): the book stops there, its rows so far
 * written, and the object is not called damaged.
 */

import { parseArgs } from "node:util";
import { type DecodedLine, decodeLine, type LineFault } from "../archive/decode.ts";
import { parseKey } from "../archive/keys.ts";
import { sequenceRuleFor } from "../binance/sequence.ts";
import type { Config, Market } from "../config_types.ts";
import { depthBookOf, depthDiffOf } from "../book/payload.ts";
import {
  type BookNote,
  BookRebuilder,
  type BookRow,
  type LineAfterRange,
} from "../book/rebuild.ts";
import type { ArchiveReader } from "../verify/archive.ts";
import { isoMicros } from "../verify/audit.ts";
import { FetchError, fetchObject, type FetchPolicy } from "../verify/fetch.ts";
import {
  archiveReaderFor,
  isDiffStream,
  lookbackUs,
  parseDurationMs,
  parseTime,
  readFailure,
  selectKeys,
  VERIFY_ARG_OPTIONS,
} from "./verify.ts";

/** The options `book` adds to verify's `--from`, `--to` and `--symbol` (main.ts merges them). */
export const BOOK_ARG_OPTIONS = {
  levels: { type: "string" },
  every: { type: "string" },
  format: { type: "string" },
  out: { type: "string" },
  channel: { type: "string" },
} as const;

export interface BookFlags {
  readonly from?: string;
  readonly to?: string;
  readonly symbol?: readonly string[];
  readonly levels?: string;
  readonly every?: string;
  readonly format?: string;
  readonly out?: string;
  readonly channel?: string;
}

export interface BookOptions {
  readonly symbol: string;
  /** µs since the epoch; `to` exclusive. */
  readonly from?: number;
  readonly to?: number;
  readonly levels: number;
  /** µs; undefined: a row after every message. */
  readonly everyUs?: number;
  readonly format: "csv" | "ndjson";
  readonly out?: string;
  /** The stream type to read (`depth@100ms`); default: the diff stream, else the only one. */
  readonly channel?: string;
}

export interface BookIo {
  /** Rows when there is no `--out`. */
  readonly write: (text: string) => void;
  /** Notes, the summary and usage errors. */
  readonly printError: (text: string) => void;
  /** The archive to read instead of the configured one (tests). */
  readonly reader?: ArchiveReader;
  /** How a failed object read is retried (default `DEFAULT_FETCH_POLICY`). */
  readonly fetchPolicy?: FetchPolicy;
}

const MAX_LEVELS = 5000;
const READ_AHEAD = 4;
/** Rows are written in pieces of about this many characters. */
const FLUSH_CHARS = 64 * 1024;

export function bookOptionsFromCli(
  flags: BookFlags,
): { readonly options: BookOptions } | { readonly problem: string } {
  const symbols = (flags.symbol ?? []).flatMap((s) => s.split(",")).map((s) =>
    s.trim().toUpperCase().normalize("NFC")
  ).filter((s) => s !== "");
  if (symbols.length !== 1) return { problem: "--symbol: give exactly one symbol" };
  const symbol = symbols[0];
  // Any script, as `verify` takes it: spot lists symbols with non-ASCII letters (NFC, as in keys).
  if (!/^[\p{L}\p{N}_]+$/u.test(symbol)) {
    return { problem: `--symbol: not a symbol: "${symbol}"` };
  }
  const from = flags.from === undefined ? undefined : parseTime(flags.from);
  if (from === null) return { problem: `--from: not an ISO 8601 date or time: "${flags.from}"` };
  const to = flags.to === undefined ? undefined : parseTime(flags.to);
  if (to === null) return { problem: `--to: not an ISO 8601 date or time: "${flags.to}"` };
  if (from !== undefined && to !== undefined && from >= to) {
    return { problem: `--from ${flags.from} is not before --to ${flags.to}` };
  }
  const levels = Number(flags.levels ?? "10");
  if (!Number.isInteger(levels) || levels < 1 || levels > MAX_LEVELS) {
    return { problem: `--levels: a whole number from 1 to ${MAX_LEVELS}: "${flags.levels}"` };
  }
  let everyUs: number | undefined;
  const every = flags.every ?? "1s";
  if (every !== "update") {
    const ms = parseDurationMs(every);
    if (ms === undefined || ms < 1) {
      return { problem: `--every: "update" or a duration like 100ms, 1s, 1m: "${every}"` };
    }
    everyUs = Math.round(ms * 1000);
  }
  const format = flags.format ?? "csv";
  if (format !== "csv" && format !== "ndjson") {
    return { problem: `--format: csv or ndjson: "${format}"` };
  }
  // A book is rebuilt from depth: a diff stream (`depth@100ms`) or a partial book (`depth20`),
  // of either market unless named (`usdm/depth@100ms`).
  if (flags.channel !== undefined && !isDepthStream(typeOfId(flags.channel))) {
    return {
      problem: `--channel: a depth stream type such as depth@100ms, depth20@100ms or ` +
        `usdm/depth@100ms: "${flags.channel}"`,
    };
  }
  return {
    options: { symbol, from, to, levels, everyUs, format, out: flags.out, channel: flags.channel },
  };
}

/** `book` with its own argument list (as after the command word). */
export async function bookFromArgs(
  config: Config,
  args: readonly string[],
  io: BookIo,
): Promise<number> {
  let flags: BookFlags;
  try {
    flags = parseArgs({
      args: [...args],
      options: { ...VERIFY_ARG_OPTIONS, ...BOOK_ARG_OPTIONS },
      strict: true,
    }).values;
  } catch (error) {
    io.printError(`l2-uploader book: ${(error as Error).message}\n`);
    return 2;
  }
  return await book(config, flags, io);
}

export async function book(config: Config, flags: BookFlags, io: BookIo): Promise<number> {
  const parsed = bookOptionsFromCli(flags);
  if ("problem" in parsed) {
    io.printError(`l2-uploader book: ${parsed.problem}\n`);
    return 2;
  }
  const options = parsed.options;
  const reader = io.reader ?? await archiveReaderFor(config);
  try {
    let stream: ChosenStream;
    try {
      const chosen = await chooseStream(reader, config.prefix, options, lookbackUs(config));
      if ("problem" in chosen) {
        io.printError(`l2-uploader book: ${chosen.problem}\n`);
        return chosen.exitCode;
      }
      stream = chosen;
    } catch (error) {
      io.printError(`l2-uploader book: ${readFailure(error, reader.location)}\n`);
      return 2;
    }
    const output = options.out === undefined
      ? { write: io.write, close: async () => {} }
      : await fileOutput(options.out);
    try {
      return await rebuild({ reader, fetchPolicy: io.fetchPolicy }, stream, options, {
        write: output.write,
        printError: io.printError,
      });
    } catch (error) {
      if (!(error instanceof FetchError)) throw error;
      // The rows so far stand (the book was right up to there); the unread object is not damage.
      io.printError(
        `l2-uploader book: ${
          readFailure(error, reader.location, "the rows stop where it could not be read")
        }\n`,
      );
      return 2;
    } finally {
      await output.close();
    }
  } finally {
    if (!io.reader) reader.close();
  }
}

interface ChosenStream {
  readonly market: Market;
  readonly streamType: string;
  /** In key order; the last may be the stream's first object after `--to` (see `LineFeed`). */
  readonly keys: readonly string[];
}

/**
 * The symbol's objects in the range, of one stream type: `--channel`, else
 * the diff stream (a partial-book stream when there is none); then that
 * stream's first object after `--to`, whose first lines decide the samples
 * due before `--to` (it plays no part in the choice).
 */
async function chooseStream(
  reader: ArchiveReader,
  prefix: string,
  options: BookOptions,
  lookbackUs: number,
): Promise<ChosenStream | ChoiceProblem> {
  const byType = new Map<string, { market: Market; keys: string[]; after?: string }>();
  const ignore = { badKey() {} };
  // A diff stream from before `--from`: the book needs the last snapshot before the range,
  // and what follows it, to stand at the range's start (those lines print nothing).
  const selection = {
    prefix,
    from: options.from,
    to: options.to,
    symbols: [options.symbol],
    lookbackUs,
    readAfterRange: true,
  };
  for await (const key of selectKeys(reader, selection, ignore)) {
    const parts = parseKey(key)!;
    const id = `${parts.market}/${parts.streamType}`;
    const entry = byType.get(id) ?? { market: parts.market as Market, keys: [] };
    if (options.to !== undefined && parts.firstRecvTs >= options.to) entry.after = key;
    else entry.keys.push(key);
    byType.set(id, entry);
  }
  const found = [...byType].filter(([, entry]) => entry.keys.length > 0).map(([id]) => id);
  const pick = pickStream(found, { ...options, location: reader.location });
  if (typeof pick !== "string") return pick;
  const entry = byType.get(pick)!;
  const streamType = typeOfId(pick);
  const keys = [...entry.keys];
  if (entry.after !== undefined) keys.push(entry.after);
  return { market: entry.market, streamType, keys };
}

/** The stream type of a `market/type` id. */
function typeOfId(id: string): string {
  return id.slice(id.indexOf("/") + 1);
}

/**
 * Which of the symbol's streams in the range (`market/type` ids) to read, or
 * why none. No depth stream: no book can be built (exit 1, as for a symbol
 * the range does not hold). Depth streams, but `--channel` names none of
 * them, or none is named and there is no diff stream but several partial
 * books: the command must change (exit 2), and the problem says what there is.
 */
function pickStream(
  found: readonly string[],
  options: Pick<BookOptions, "symbol" | "channel"> & { readonly location: string },
): string | ChoiceProblem {
  const depth = found.filter((id) => isDepthStream(typeOfId(id)));
  if (depth.length === 0) {
    const others = found.length === 0 ? "" : ` (it has ${found.join(", ")})`;
    const what = found.length === 0 ? "no object" : "no depth stream";
    return {
      problem: `${what} of ${options.symbol} in the range at ${options.location}${others}`,
      exitCode: 1,
    };
  }
  const { channel, symbol } = options;
  if (channel !== undefined) {
    const named = depth.filter((id) => id === channel || typeOfId(id) === channel);
    if (named.length === 1) return named[0];
    return {
      problem: named.length === 0
        ? `--channel ${channel}: ${symbol} has no such stream in the range; ` +
          `it has ${depth.join(", ")}`
        : `--channel ${channel}: ${symbol} has ${named.join(", ")} in the range: choose one ` +
          `with --channel ${named[0]}`,
      exitCode: 2,
    };
  }
  // The diff stream, when there is one; of several (two markets, two speeds), none is chosen.
  const diffs = depth.filter((id) => isDiffStream(typeOfId(id)));
  const choices = diffs.length > 0 ? diffs : depth;
  return choices.length === 1 ? choices[0] : {
    problem: `${symbol} has ${choices.join(", ")} in the range: choose one with --channel`,
    exitCode: 2,
  };
}

interface ChoiceProblem {
  readonly problem: string;
  /** 1: the record holds no book of the symbol in the range; 2: the options must change. */
  readonly exitCode: 1 | 2;
}

/** A depth stream: a diff stream (`depth@100ms`) or a partial book (`depth20`). */
function isDepthStream(streamType: string): boolean {
  return /^depth\d*(@|$)/.test(streamType);
}

/** Where the objects are read from, and how a failed read is retried. */
interface Source {
  readonly reader: ArchiveReader;
  readonly fetchPolicy?: FetchPolicy;
}

/** Rebuilds the book; rejects with `FetchError` when an object cannot be fetched. */
async function rebuild(
  source: Source,
  stream: ChosenStream,
  options: BookOptions,
  { write, printError }: Pick<BookIo, "write" | "printError">,
): Promise<number> {
  const { reader } = source;
  const label = `${options.symbol} ${stream.market}/${stream.streamType}`;
  printError(`book: ${label}, ${stream.keys.length} object(s) at ${reader.location}\n`);
  const rows = rowWriter(options, write);
  const rebuilder = new BookRebuilder({
    rule: sequenceRuleFor(stream.market, stream.streamType),
    levels: options.levels,
    everyUs: options.everyUs,
    from: options.from,
    onRow: rows.row,
    onNote: (note: BookNote) => {
      const when = note.recvTs === undefined ? "" : `${isoMicros(note.recvTs)}  `;
      const tag = note.failing ? note.kind.toUpperCase() : note.kind;
      printError(`book: ${when}${tag}  ${note.detail}\n`);
    },
  });
  const feed: LineFeed = {
    rebuilder,
    diffStream: isDiffStream(stream.streamType),
    to: options.to,
    lastTs: undefined,
    pastTo: false,
    decided: false,
  };
  try {
    for await (const object of readAhead(source, stream.keys)) {
      // The object after `--to` is read only as far as it decides the last samples.
      if (feed.decided && afterRange(feed, object.key)) {
        await object.body.then((body) => body.cancel(), () => {});
        break;
      }
      await feedObject(feed, object);
    }
  } catch (error) {
    rows.flush(); // an object could not be fetched: the rows before it are right, and written
    throw error;
  }
  const summary = rebuilder.finish();
  rows.flush();
  printError(
    `book: ${label}: ${summary.rows} row(s); snapshot checks ${summary.checksPassed} passed, ` +
      `${summary.checksFailed} failed, ${summary.checksSkipped} skipped; down ${summary.downs} ` +
      `time(s), ${summary.unexplainedDowns} unexplained\n`,
  );
  const ok = summary.failing === 0;
  printError(ok ? "OK: the book was rebuilt\n" : `FAIL: ${summary.failing} problem(s)\n`);
  return ok ? 0 : 1;
}

/** Rows as CSV (after its header) or NDJSON, written in pieces of about FLUSH_CHARS. */
function rowWriter(options: BookOptions, write: (text: string) => void) {
  let buffer = options.format === "csv" ? csvHeader(options.levels) : "";
  return {
    row(row: BookRow): void {
      buffer += options.format === "csv" ? csvRow(row, options.levels) : ndjsonRow(row);
      if (buffer.length >= FLUSH_CHARS) {
        write(buffer);
        buffer = "";
      }
    },
    flush(): void {
      if (buffer !== "") write(buffer);
      buffer = "";
    },
  };
}

type ObjectBody = Promise<ReadableStream<Uint8Array<ArrayBuffer>>>;

/**
 * The objects in key order, with up to READ_AHEAD reads started ahead of the
 * one yielded; each read retried by `fetchObject`, its body a rejection with
 * `FetchError` or `GoneError` when it cannot be had.
 */
async function* readAhead(
  { reader, fetchPolicy }: Source,
  keys: readonly string[],
): AsyncGenerator<{ key: string; body: ObjectBody }> {
  const pending: Array<{ key: string; body: ObjectBody }> = [];
  // Ends the retries of the reads started ahead when the reading stops early.
  const stopped = new AbortController();
  let next = 0;
  const fill = () => {
    while (pending.length < READ_AHEAD && next < keys.length) {
      const key = keys[next++];
      const body = fetchObject(reader, key, { policy: fetchPolicy, signal: stopped.signal })
        .then((object) => object.body);
      body.catch(() => {}); // awaited (and reported) in turn
      pending.push({ key, body });
    }
  };
  fill();
  try {
    while (pending.length > 0) {
      const object = pending.shift()!;
      fill();
      yield object;
    }
  } finally {
    // Left early (the rest is past the range, or a read failed): the reads ahead are closed.
    stopped.abort();
    await Promise.allSettled(pending.map(async ({ body }) => (await body).cancel()));
  }
}

/**
 * Where the lines go, and the latest receive time read (where damage is
 * placed). Lines at or after `to` only decide whether the samples due
 * before it are written (`BookRebuilder.afterRange`): they are handed over
 * until one decides, from the range's last objects and the stream's first
 * object after it; damage there is outside the range.
 */
interface LineFeed {
  readonly rebuilder: BookRebuilder;
  /** The stream is a diff stream (else partial books). */
  readonly diffStream: boolean;
  readonly to?: number;
  lastTs: number | undefined;
  /** The first receive time of the object being read (its key's). */
  objectTs?: number;
  /** A line at or after `to` was read in this object (or it begins after the range). */
  pastTo: boolean;
  /** A line at or after `to` decided the samples before it: later ones are not read. */
  decided: boolean;
}

/** Whether an object begins at or after the range's end. */
function afterRange(feed: LineFeed, key: string): boolean {
  const firstRecvTs = parseKey(key)?.firstRecvTs;
  return feed.to !== undefined && firstRecvTs !== undefined && firstRecvTs >= feed.to;
}

/**
 * Hands one object's lines to the rebuilder. Stored bytes that do not decode,
 * or an object gone since it was listed, are damage; an object that could
 * not be fetched (`FetchError`) is not: it is rethrown, and `book` stops.
 */
async function feedObject(feed: LineFeed, object: { key: string; body: ObjectBody }) {
  let lineNo = 0;
  feed.objectTs = parseKey(object.key)?.firstRecvTs;
  const after = afterRange(feed, object.key);
  feed.pastTo = after;
  try {
    for await (const text of objectLines(await object.body)) {
      if (after && feed.decided) break;
      feedLine(feed, decodeLine(text), `${object.key}:${++lineNo}`);
    }
  } catch (error) {
    // Even past the range: the samples it would decide would be left out for want of a read.
    if (error instanceof FetchError) throw error;
    if (after) return; // outside the range: the last samples stay undecided

    // Before any line was read, where the object begins (the first read may be the lookback's).
    feed.rebuilder.damaged(
      feed.lastTs ?? feed.objectTs,
      `${object.key} cannot be read (${
        error instanceof Error ? error.message : String(error)
      }): what it held is missing`,
    );
  }
}

function feedLine(feed: LineFeed, line: DecodedLine | LineFault, where: string): void {
  const { rebuilder } = feed;
  if (line.kind === "malformed" && line.recvTs === undefined) {
    if (feed.pastTo) return; // after a line past the range
    const what = line.fault === "not-json" ? "is not JSON" : "has no recv_ts";
    rebuilder.damaged(feed.lastTs ?? feed.objectTs, `${where} ${what}`);
    return;
  }
  const recvTs = line.recvTs!;
  if (feed.to !== undefined && recvTs >= feed.to) {
    feed.pastTo = true;
    if (!feed.decided) feed.decided = rebuilder.afterRange(feed.to, lineAfterRange(feed, line));
    return;
  }
  feed.lastTs = recvTs;
  if (line.kind === "event") {
    rebuilder.event(recvTs, line.event, line.fields);
    return;
  }
  const data = line.kind === "malformed" ? undefined : line.data;
  const snapshot = line.kind === "snapshot";
  if (snapshot || !feed.diffStream) {
    const book = depthBookOf(data);
    if (!book) rebuilder.damaged(recvTs, `${where} is not a depth book`);
    else if (snapshot) rebuilder.snapshot(recvTs, book);
    else rebuilder.partial(recvTs, book);
    return;
  }
  const diff = depthDiffOf(data);
  if (diff) rebuilder.diff(recvTs, diff);
  else rebuilder.damaged(recvTs, `${where} is not a depth diff`);
}

/** A line past the range, as `afterRange` reads it. */
function lineAfterRange(feed: LineFeed, line: DecodedLine | LineFault): LineAfterRange {
  if (line.kind === "event") return { kind: "event", name: line.event };
  if (line.kind === "snapshot") return { kind: "snapshot" };
  const data = line.kind === "malformed" ? undefined : line.data;
  if (feed.diffStream) {
    const diff = depthDiffOf(data);
    return diff ? { kind: "diff", diff } : { kind: "damaged" };
  }
  const book = depthBookOf(data);
  return book ? { kind: "partial", book } : { kind: "damaged" };
}

/** The lines of one stored (gzip) object, decompressed as a stream. */
async function* objectLines(body: ReadableStream<Uint8Array<ArrayBuffer>>): AsyncGenerator<string> {
  const text = body.pipeThrough(new DecompressionStream("gzip")).pipeThrough(
    new TextDecoderStream(),
  );
  let rest = "";
  for await (const chunk of text) {
    const buffer = rest === "" ? chunk : rest + chunk;
    let start = 0;
    let end: number;
    while ((end = buffer.indexOf("\n", start)) !== -1) {
      if (end > start) yield buffer.slice(start, end);
      start = end + 1;
    }
    rest = buffer.slice(start);
  }
  if (rest !== "") yield rest;
}

export function csvHeader(levels: number): string {
  const columns = ["recv_ts", "update_id"];
  for (const side of ["bid", "ask"]) {
    for (let i = 1; i <= levels; i++) columns.push(`${side}_px_${i}`, `${side}_qty_${i}`);
  }
  columns.push("known_levels");
  return columns.join(",") + "\n";
}

export function csvRow(row: BookRow, levels: number): string {
  const cells: string[] = [String(row.recvTs), String(row.updateId)];
  for (const side of [row.bids, row.asks]) {
    for (let i = 0; i < levels; i++) {
      const level = side[i];
      cells.push(level ? level[0] : "", level ? level[1] : "");
    }
  }
  cells.push(String(row.knownLevels));
  return cells.join(",") + "\n";
}

export function ndjsonRow(row: BookRow): string {
  return JSON.stringify({
    recv_ts: row.recvTs,
    update_id: row.updateId,
    bids: row.bids,
    asks: row.asks,
    known_levels: row.knownLevels,
  }) + "\n";
}

/** Writes all of `text` (a sync write may take only part of it). */
export function writeAllSync(target: { writeSync(p: Uint8Array): number }, text: string): void {
  let bytes = new TextEncoder().encode(text);
  while (bytes.length > 0) bytes = bytes.subarray(target.writeSync(bytes));
}

async function fileOutput(path: string) {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  return {
    write: (text: string) => writeAllSync(file, text),
    close: () => Promise.resolve(file.close()),
  };
}
