/**
 * `l2-uploader verify`: reads the archive (DATA_DIR/archive or the S3 bucket)
 * for a time range and reports, per stream, what is whole and what is not.
 * Exit 0 clean, 1 a problem found, 2 a usage error, an archive that
 * cannot be listed (bucket, credentials) or an object that cannot be fetched
 * (S3 failing or throttling after retries, a file it may not read): an audit
 * that could not read an object has not judged it, so it reports nothing
 * rather than damage and the holes its absence would leave (verify/fetch.ts).
 *
 * Objects are chosen by their partitions (market, stream type, symbol, date)
 * and the first receive time in their name, then read ONE AT A TIME, in key
 * order per stream, gunzipped as a stream and judged line by line by the
 * Auditor (verify/audit.ts), so memory holds one stream-day of keys and a
 * few chunks, never an object's lines. A few reads are started ahead to hide
 * S3 latency; each holds only what its transport buffers. An object's stored
 * metadata comes with its read and is checked in the same pass. With `--from`,
 * a diff stream is read from `lookbackUs` earlier, as `book` reads it, for the
 * snapshot its book stands on at the range's start (nothing there is judged).
 *
 * Only `<prefix>/exchange=binance/` is walked: anything beside it under the
 * prefix (e.g. `check`'s probe objects) is not part of the archive.
 */

import { join } from "node:path";
import { parseArgs } from "node:util";
import {
  DATE_PARTITION,
  DATE_VALUE,
  HOUR_PARTITION,
  HOUR_VALUE,
  type KeyParts,
  keyRoot,
  MARKET_PARTITION,
  parseKey,
  PARTITION_NAMES,
  partitionValue,
  SYMBOL_PARTITION,
} from "../archive/keys.ts";
import type { Config } from "../config_types.ts";
import { metaFromRecord } from "../archive/meta.ts";
import { type ArchiveReader, localArchiveReader, type StoredObject } from "../verify/archive.ts";
import { Auditor, isoMicros, type Problem, type Report } from "../verify/audit.ts";
import { FetchError, fetchObject, type FetchPolicy, GoneError } from "../verify/fetch.ts";
import { isRetryableS3Error } from "../store/s3_errors.ts";
import { renderAuditHtml } from "../verify/html.ts";

/** The command's options, in node:util parseArgs form (main.ts spreads them into its own). */
export const VERIFY_ARG_OPTIONS = {
  from: { type: "string" },
  to: { type: "string" },
  symbol: { type: "string", multiple: true },
  json: { type: "boolean" },
  "max-hole": { type: "string" },
  html: { type: "string" },
} as const;

export interface VerifyFlags {
  readonly from?: string;
  readonly to?: string;
  readonly symbol?: readonly string[];
  readonly json?: boolean;
  readonly "max-hole"?: string;
  /** Also write the report as an HTML page with a coverage timeline to this file. */
  readonly html?: string;
}

export interface VerifyOptions {
  /** µs since the epoch; `to` exclusive. */
  readonly from?: number;
  readonly to?: number;
  readonly symbols: readonly string[];
  readonly json: boolean;
  readonly maxHoleMs?: number;
}

export interface VerifyIo {
  readonly print: (text: string) => void;
  /** Usage errors; defaults to `print`. */
  readonly printError?: (text: string) => void;
  /** The archive to read instead of the configured one (tests). */
  readonly reader?: ArchiveReader;
  /** Reads started ahead of the one being audited (default 8). */
  readonly readAhead?: number;
  /** The wall clock, ms (default `Date.now`). */
  readonly now?: () => number;
  /** How a failed object read is retried (default `DEFAULT_FETCH_POLICY`). */
  readonly fetchPolicy?: FetchPolicy;
}

/** Checks the flags; a problem is a usage error (exit 2). */
export function verifyOptionsFromCli(
  flags: VerifyFlags,
): { readonly options: VerifyOptions } | { readonly problem: string } {
  const from = flags.from === undefined ? undefined : parseTime(flags.from);
  if (from === null) return { problem: `--from: not an ISO 8601 date or time: "${flags.from}"` };
  const to = flags.to === undefined ? undefined : parseTime(flags.to);
  if (to === null) return { problem: `--to: not an ISO 8601 date or time: "${flags.to}"` };
  if (from !== undefined && to !== undefined && from >= to) {
    return { problem: `--from ${flags.from} is not before --to ${flags.to}` };
  }
  const symbols: string[] = [];
  for (const value of flags.symbol ?? []) {
    for (const part of value.split(",")) {
      // Any script: spot lists symbols with non-ASCII letters (kept in NFC, as in keys).
      const symbol = part.trim().toUpperCase().normalize("NFC");
      if (!/^[\p{L}\p{N}_]+$/u.test(symbol)) {
        return { problem: `--symbol: not a symbol: "${part}"` };
      }
      if (!symbols.includes(symbol)) symbols.push(symbol);
    }
  }
  let maxHoleMs: number | undefined;
  if (flags["max-hole"] !== undefined) {
    maxHoleMs = parseDurationMs(flags["max-hole"]);
    if (maxHoleMs === undefined) {
      return {
        problem: `--max-hole: not a duration like 500ms, 2s, 1m or 1h: "${flags["max-hole"]}"`,
      };
    }
  }
  return { options: { from, to, symbols, json: flags.json ?? false, maxHoleMs } };
}

/** `verify` with its own argument list (as after the command word). */
export async function verifyFromArgs(
  config: Config,
  args: readonly string[],
  io: VerifyIo,
): Promise<number> {
  let flags: VerifyFlags;
  try {
    flags = parseArgs({ args: [...args], options: VERIFY_ARG_OPTIONS, strict: true }).values;
  } catch (error) {
    (io.printError ?? io.print)(`l2-uploader verify: ${(error as Error).message}\n`);
    return 2;
  }
  return await verify(config, flags, io);
}

export async function verify(config: Config, flags: VerifyFlags, io: VerifyIo): Promise<number> {
  const parsed = verifyOptionsFromCli(flags);
  if ("problem" in parsed) {
    (io.printError ?? io.print)(`l2-uploader verify: ${parsed.problem}\n`);
    return 2;
  }
  const options = parsed.options;
  const reader = io.reader ?? await archiveReaderFor(config);
  try {
    let report: Report;
    try {
      report = await auditArchive(reader, {
        prefix: config.prefix,
        ...options,
        settledUntil: settledUntil(config, io.now?.() ?? Date.now()),
        readAhead: io.readAhead,
        lookbackUs: lookbackUs(config),
        fetchPolicy: io.fetchPolicy,
      });
    } catch (error) {
      (io.printError ?? io.print)(`l2-uploader verify: ${readFailure(error, reader.location)}\n`);
      return 2;
    }
    if (flags.html !== undefined) {
      try {
        await Deno.writeTextFile(flags.html, renderAuditHtml(report, reader.location));
      } catch (error) {
        (io.printError ?? io.print)(
          `l2-uploader verify: cannot write --html ${flags.html}: ${(error as Error).message}\n`,
        );
        return 2;
      }
    }
    const exitCode = report.ok ? 0 : 1;
    io.print(
      options.json
        ? JSON.stringify({ exitCode, location: reader.location, ...report }, null, 2) + "\n"
        : formatReport(report, reader.location),
    );
    return exitCode;
  } finally {
    if (!io.reader) reader.close();
  }
}

/**
 * Why the archive could not be read (exit 2): a listing that failed (bucket,
 * credentials, permissions), or an object that could not be fetched. Either
 * way no verdict is given (`outcome` says what became of the output): a
 * partial report would count the unread objects' lines as holes and breaks,
 * findings about an archive that may be whole.
 */
export function readFailure(
  error: unknown,
  location: string,
  outcome = "nothing was judged",
): string {
  if (error instanceof FetchError) {
    const tries = error.attempts > 1 ? `tried ${error.attempts} times; ` : "";
    // Trying again helps a store that failed for a while, not one that refuses.
    const advice = isRetryableS3Error(error.cause) ? "try again" : "fix the access, then try again";
    return `cannot read ${error.key} from ${location}: ${error.message} ` +
      `(${tries}${outcome}; ${advice})`;
  }
  return `cannot list the archive at ${location}: ${
    error instanceof Error ? error.message : String(error)
  }`;
}

/** The configured archive: S3 when a bucket is set, else DATA_DIR/archive. */
export async function archiveReaderFor(config: Config): Promise<ArchiveReader> {
  if (!config.s3) return localArchiveReader(join(config.dataDir, "archive"));
  // Loaded only for an S3 archive: the AWS SDK costs ~18 MB of memory.
  const { s3ArchiveReader } = await import("../verify/s3_reader.ts");
  return s3ArchiveReader(config.s3);
}

/**
 * Receive times before this should be in the archive by `nowMs`: a line
 * waits for its batch to seal (BATCH_SECONDS) and then for its put; twice
 * the batch and a minute more leave room for a slow put or two.
 */
export function settledUntil(config: Pick<Config, "batchSeconds">, nowMs: number): number {
  return (nowMs - (2 * config.batchSeconds + 60) * 1000) * 1000;
}

export interface AuditArchiveOptions extends Omit<VerifyOptions, "json"> {
  /** See `AuditOptions.settledUntil`. */
  readonly settledUntil?: number;
  /** Key prefix (`S3_PREFIX`); `""` for none. */
  readonly prefix: string;
  readonly readAhead?: number;
  /**
   * Also yield each stream's first object after `to` (verify: how a silence
   * at the range's end ends; `book`: whether its samples due before `to`
   * are known).
   */
  readonly readAfterRange?: boolean;
  /**
   * With `from`: diff streams are read from this long before it (`lookbackUs`),
   * so that the book at the range's start stands on the last snapshot before it.
   */
  readonly lookbackUs?: number;
  /** How a failed object read is retried (default `DEFAULT_FETCH_POLICY`). */
  readonly fetchPolicy?: FetchPolicy;
}

/**
 * How far before `--from` a diff stream is read, for `book` and `verify`
 * alike: two snapshot intervals (one snapshot may have failed) and a batch,
 * by the configured SNAPSHOT_INTERVAL_SECONDS and BATCH_SECONDS.
 */
export function lookbackUs(
  config: Pick<Config, "snapshotIntervalSeconds" | "batchSeconds">,
): number {
  return (2 * config.snapshotIntervalSeconds + config.batchSeconds) * 1_000_000;
}

/** A diff stream type (`depth@100ms`), whose book needs the snapshot before the range. */
export function isDiffStream(streamType: string): boolean {
  return /^depth(@|$)/.test(streamType);
}

/**
 * Selects, reads and audits the objects; the I/O half of `verify`. Rejects
 * when a listing fails, or with `FetchError` when an object cannot be fetched.
 */
export async function auditArchive(
  reader: ArchiveReader,
  options: AuditArchiveOptions,
): Promise<Report> {
  const auditor = new Auditor({
    from: options.from,
    to: options.to,
    settledUntil: options.settledUntil,
    symbols: options.symbols,
    maxHoleUs: options.maxHoleMs === undefined ? undefined : options.maxHoleMs * 1000,
  });
  const keys = selectKeys(reader, { ...options, readAfterRange: true }, auditor);
  const readAhead = Math.max(0, options.readAhead ?? 8);
  const pending: Array<{ key: string; read: Promise<StoredObject> }> = [];
  // Ends the retries of the reads started ahead when the audit stops early.
  const stopped = new AbortController();
  const start = (key: string) => {
    const read = fetchObject(reader, key, {
      policy: options.fetchPolicy,
      signal: stopped.signal,
    });
    read.catch(() => {}); // awaited (and reported) in turn
    pending.push({ key, read });
  };
  try {
    for await (const key of keys) {
      start(key);
      if (pending.length > readAhead) await auditObject(pending.shift()!, auditor);
    }
    while (pending.length > 0) await auditObject(pending.shift()!, auditor);
  } finally {
    // Only after a listing or fetch error: release the reads started ahead.
    stopped.abort();
    for (const { read } of pending.splice(0)) read.then((o) => o.body.cancel(), () => {});
  }
  return auditor.report();
}

/**
 * Gunzips one object as a stream and hands its lines to the auditor, then
 * its stored metadata (which came with it: no second request, no second pass).
 * Bytes that do not decode are the object's damage; a fetch that failed
 * (`FetchError`, before or while the body streamed) is rethrown: it says
 * nothing about the object, and the audit cannot go on without it.
 */
async function auditObject(
  object: { key: string; read: Promise<StoredObject> },
  auditor: Auditor,
): Promise<void> {
  if (!auditor.beginObject(object.key)) {
    await object.read.then((stored) => stored.body.cancel(), () => {});
    return;
  }
  const seen = { bytes: 0, head: [] as number[] };
  try {
    const stored = await object.read;
    const text = stored.body
      .pipeThrough(tapBytes(seen))
      .pipeThrough(new DecompressionStream("gzip"))
      .pipeThrough(new TextDecoderStream());
    let rest = "";
    let lineNo = 0;
    for await (const chunk of text) {
      const buffer = rest === "" ? chunk : rest + chunk;
      let start = 0;
      let end: number;
      while ((end = buffer.indexOf("\n", start)) !== -1) {
        auditor.line(buffer.slice(start, end), ++lineNo);
        start = end + 1;
      }
      rest = buffer.slice(start);
    }
    if (rest !== "") auditor.line(rest, ++lineNo);
    auditor.endObject(
      stored.metaError === undefined
        ? metaFromRecord(stored.meta)
        : { kind: "unreadable", reason: stored.metaError },
    );
  } catch (error) {
    if (error instanceof FetchError) throw error;
    // A line cut by the error is dropped: only whole lines were judged.
    auditor.unreadable(
      object.key,
      error instanceof GoneError ? error : explainGzipError(error, seen),
    );
  }
}

/** Counts the stored bytes passing through, and keeps the first two. */
function tapBytes(
  seen: { bytes: number; head: number[] },
): TransformStream<Uint8Array<ArrayBuffer>, Uint8Array<ArrayBuffer>> {
  return new TransformStream({
    transform(chunk, controller) {
      for (let i = 0; seen.head.length < 2 && i < chunk.length; i++) seen.head.push(chunk[i]);
      seen.bytes += chunk.length;
      controller.enqueue(chunk);
    },
  });
}

/**
 * The decompressor's words, with what they mean for an object: it says
 * "does not have a matching checksum" for an empty file, a file that is not
 * gzip and one cut short alike, and "failed to write whole buffer" for bytes
 * after the end of the gzip member.
 */
function explainGzipError(error: unknown, seen: { bytes: number; head: number[] }): unknown {
  if (!(error instanceof Error)) return error;
  const { message } = error;
  let meaning: string | undefined;
  if (seen.bytes === 0) meaning = "the object is empty (0 bytes)";
  else if (seen.head[0] !== 0x1f || (seen.head.length > 1 && seen.head[1] !== 0x8b)) {
    meaning = "the object is not gzip";
  } else if (/failed to write whole buffer/.test(message)) {
    meaning = "bytes follow the end of its gzip member (an object is one member)";
  } else if (/matching checksum/.test(message)) {
    meaning = "cut short, or its gzip checksum does not match its text";
  } else if (/corrupt deflate/.test(message)) meaning = "its compressed bytes are damaged";
  return meaning ? new Error(`${meaning} (${message})`) : error;
}

interface Level {
  readonly value: string;
  readonly prefix: string;
}

/** Where key selection reports what it found besides the keys to judge (the Auditor, say). */
export interface KeySink {
  /** A key or directory outside the layout. */
  badKey(key: string): void;
  /** A key about to be yielded that is read only for what lies before the range (`lookbackUs`). */
  lookback?(key: string): void;
}

/**
 * The keys to read, in audit order: stream partition by partition (sorted),
 * and within one, by first receive time, instance and batch number. Keys and
 * directories that do not fit the layout go to the auditor as bad keys.
 */
export async function* selectKeys(
  reader: ArchiveReader,
  options: AuditArchiveOptions,
  auditor: KeySink,
): AsyncGenerator<string> {
  const root = keyRoot(options.prefix);
  const symbols = options.symbols.length > 0 ? new Set(options.symbols) : undefined;
  for (const market of await level(reader, root, MARKET_PARTITION, auditor)) {
    // The stream-type partition has a current and a legacy name: one stream type
    // may sit under both, so their symbols' objects are merged in key order.
    const channels = await level(reader, market.prefix, PARTITION_NAMES, auditor);
    for (const channel of groupByValue(channels)) {
      const bySymbol = new Map<string, string[]>();
      for (const prefix of channel.prefixes) {
        for (const symbol of await level(reader, prefix, SYMBOL_PARTITION, auditor)) {
          if (symbols && !symbols.has(symbol.value)) continue;
          bySymbol.set(symbol.value, [...bySymbol.get(symbol.value) ?? [], symbol.prefix]);
        }
      }
      for (const symbol of [...bySymbol.keys()].sort()) {
        const partition = { prefixes: bySymbol.get(symbol)!, streamType: channel.value };
        yield* partitionKeys(reader, partition, options, auditor);
      }
    }
  }
}

function groupByValue(levels: readonly Level[]): Array<{ value: string; prefixes: string[] }> {
  const groups: Array<{ value: string; prefixes: string[] }> = [];
  for (const entry of levels) {
    const last = groups.at(-1);
    if (last?.value === entry.value) last.prefixes.push(entry.prefix);
    else groups.push({ value: entry.value, prefixes: [entry.prefix] });
  }
  return groups;
}

/** One stream's keys in audit order (see `selectKeys`), its prefixes under one or both layouts. */
async function* partitionKeys(
  reader: ArchiveReader,
  partition: { readonly prefixes: readonly string[]; readonly streamType: string },
  options: AuditArchiveOptions,
  auditor: KeySink,
): AsyncGenerator<string> {
  const { from, to } = options;
  const datePrefixes = new Map<string, string[]>();
  for (const symbolPrefix of partition.prefixes) {
    for (const date of await level(reader, symbolPrefix, DATE_PARTITION, auditor, DATE_VALUE)) {
      datePrefixes.set(date.value, [...datePrefixes.get(date.value) ?? [], date.prefix]);
    }
  }
  // A diff stream is read from `readFrom`, for the snapshot before the range.
  const readFrom = from === undefined || !isDiffStream(partition.streamType)
    ? from
    : from - (options.lookbackUs ?? 0);
  const { dates, dayAfter } = datesToRead([...datePrefixes.keys()], { ...options, from: readFrom });
  // The latest object starting before `from` (its lines may reach into the range), not yet yielded.
  let held: string | undefined;
  let after: string | undefined;
  for (const date of dates) {
    const objects: Array<{ key: string; parts: KeyParts }> = [];
    for (const prefix of datePrefixes.get(date)!) {
      for await (const key of reader.list(prefix)) {
        const parts = parseKey(key);
        if (parts) objects.push({ key, parts });
        else auditor.badKey(key);
      }
    }
    objects.sort(byKeyOrder);
    for (const { key, parts } of objects) {
      if (to !== undefined && parts.firstRecvTs >= to) {
        after ??= key;
        continue;
      }
      if (from !== undefined && parts.firstRecvTs < from) {
        // Another object before the range: the held one is not the last before it. It is
        // read, for the lookback only, when it may reach past `readFrom` (this one begins after).
        if (held !== undefined && parts.firstRecvTs >= readFrom!) {
          auditor.lookback?.(held);
          yield held;
        }
        held = key;
        continue;
      }
      if (held !== undefined) yield held;
      held = undefined;
      yield key;
    }
  }
  if (held !== undefined) yield held;
  if (!options.readAfterRange || to === undefined) return;
  // The first object after the range: its first lines tell how a silence at the range's end
  // ends (a `suspended` line, a reconnect, a loss counted). Read, never judged.
  after ??= dayAfter === undefined
    ? undefined
    : await firstKeyFrom(reader, datePrefixes.get(dayAfter)!, to);
  if (after !== undefined) yield after;
}

/**
 * The `date=` values to list, in order: those of the range and the day
 * before it (it may hold the object that runs into the range); and, when
 * the object after the range is wanted, the first day after it.
 */
function datesToRead(
  all: readonly string[],
  options: Pick<AuditArchiveOptions, "from" | "to" | "readAfterRange">,
): { dates: string[]; dayAfter?: string } {
  const { from, to } = options;
  let dates = [...all].sort();
  let dayAfter: string | undefined;
  if (to !== undefined) {
    const last = isoMicros(to - 1).slice(0, 10);
    if (options.readAfterRange) dayAfter = dates.find((d) => d > last);
    dates = dates.filter((d) => d <= last);
  }
  if (from !== undefined) {
    const first = isoMicros(from).slice(0, 10);
    const before = dates.filter((d) => d < first);
    dates = [...before.slice(-1), ...dates.filter((d) => d >= first)];
  }
  return { dates, dayAfter };
}

/**
 * The first key at or after `to` under one date's prefixes, hour by hour;
 * anything outside the layout is passed over (that day's own audit reports it).
 */
async function firstKeyFrom(
  reader: ArchiveReader,
  datePrefixes: readonly string[],
  to: number,
): Promise<string | undefined> {
  const ignore: KeySink = { badKey: () => {} };
  const hours = new Map<string, string[]>();
  for (const prefix of datePrefixes) {
    for (const hour of await level(reader, prefix, HOUR_PARTITION, ignore, HOUR_VALUE)) {
      hours.set(hour.value, [...hours.get(hour.value) ?? [], hour.prefix]);
    }
  }
  for (const hour of [...hours.keys()].sort()) {
    const found: Array<{ key: string; parts: KeyParts }> = [];
    for (const prefix of hours.get(hour)!) {
      for await (const key of reader.list(prefix)) {
        const parts = parseKey(key);
        if (parts && parts.firstRecvTs >= to) found.push({ key, parts });
      }
    }
    if (found.length > 0) return found.sort(byKeyOrder)[0].key;
  }
  return undefined;
}

function byKeyOrder(a: { parts: KeyParts }, b: { parts: KeyParts }): number {
  return a.parts.firstRecvTs - b.parts.firstRecvTs ||
    (a.parts.instanceId < b.parts.instanceId
      ? -1
      : a.parts.instanceId > b.parts.instanceId
      ? 1
      : 0) ||
    a.parts.seq - b.parts.seq;
}

/**
 * The `<name>=<value>/` sub-prefixes of `prefix` (any of `names`), sorted by
 * value, then in the order of `names`; anything else is reported.
 */
async function level(
  reader: ArchiveReader,
  prefix: string,
  names: string | readonly string[],
  auditor: KeySink,
  valuePattern = /^[^/]+$/,
): Promise<Level[]> {
  const accepted = typeof names === "string" ? [names] : names;
  const found: Array<Level & { rank: number }> = [];
  for await (const entry of reader.children(prefix)) {
    if ("key" in entry) {
      auditor.badKey(entry.key);
      continue;
    }
    const segment = entry.prefix.slice(prefix.length, -1);
    const { value = "", rank = -1 } = partitionValue(segment, accepted) ?? {};
    if (valuePattern.test(value)) found.push({ value, prefix: entry.prefix, rank });
    else for await (const key of reader.list(entry.prefix)) auditor.badKey(key);
  }
  return found.sort((a, b) => (a.value < b.value ? -1 : a.value > b.value ? 1 : a.rank - b.rank));
}

/** ISO 8601 date or date-time → µs since the epoch; UTC unless it names an offset. */
export function parseTime(text: string): number | null {
  const match =
    /^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?)?(Z|[+-]\d{2}:\d{2})?$/i
      .exec(text.trim());
  if (!match) return null;
  const [, date, hm = "00:00", sec = "00", fraction = "", zone = "Z"] = match;
  const ms = Date.parse(`${date}T${hm}:${sec}${zone.toUpperCase()}`);
  if (Number.isNaN(ms) || !validDate(date)) return null;
  return ms * 1000 + Number(fraction.padEnd(6, "0"));
}

function validDate(date: string): boolean {
  const [y, m, d] = date.split("-").map(Number);
  const probe = new Date(Date.UTC(y, m - 1, d));
  return probe.getUTCFullYear() === y && probe.getUTCMonth() === m - 1 && probe.getUTCDate() === d;
}

/** `500ms`, `2s`, `1.5m`, `1h` → ms; undefined when not a positive duration. */
export function parseDurationMs(text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text.trim());
  if (!match) return undefined;
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2] as "ms" | "s" | "m" | "h"];
  const ms = Number(match[1]) * unit;
  return ms > 0 ? ms : undefined;
}

const MAX_PRINTED_PROBLEMS = 100;

/** The report for people: a table per stream, then the problems, unexplained first. */
export function formatReport(report: Report, location: string): string {
  const range = report.range.from
    ? `${report.range.from} .. ${report.range.to}`
    : "(no lines in range)";
  const lines = [
    `archive  ${location}`,
    `range    ${range}`,
    `read     ${report.objects} object(s), ${report.lines} line(s)`,
    "",
    ...streamTable(report.streams),
    ...problemList(report),
    "",
  ];
  const failing = report.problems.filter((p) => !p.explained).length;
  const unlisted = report.problemsOmitted > 0 ? ` (and ${report.problemsOmitted} not listed)` : "";
  lines.push(
    report.ok
      ? "OK: the archive is whole in this range"
      : `FAIL: ${failing} unexplained problem(s)${unlisted}`,
  );
  return lines.join("\n") + "\n";
}

const STREAM_COLUMNS = [
  "stream",
  "objects",
  "messages",
  "snapshots",
  "dups",
  "breaks",
  "holes",
  "unreadable",
  "malformed",
  "meta",
  "coverage",
];

/**
 * One row per stream under a header, then where the book cannot be rebuilt
 * and which objects have no metadata (neither fails the audit).
 */
function streamTable(streams: Report["streams"]): string[] {
  const rows = streams.map((s) => [
    `${s.market}/${s.stream}`,
    String(s.objects),
    String(s.messages),
    String(s.snapshots),
    String(s.duplicates),
    `${s.unexplainedBreaks}/${s.breaks}`,
    `${s.unexplainedHoles}/${s.holes}`,
    String(s.unreadableObjects),
    String(s.malformedLines),
    String(s.metaMismatches),
    `${s.coveragePercent.toFixed(2)}%`,
  ]);
  const widths = STREAM_COLUMNS.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const format = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ")
      .trimEnd();
  const lines = [format(STREAM_COLUMNS), ...rows.map(format)];
  if (rows.length > 0) lines.push("(breaks and holes: unexplained/all)");
  for (const s of streams) {
    for (const r of s.notRebuildable ?? []) {
      lines.push(`${s.market}/${s.stream}: book not rebuildable from ${r.from} to ${r.to}`);
    }
    if (s.objectsWithoutMeta > 0) {
      lines.push(
        `${s.market}/${s.stream}: ${s.objectsWithoutMeta} object(s) without metadata ` +
          `(first: ${s.firstObjectWithoutMeta})`,
      );
    }
  }
  return lines;
}

/** The problems, unexplained first, at most MAX_PRINTED_PROBLEMS of them. */
function problemList(report: Report): string[] {
  const ordered = [
    ...report.problems.filter((p) => !p.explained),
    ...report.problems.filter((p) => p.explained),
  ];
  if (ordered.length === 0) return [];
  const lines = ["", "problems:"];
  for (const problem of ordered.slice(0, MAX_PRINTED_PROBLEMS)) {
    lines.push(`  ${formatProblem(problem)}`);
  }
  const more = Math.max(0, ordered.length - MAX_PRINTED_PROBLEMS) + report.problemsOmitted;
  if (more > 0) lines.push(`  … ${more} more (see --json)`);
  return lines;
}

function formatProblem(p: Problem): string {
  const tag = p.explained ? `${p.kind} (explained)` : p.kind.toUpperCase();
  const where = p.key === undefined ? "" : ` ${p.key}${p.line === undefined ? "" : `:${p.line}`}`;
  const stream = p.stream === undefined ? "" : `${p.market}/${p.stream}`;
  return [tag, stream, p.time ?? ""].filter((s) => s !== "").join("  ") +
    `${where}  ${p.detail}`;
}
