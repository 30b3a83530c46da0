/**
 * The core of `verify`: fed the archive's objects line by line, in key order
 * per stream, it keeps only running state per stream (last update id, last
 * line time, counters) and produces a report of what is whole and what is
 * not. No I/O, no clock: the caller reads and decompresses, this judges.
 *
 * What it finds, per stream (a line's `stream` field; snapshot lines,
 * archive/meta.ts, count as snapshots of the object's own stream and stay out
 * of the update-id chain). Lines are read with archive/decode.ts:
 * - duplicates and breaks of the update-id chain, by the recorder's own
 *   continuity rules (binance/sequence.ts);
 * - time holes: no line for longer than `maxHoleUs`;
 * - malformed lines, unreadable objects, keys outside the layout;
 * - objects whose lines are not theirs: another stream's lines, a first
 *   line not at the key's time, a line received before the one above it.
 * - per diff stream, the time ranges in which no stored snapshot overlaps the
 *   chain, so the book cannot be rebuilt there (verify/rebuild.ts); with
 *   `from`, the chain and snapshots of objects read back before it (`lookback`,
 *   as `book` reads them) carry into the range;
 * - objects whose stored metadata does not match their lines (archive/meta.ts),
 *   and objects stored without any (counted, not a problem);
 * A break or hole is "explained" when the recorder wrote down why: an event
 * line (gap, disconnected, stale, recovered, rotated, shutdown, connected,
 * suspended, clock_step) between the two messages, or bordering the hole.
 */

import {
  type DecodedData,
  type DecodedEvent,
  decodeLine,
  droppedFactsOf,
  EXPLAINING_EVENTS,
  type LineIds,
} from "../archive/decode.ts";
import type { DroppedFacts } from "../archive/encode.ts";
import { KEY_LAYOUT, type KeyParts, parseKey, streamOfKey } from "../archive/keys.ts";
import { continuity, type SequenceRule, sequenceRuleFor } from "../binance/sequence.ts";
import { isEventDriven, updateSpeedMs } from "../binance/streams.ts";
import type { Market } from "../config_types.ts";
import { metaDifferences, MetaTally, type StoredMeta } from "../archive/meta.ts";
import { RebuildTracker } from "./rebuild.ts";

export type ProblemKind =
  | "break"
  | "hole"
  | "duplicate"
  | "unreadable"
  | "malformed"
  | "bad-key"
  | "no-data"
  /** Two instances recorded the same stream at the same time (their SHARD settings overlap). */
  | "overlap"
  /** Lines of another stream in an object, or an object whose key's time is not its first line's. */
  | "misplaced"
  /** A line received before the line above it in the same object (`recv_ts` never decreases). */
  | "order"
  /** An object's stored metadata (S3 user metadata, local sidecar) does not match its lines. */
  | "meta";

export interface Problem {
  readonly kind: ProblemKind;
  /** `spot` or `usdm`: the same stream name exists in both markets. */
  readonly market?: string;
  readonly stream?: string;
  /** The object the problem was found in (for a break or hole: where it ends). */
  readonly key?: string;
  /** 1-based line number within the decompressed object. */
  readonly line?: number;
  /** When it happened, ISO 8601 UTC with µs; `recvTs` is the same in µs since the epoch. */
  readonly time?: string;
  readonly recvTs?: number;
  /** A hole's end (its first line after the silence), µs; `recvTs` is its start. */
  readonly untilRecvTs?: number;
  /** The event line that explains a hole (`disconnected`, `gap`, …). */
  readonly cause?: string;
  readonly detail: string;
  /** The archive itself says why (an event line); explained problems do not fail the audit. */
  readonly explained: boolean;
}

export interface StreamReport {
  readonly stream: string;
  readonly market: string;
  readonly streamType: string;
  readonly symbol: string;
  /** Objects with at least one line of this stream in the range (unreadable ones included). */
  readonly objects: number;
  /** Messages (archive/meta.ts: data lines from the exchange's stream), duplicates included. */
  readonly messages: number;
  /** REST snapshots (snapshot lines, archive/meta.ts) stored with this stream. */
  readonly snapshots: number;
  /** Event lines, by event name. */
  readonly events: Readonly<Record<string, number>>;
  /** INSTANCE_IDs whose objects hold this stream's lines in the range (SHARD: exactly one at a time). */
  readonly instances: readonly string[];
  readonly duplicates: number;
  readonly breaks: number;
  readonly unexplainedBreaks: number;
  readonly holes: number;
  readonly unexplainedHoles: number;
  readonly unreadableObjects: number;
  readonly malformedLines: number;
  /** Objects whose stored metadata does not match their lines, or cannot be read (a problem). */
  readonly metaMismatches: number;
  /** Objects stored without metadata (not a problem: their lines are the record), and the first. */
  readonly objectsWithoutMeta: number;
  readonly firstObjectWithoutMeta?: string;
  readonly firstRecvTs?: number;
  readonly lastRecvTs?: number;
  readonly firstUpdateId?: number;
  readonly lastUpdateId?: number;
  /** The hole threshold applied to this stream. */
  readonly maxHoleMs: number;
  readonly holeMs: number;
  readonly unexplainedHoleMs: number;
  /**
   * Share of the range the stream's record covers: from its first line to its
   * last (in the range), less every hole between them, explained or not.
   */
  readonly coveragePercent: number;
  /**
   * Diff streams: when no stored snapshot overlaps the update-id chain, so
   * the book cannot be rebuilt (always a moment at each chain's start).
   */
  readonly notRebuildable?: ReadonlyArray<
    { from: string; to: string; fromRecvTs: number; toRecvTs: number }
  >;
}

export interface Report {
  /** The range judged, µs; when not given, the span of all lines read. */
  readonly range: {
    readonly from?: string;
    readonly to?: string;
    readonly fromRecvTs?: number;
    readonly toRecvTs?: number;
  };
  readonly objects: number;
  readonly lines: number;
  readonly streams: readonly StreamReport[];
  readonly problems: readonly Problem[];
  /** Problems beyond `maxProblems`, counted but not listed (the stream counts stay exact). */
  readonly problemsOmitted: number;
  /** No unexplained break or hole, no duplicate, unreadable object, malformed line or bad key. */
  readonly ok: boolean;
}

export interface AuditOptions {
  /** Range of receive times, µs: lines before `from` or at/after `to` are skipped. */
  readonly from?: number;
  readonly to?: number;
  /** Hole threshold for every stream, µs; default `defaultMaxHoleMs` of the stream type. */
  readonly maxHoleUs?: number;
  /**
   * Receive times before this should all be stored (the caller: now, less
   * what batching and uploading may still hold back); the silence after a
   * stream's last line counts up to `to` or this, whichever is earlier.
   */
  readonly settledUntil?: number;
  /** Symbols asked for: one with no line in the range is a problem. */
  readonly symbols?: readonly string[];
  /** Problems kept in the list (default 10,000): bounds memory on a badly broken archive. */
  readonly maxProblems?: number;
}

/** Unexplained breaks and holes a later `dropped` line may still explain, per stream. */
const MAX_AWAITING_DROP = 1000;

/**
 * 10 × the stream's update speed (`depth@100ms` → 1 s), at least 1 s; a stream
 * type without a speed pushes at its market's default (spot `depth20` every
 * 1000 ms → 10 s, USD-M `depth20` every 250 ms → 2.5 s). The floor only matters for
 * USD-M `@0ms`: for every other allowed speed 10 × speed is already ≥ 1 s.
 * Trades and the book ticker come when the market moves, not on a clock:
 * a quiet symbol legitimately sends nothing for minutes, so their holes
 * count from an hour (their id chains still show every missed message).
 */
export function defaultMaxHoleMs(streamType: string, market: Market): number {
  if (isEventDriven(streamType)) return 3_600_000;
  return Math.max(10 * updateSpeedMs(market, streamType), 1000);
}

/** µs since the epoch → ISO 8601 UTC with six fractional digits. */
export function isoMicros(us: number): string {
  const ms = Math.floor(us / 1000);
  const iso = new Date(ms).toISOString();
  return `${iso.slice(0, 23)}${String(us - ms * 1000).padStart(3, "0")}Z`;
}

interface Stats {
  objects: number;
  messages: number;
  snapshots: number;
  events: Record<string, number>;
  duplicates: number;
  breaks: number;
  unexplainedBreaks: number;
  holes: number;
  unexplainedHoles: number;
  unreadableObjects: number;
  malformedLines: number;
  metaMismatches: number;
  objectsWithoutMeta: number;
  firstObjectWithoutMeta?: string;
  firstRecvTs?: number;
  lastRecvTs?: number;
  firstUpdateId?: number;
  holeUs: number;
  unexplainedHoleUs: number;
  /** Holes between two lines of the range (not at its ends), explained or not. */
  innerHoleUs: number;
}

interface Where {
  readonly key: string;
  readonly line: number;
  readonly ts: number;
}

/** A message's place in the update-id chain. */
interface ChainIds extends LineIds {
  readonly firstUpdateId: number;
  readonly lastUpdateId: number;
}

interface DuplicateRun {
  readonly key: string;
  readonly line: number;
  readonly ts: number;
  readonly fromId: number;
  toId: number;
  count: number;
}

interface StreamState {
  readonly stream: string;
  readonly market: string;
  readonly streamType: string;
  readonly symbol: string;
  readonly rule: SequenceRule;
  readonly maxHoleUs: number;
  readonly stats: Stats;
  lastUpdateId?: number;
  lastMessage?: Where;
  /** An explaining event line came after the last data message. */
  eventSinceMessage: boolean;
  lastLine?: Where;
  /** The last line was an explaining event. */
  lastLineExplains: boolean;
  /** The explaining event of the latest line, when it was one. */
  lastLineEvent?: string;
  /** The stream's first line in the range, and its explaining event if it was one. */
  firstLine?: Where;
  firstLineEvent?: string;
  /** The latest line was a `stopped` event: the stream left the recorded set. */
  stopped: boolean;
  duplicateRun?: DuplicateRun;
  /** Partial books: the receive time of the latest message stored with the current id. */
  idLatestTs?: number;
  /** The stream's previous object could not be read: the next break or hole follows from it. */
  afterUnreadable?: string;
  /** Diff streams only; with `from`, it has followed the chain from before the range. */
  rebuild?: RebuildTracker;
  /**
   * The first line in the range was seen: the stream's chain, and where it
   * stood before `from` (`chainBefore`), are the audit's from then on.
   */
  begun: boolean;
  /** Per INSTANCE_ID, the receive times of its first and last line of this stream. */
  readonly spans: Map<string, { first: number; last: number }>;
  /**
   * Unexplained breaks and holes, newest last: a loss is written into the
   * stream's next stored batch, so its `dropped` line comes after the hole.
   */
  awaitingDrop: AwaitingDrop[];
  /** With `from`: the receive times `dropped` lines in the range say were lost. */
  readonly startDropped: Array<readonly [number, number]>;
}

interface AwaitingDrop {
  readonly problem: Problem;
  /** Where it is in the problem list, if it was kept there. */
  readonly index?: number;
  /** The hole or break spans these receive times, µs. */
  readonly from: number;
  readonly to: number;
  readonly holeUs?: number;
  /** A hole: the receive times of `dropped` lines within it so far. */
  readonly dropped: Array<readonly [number, number]>;
}

interface OpenObject {
  readonly key: string;
  readonly parts: KeyParts;
  /** `<symbol lower-case>@<stream type>`: where snapshots and object counts go. */
  readonly stream: string;
  /**
   * The first object after the range (key time at or after `to`): read only to
   * see how a silence at the range's end ends, never judged.
   */
  readonly after: boolean;
  /**
   * Read for a diff stream's chain and snapshots before `from` only (the
   * lookback: `lookback()`), never judged.
   */
  readonly lookback: boolean;
  inRange: number;
  /** What its lines make of its metadata, all of them, in range or not. */
  readonly tally: MetaTally;
  /** It has a malformed line (its metadata is then not compared). */
  malformed: boolean;
  /** Streams that had a line of this object in the range. */
  readonly streams: Set<StreamState>;
  /** The receive time of its latest line so far. */
  lastTs: number;
  /** Lines of another stream: the first one, and how many. */
  misplaced?: { line: number; stream: string; count: number };
  /** Lines received before the line above them: the first one, and how many. */
  disorder?: { line: number; ts: number; previous: number; count: number };
}

/** A line just outside the range: when, where, and the explaining event it is, if one. */
interface EdgeLine {
  readonly ts: number;
  readonly key: string;
  readonly line: number;
  readonly event?: string;
  /** A `stopped` line: the stream left the recorded set. */
  readonly stopped: boolean;
}

/** What lies just outside the range of a stream: how its edge silences begin and end. */
interface Outside {
  readonly stream: string;
  /** An object it was seen in (its market and partitions). */
  readonly parts: KeyParts;
  /** The latest line before `from`. */
  before?: EdgeLine;
  /** The first line at or after `to`. */
  after?: EdgeLine;
  /** The receive times `dropped` lines at or after `to` say were lost. */
  readonly afterDropped: Array<readonly [number, number]>;
  /** The stream's chain before `from`, and for diff streams its snapshots. */
  chainBefore?: BeforeRange;
}

/**
 * A stream before `from`: where its chain stands when the range starts (a
 * break across `from` is the range's first message not continuing it), and
 * for a diff stream where its book stands, as `book` reads it.
 */
interface BeforeRange {
  readonly rule: SequenceRule;
  /** Diff streams only. */
  readonly rebuild?: RebuildTracker;
  lastUpdateId?: number;
  lastMessage?: Where;
  /** An explaining event line came after the last message. */
  eventSince: boolean;
  idLatestTs?: number;
}

export class Auditor {
  readonly #from: number;
  readonly #to: number;
  readonly #options: AuditOptions;
  readonly #streams = new Map<string, StreamState>();
  /** Per `<market>/<stream>`, the lines seen just outside the range (never a StreamState). */
  readonly #outside = new Map<string, Outside>();
  /** Keys announced by `lookback()` and not yet begun. */
  readonly #lookbackKeys = new Set<string>();
  #misplaced = 0;
  #disordered = 0;
  readonly #problems: Problem[] = [];
  #problemsOmitted = 0;
  #objects = 0;
  #lines = 0;
  #badKeys = 0;
  #unreadable = 0;
  #noData = 0;
  #object: OpenObject | undefined;
  // One-entry cache: consecutive lines almost always belong to the same stream.
  #cachedName = "";
  #cachedMarket = "";
  #cached: StreamState | undefined;

  constructor(options: AuditOptions = {}) {
    this.#options = options;
    this.#from = options.from ?? -Infinity;
    this.#to = options.to ?? Infinity;
  }

  /** A key that does not follow the archive layout: reported, never read. */
  badKey(key: string): void {
    this.#badKeys++;
    this.#problem({
      kind: "bad-key",
      key,
      detail: `the key does not follow the archive layout (${KEY_LAYOUT})`,
      explained: false,
    });
  }

  /**
   * An object (begun before `from`) to be read only for the chain and
   * snapshots before the range, as `book` reads back to the snapshot before
   * it; call before its `beginObject`. Never judged, nor counted.
   */
  lookback(key: string): void {
    this.#lookbackKeys.add(key);
  }

  /** Starts an object; false (and a bad-key problem) when its key is outside the layout. */
  beginObject(key: string): boolean {
    this.#finishObject();
    const parts = parseKey(key);
    if (!parts) {
      this.badKey(key);
      return false;
    }
    const after = parts.firstRecvTs >= this.#to;
    const lookback = this.#lookbackKeys.delete(key);
    if (!after && !lookback) this.#objects++;
    this.#object = {
      key,
      parts,
      stream: streamOfKey(parts),
      after,
      lookback,
      inRange: 0,
      tally: new MetaTally(),
      malformed: false,
      streams: new Set(),
      lastTs: -Infinity,
    };
    return true;
  }

  /** One line of the open object's decompressed text, without its newline. */
  line(text: string, lineNo: number): void {
    const object = this.#object;
    if (!object) throw new Error("Auditor.line called outside an object");
    const line = decodeLine(text);
    if (object.after) {
      if (line.kind !== "malformed" && line.stream === object.stream) {
        this.#outsideLine(object, line, lineNo);
      }
      return;
    }
    if (object.lookback) {
      if (line.kind === "malformed" || line.recvTs >= this.#from) return;
      const stream = line.kind === "snapshot" ? object.stream : line.stream;
      if (stream === object.stream) this.#outsideLine(object, line, lineNo);
      return;
    }
    this.#lines++;
    if (line.kind === "malformed") {
      object.malformed = true;
      this.#malformed(object, lineNo, line.reason);
      return;
    }
    object.tally.add(line.kind, line.recvTs, line.kind === "message" ? line.ids : undefined);
    const ts = line.recvTs;
    // Snapshot lines are the object's own stream's (their `stream` names the snapshot).
    const stream = line.kind === "snapshot" ? object.stream : line.stream;
    if (stream !== object.stream) {
      if (object.misplaced) object.misplaced.count++;
      else object.misplaced = { line: lineNo, stream, count: 1 };
      return;
    }
    if (lineNo === 1 && ts !== object.parts.firstRecvTs) this.#keyTimeMismatch(object, ts);
    if (ts < object.lastTs) {
      if (object.disorder) object.disorder.count++;
      else object.disorder = { line: lineNo, ts, previous: object.lastTs, count: 1 };
    } else object.lastTs = ts;
    if (ts < this.#from || ts >= this.#to) {
      this.#outsideLine(object, line, lineNo);
      return;
    }
    object.inRange++;

    const state = this.#state(stream, object.parts);
    if (!state.begun) this.#begin(state, object.parts.market);
    object.streams.add(state);
    const stats = state.stats;
    const span = state.spans.get(object.parts.instanceId);
    if (span) span.last = Math.max(span.last, ts);
    else state.spans.set(object.parts.instanceId, { first: ts, last: ts });
    stats.firstRecvTs ??= ts;
    if (stats.lastRecvTs === undefined || ts > stats.lastRecvTs) stats.lastRecvTs = ts;
    const where = { key: object.key, line: lineNo, ts };
    if (line.kind === "event") this.#eventLine(state, where, line);
    else this.#dataLine(state, where, line);
  }

  /**
   * The stream's first line in the range: its chain goes on from where it
   * stood before `from`, so a break across `from` is found (in the range's
   * audit, the earlier range's never judges lines after its end).
   */
  #begin(state: StreamState, market: string): void {
    state.begun = true;
    const before = this.#outside.get(`${market}/${state.stream}`)?.chainBefore;
    if (!before) return;
    if (before.rebuild) state.rebuild = before.rebuild;
    state.lastUpdateId = before.lastUpdateId;
    state.lastMessage = before.lastMessage;
    state.eventSinceMessage = before.eventSince;
    state.idLatestTs = before.idLatestTs;
  }

  #eventLine(state: StreamState, where: Where, line: DecodedEvent): void {
    const event = line.event;
    const explains = EXPLAINING_EVENTS.has(event);
    this.#checkHole(state, where.key, where.line, where.ts, explains, explains ? event : undefined);
    if (where.ts >= (state.lastLine?.ts ?? -Infinity)) state.stopped = event === "stopped";
    state.stats.events[event] = (state.stats.events[event] ?? 0) + 1;
    if (explains) state.eventSinceMessage = true;
    // The stream left the recorded set: what follows (a symbol listed again) is a new
    // chain, whose ids need not continue the old one's.
    if (event === "stopped") {
      this.#flushDuplicates(state);
      state.lastUpdateId = undefined;
      state.idLatestTs = undefined;
      state.rebuild?.end();
    }
    const dropped = droppedFactsOf(line);
    if (dropped) this.#explainDrop(state, dropped);
  }

  #dataLine(state: StreamState, where: Where, line: DecodedData): void {
    if (where.ts >= (state.lastLine?.ts ?? -Infinity)) state.stopped = false;
    if (line.kind === "snapshot") {
      // A REST answer, not the stream's: it does not end (nor split) a silence of the stream.
      state.stats.snapshots++;
      const id = line.ids.lastUpdateId;
      if (id !== undefined) state.rebuild?.snapshot(where.ts, id);
      return;
    }
    this.#checkHole(state, where.key, where.line, where.ts, false);
    state.stats.messages++;
    const ids = line.ids;
    if (ids.lastUpdateId !== undefined) {
      this.#checkChain(state, where, {
        firstUpdateId: ids.firstUpdateId ?? ids.lastUpdateId,
        lastUpdateId: ids.lastUpdateId,
        prevUpdateId: ids.prevUpdateId,
      });
    }
    state.eventSinceMessage = false;
    state.lastMessage = where;
  }

  /**
   * The open object was read to its end; `stored` is the metadata stored with
   * it, compared with its lines (none given: not compared).
   */
  endObject(stored?: StoredMeta): void {
    const object = this.#object;
    if (!object) return;
    for (const state of object.streams) state.afterUnreadable = undefined;
    this.#finishObject(stored);
  }

  /** The object could not be read (whole or from some point on): reported, the audit goes on. */
  unreadable(key: string, error: unknown): void {
    const object = this.#object?.key === key ? this.#object : undefined;
    this.#finishObject();
    // Read only for what follows or precedes the range: that range's audit judges it.
    if (object?.after || object?.lookback) return;
    this.#unreadable++;
    const parts = object?.parts ?? parseKey(key);
    const message = error instanceof Error ? error.message : String(error);
    if (!parts) {
      this.#problem({ kind: "unreadable", key, detail: message, explained: false });
      return;
    }
    const stream = streamOfKey(parts);
    const state = this.#state(stream, parts);
    state.stats.unreadableObjects++;
    if (!object || !object.streams.has(state)) state.stats.objects++;
    state.afterUnreadable = key;
    const lines = object ? `${object.inRange} line(s) in range read before the error` : "";
    this.#problem({
      kind: "unreadable",
      market: parts.market,
      stream,
      key,
      time: isoMicros(parts.firstRecvTs),
      recvTs: parts.firstRecvTs,
      detail: lines === "" ? message : `${message}; ${lines}`,
      explained: false,
    });
  }

  /** The verdict; call once, after the last object. */
  report(): Report {
    this.#finishObject();
    for (const state of this.#streams.values()) {
      this.#flushDuplicates(state);
      this.#edgeHoles(state);
    }
    this.#silentStreams();
    const all = [...this.#streams.values()];
    const from = this.#options.from ??
      Math.min(...all.map((s) => s.stats.firstRecvTs ?? Infinity));
    const to = this.#options.to ?? Math.max(...all.map((s) => s.stats.lastRecvTs ?? -Infinity));
    const hasRange = Number.isFinite(from) && Number.isFinite(to);

    const streams = all
      .sort((a, b) => byText(a.market, b.market) || byText(a.stream, b.stream))
      .map((state) => this.#streamReport(state, hasRange ? from : undefined, to));

    const overlaps = all.reduce((n, state) => n + this.#checkOverlap(state), 0);
    const symbols = this.#options.symbols ?? [];
    for (const symbol of symbols) {
      if (!all.some((s) => s.symbol === symbol)) {
        this.#noData++;
        this.#problem({
          kind: "no-data",
          detail: `no object of symbol ${symbol} in the range`,
          explained: false,
        });
      }
    }
    if (symbols.length === 0 && all.length === 0 && this.#badKeys === 0) {
      this.#noData++;
      this.#problem({ kind: "no-data", detail: "no object in the range", explained: false });
    }

    const ok = this.#badKeys === 0 && this.#unreadable === 0 && this.#noData === 0 &&
      overlaps === 0 && this.#misplaced === 0 && this.#disordered === 0 &&
      streams.every((s) =>
        s.unexplainedBreaks === 0 && s.unexplainedHoles === 0 && s.duplicates === 0 &&
        s.malformedLines === 0 && s.metaMismatches === 0
      );
    return {
      range: hasRange
        ? { from: isoMicros(from), to: isoMicros(to), fromRecvTs: from, toRecvTs: to }
        : {},
      objects: this.#objects,
      lines: this.#lines,
      streams,
      problems: [...this.#problems],
      problemsOmitted: this.#problemsOmitted,
      ok,
    };
  }

  /**
   * Streams with lines just before or after an asked range and none in it:
   * silent for the whole range, explained as an edge silence is (the last
   * line before it, or the first after it, or `dropped` lines covering it).
   */
  #silentStreams(): void {
    const { from, to, settledUntil = Infinity } = this.#options;
    if (from === undefined || to === undefined) return;
    const end = Math.min(to, settledUntil);
    for (const [id, outside] of this.#outside) {
      if (this.#streams.has(id)) continue;
      const state = this.#state(outside.stream, outside.parts);
      if (end - from <= state.maxHoleUs) continue;
      const { before, after } = outside;
      const event = before?.stopped ? "stopped" : before?.event ?? after?.event ??
        droppedCover(from, end, outside.afterDropped, state.maxHoleUs);
      const where = (before ?? after)!;
      this.#edgeHole(state, from, end, where, event, "the whole range: no line in it");
    }
  }

  /**
   * The silences at the ends of an asked range: from `from` to the stream's
   * first line, and from its last line to `to` (no later than `settledUntil`,
   * before which every line should be stored). Explained when the stream
   * starts with an explaining event (the recorder connected), or ends with
   * one or with `stopped`.
   */
  #edgeHoles(state: StreamState): void {
    const { from, to, settledUntil = Infinity } = this.#options;
    const first = state.firstLine;
    const last = state.lastLine;
    if (!first || !last) return;
    const outside = this.#outside.get(`${state.market}/${state.stream}`);
    if (from !== undefined && first.ts - from > state.maxHoleUs) {
      const event = state.firstLineEvent ?? outside?.before?.event ??
        droppedCover(from, first.ts, state.startDropped, state.maxHoleUs);
      this.#edgeHole(state, from, first.ts, first, event, "before the first line in the range");
    }
    const end = Math.min(to ?? -Infinity, settledUntil);
    if (end - last.ts > state.maxHoleUs) {
      let event = state.stopped
        ? "stopped"
        : state.lastLineExplains
        ? state.lastLineEvent
        : undefined;
      // The silence runs on past `to`: the line that ends it (or a loss counted after it) may say why.
      if (event === undefined && end === to) {
        event = outside?.after?.event ??
          droppedCover(last.ts, end, outside?.afterDropped ?? [], state.maxHoleUs);
      }
      this.#edgeHole(state, last.ts, end, last, event, "after the last line in the range");
    }
  }

  #edgeHole(
    state: StreamState,
    from: number,
    to: number,
    line: Where,
    event: string | undefined,
    where: string,
  ): void {
    const length = to - from;
    const explained = event !== undefined;
    countHole(state.stats, length, explained);
    this.#problem({
      kind: "hole",
      market: state.market,
      stream: state.stream,
      key: line.key,
      line: line.line,
      time: isoMicros(from),
      recvTs: from,
      untilRecvTs: to,
      cause: event,
      detail: `no line for ${seconds(length)} (threshold ${seconds(state.maxHoleUs)}) ${where}, ` +
        `${isoMicros(from)} to ${isoMicros(to)} (${line.key}:${line.line})`,
      explained,
    });
  }

  /**
   * Instances (SHARD) whose spans of one stream overlap: the same symbol was
   * recorded twice. Handing a symbol from one instance to another (a change
   * of N, a move) leaves spans one after the other.
   */
  #checkOverlap(state: StreamState): number {
    const spans = [...state.spans].sort((a, b) => a[1].first - b[1].first);
    let found = 0;
    for (let i = 1; i < spans.length; i++) {
      const [instance, span] = spans[i];
      const earlier = spans.slice(0, i).find(([, other]) => other.last > span.first);
      if (!earlier) continue;
      found++;
      this.#problem({
        kind: "overlap",
        market: state.market,
        stream: state.stream,
        time: isoMicros(span.first),
        recvTs: span.first,
        detail: `recorded by instances ${earlier[0]} and ${instance} at the same time ` +
          "(their SHARD settings overlap)",
        explained: false,
      });
    }
    return found;
  }

  #streamReport(state: StreamState, from: number | undefined, to: number): StreamReport {
    const s = state.stats;
    let coverage = 0;
    if (from !== undefined && s.firstRecvTs !== undefined && s.lastRecvTs !== undefined) {
      // The silences at the range's ends lie outside first..last already; an explained
      // hole is a known loss, but still time the record does not cover.
      const span = to - from;
      const covered = Math.min(s.lastRecvTs, to) - Math.max(s.firstRecvTs, from) - s.innerHoleUs;
      coverage = span <= 0 ? 100 : Math.max(0, Math.min(100, (covered / span) * 100));
    }
    return {
      stream: state.stream,
      market: state.market,
      streamType: state.streamType,
      symbol: state.symbol,
      objects: s.objects,
      messages: s.messages,
      snapshots: s.snapshots,
      events: { ...s.events },
      instances: [...state.spans.keys()].sort(),
      duplicates: s.duplicates,
      breaks: s.breaks,
      unexplainedBreaks: s.unexplainedBreaks,
      holes: s.holes,
      unexplainedHoles: s.unexplainedHoles,
      unreadableObjects: s.unreadableObjects,
      malformedLines: s.malformedLines,
      metaMismatches: s.metaMismatches,
      objectsWithoutMeta: s.objectsWithoutMeta,
      firstObjectWithoutMeta: s.firstObjectWithoutMeta,
      firstRecvTs: s.firstRecvTs,
      lastRecvTs: s.lastRecvTs,
      firstUpdateId: s.firstUpdateId,
      lastUpdateId: state.lastUpdateId,
      maxHoleMs: state.maxHoleUs / 1000,
      holeMs: Math.round(s.holeUs / 1000),
      unexplainedHoleMs: Math.round(s.unexplainedHoleUs / 1000),
      coveragePercent: Math.round(coverage * 100) / 100,
      ...(state.rebuild
        ? {
          // Chains followed from before the range are judged from its start.
          notRebuildable: state.rebuild.ranges().filter((r) => r.toRecvTs > this.#from).map((r) => {
            const fromRecvTs = Math.max(r.fromRecvTs, this.#from);
            return {
              from: isoMicros(fromRecvTs),
              to: isoMicros(r.toRecvTs),
              fromRecvTs,
              toRecvTs: r.toRecvTs,
            };
          }),
        }
        : {}),
    };
  }

  /** A stream's state: per market, since both markets have streams of the same name. */
  #state(stream: string, parts: KeyParts): StreamState {
    if (stream === this.#cachedName && parts.market === this.#cachedMarket && this.#cached) {
      return this.#cached;
    }
    const id = `${parts.market}/${stream}`;
    let state = this.#streams.get(id);
    if (!state) {
      const at = stream.indexOf("@");
      const streamType = at === -1 ? parts.streamType : stream.slice(at + 1);
      const rule = sequenceRuleFor(parts.market as Market, streamType);
      state = {
        stream,
        market: parts.market,
        streamType,
        symbol: at === -1 ? parts.symbol : stream.slice(0, at).toUpperCase(),
        rule,
        rebuild: rebuildTrackerFor(rule, parts.market),
        begun: false,
        spans: new Map(),
        maxHoleUs: this.#options.maxHoleUs ??
          defaultMaxHoleMs(streamType, parts.market as Market) * 1000,
        stats: {
          objects: 0,
          messages: 0,
          snapshots: 0,
          events: {},
          duplicates: 0,
          breaks: 0,
          unexplainedBreaks: 0,
          holes: 0,
          unexplainedHoles: 0,
          unreadableObjects: 0,
          malformedLines: 0,
          metaMismatches: 0,
          objectsWithoutMeta: 0,
          holeUs: 0,
          unexplainedHoleUs: 0,
          innerHoleUs: 0,
        },
        eventSinceMessage: false,
        awaitingDrop: [],
        startDropped: [],
        lastLineExplains: false,
        stopped: false,
      };
      this.#streams.set(id, state);
    }
    this.#cachedName = stream;
    this.#cachedMarket = parts.market;
    this.#cached = state;
    return state;
  }

  #checkHole(
    state: StreamState,
    key: string,
    lineNo: number,
    ts: number,
    explains: boolean,
    event?: string,
  ) {
    const last = state.lastLine;
    if (last !== undefined && ts < last.ts) return; // out of order: not a new latest line
    if (last !== undefined && ts - last.ts > state.maxHoleUs) {
      const explained = explains || state.lastLineExplains;
      const length = ts - last.ts;
      countHole(state.stats, length, explained);
      state.stats.innerHoleUs += length;
      this.#lossProblem(state, { from: last.ts, to: ts, holeUs: length }, {
        kind: "hole",
        market: state.market,
        stream: state.stream,
        key,
        line: lineNo,
        time: isoMicros(last.ts),
        recvTs: last.ts,
        untilRecvTs: ts,
        cause: explained ? (state.lastLineExplains ? state.lastLineEvent : event) : undefined,
        detail: `no line for ${seconds(length)} (threshold ${seconds(state.maxHoleUs)}), ` +
          `${isoMicros(last.ts)} (${last.key}:${last.line}) to ${isoMicros(ts)}` +
          this.#afterUnreadable(state),
        explained,
      });
    }
    state.lastLine = { key, line: lineNo, ts };
    state.lastLineExplains = explains;
    state.lastLineEvent = event;
    if (last === undefined) {
      state.firstLine = state.lastLine;
      state.firstLineEvent = event;
    }
  }

  #checkChain(state: StreamState, where: Where, ids: ChainIds): void {
    const result = this.#storedAgain(state, where, ids)
      ? { kind: "duplicate" as const }
      : continuity(state.rule, state.lastUpdateId, ids);
    switch (result.kind) {
      case "duplicate":
        this.#duplicate(state, where, ids);
        return;
      case "gap":
        this.#flushDuplicates(state);
        this.#chainBreak(state, where, result);
        break;
      case "next":
        this.#flushDuplicates(state);
        break;
    }
    state.stats.firstUpdateId ??= ids.firstUpdateId;
    if (result.kind === "gap" || result.kind === "first") {
      state.rebuild?.chainStart(where.ts, ids.firstUpdateId);
    }
    state.rebuild?.message(where.ts, ids.lastUpdateId);
    if (state.rule === "partial") state.idLatestTs = where.ts;
    state.lastUpdateId = ids.lastUpdateId;
  }

  /**
   * A partial book's or book ticker's id repeats while the book does not
   * change, each push a message of its own, received later than the one
   * before. The same id received no later than the latest message with it is
   * a message stored again (an object stored twice while the book stood
   * still repeats every one of them).
   */
  #storedAgain(state: StreamState, where: Where, ids: ChainIds): boolean {
    return state.rule === "partial" && ids.lastUpdateId === state.lastUpdateId &&
      where.ts <= (state.idLatestTs ?? -Infinity);
  }

  /** A message already stored: consecutive ones in one object make one problem. */
  #duplicate(state: StreamState, where: Where, ids: ChainIds): void {
    state.stats.duplicates++;
    const run = state.duplicateRun;
    if (run && run.key === where.key) {
      run.count++;
      run.toId = ids.lastUpdateId;
      return;
    }
    this.#flushDuplicates(state);
    state.duplicateRun = {
      key: where.key,
      line: where.line,
      ts: where.ts,
      fromId: ids.lastUpdateId,
      toId: ids.lastUpdateId,
      count: 1,
    };
  }

  /** The chain skips ahead: messages are missing between the last one and `where`. */
  #chainBreak(state: StreamState, where: Where, gap: { expected: number; received: number }): void {
    const explained = state.eventSinceMessage;
    state.stats.breaks++;
    if (!explained) state.stats.unexplainedBreaks++;
    const previous = state.lastMessage;
    const what = state.rule === "usdm-diff"
      ? `pu ${gap.received} does not continue the previous u ${gap.expected}`
      : `${idName(state)} ${gap.received} skips ahead of ${gap.expected}`;
    this.#lossProblem(state, { from: previous?.ts ?? where.ts, to: where.ts }, {
      kind: "break",
      market: state.market,
      stream: state.stream,
      key: where.key,
      line: where.line,
      time: isoMicros(where.ts),
      recvTs: where.ts,
      detail: `${what}` +
        (previous
          ? `; previous message ${isoMicros(previous.ts)} (${previous.key}:${previous.line})`
          : "") +
        (explained ? "; the recorder logged a reconnect or gap in between" : "") +
        this.#afterUnreadable(state),
      explained,
    });
  }

  #flushDuplicates(state: StreamState): void {
    const run = state.duplicateRun;
    if (!run) return;
    state.duplicateRun = undefined;
    this.#problem({
      kind: "duplicate",
      market: state.market,
      stream: state.stream,
      key: run.key,
      line: run.line,
      time: isoMicros(run.ts),
      recvTs: run.ts,
      detail: `${run.count} message(s) stored again (update ids ${run.fromId}` +
        `${run.toId === run.fromId ? "" : `..${run.toId}`}, already at ${state.lastUpdateId})`,
      explained: false,
    });
  }

  #afterUnreadable(state: StreamState): string {
    return state.afterUnreadable ? `; follows unreadable object ${state.afterUnreadable}` : "";
  }

  #malformed(object: OpenObject, lineNo: number, reason: string): void {
    const state = this.#state(object.stream, object.parts);
    object.streams.add(state);
    state.stats.malformedLines++;
    this.#problem({
      kind: "malformed",
      market: object.parts.market,
      stream: object.stream,
      key: object.key,
      line: lineNo,
      detail: reason,
      explained: false,
    });
  }

  /** A line outside the range: only how the stream's edge silences begin and end is kept. */
  #outsideLine(object: OpenObject, line: DecodedData | DecodedEvent, lineNo: number): void {
    const id = `${object.parts.market}/${object.stream}`;
    let outside = this.#outside.get(id);
    if (!outside) {
      outside = { stream: object.stream, parts: object.parts, afterDropped: [] };
      this.#outside.set(id, outside);
    }
    const ts = line.recvTs;
    const isEvent = line.kind === "event";
    const edge: EdgeLine = {
      ts,
      key: object.key,
      line: lineNo,
      event: isEvent && EXPLAINING_EVENTS.has(line.event) ? line.event : undefined,
      stopped: isEvent && line.event === "stopped",
    };
    if (ts < this.#from) {
      if (!outside.before || ts >= outside.before.ts) outside.before = edge;
      // Once the stream has lines in the range, its chain is the audit's.
      if (!this.#streams.get(id)?.begun) {
        beforeRange(outside, line, { key: object.key, line: lineNo, ts });
      }
      return;
    }
    outside.after ??= edge;
    const dropped = isEvent ? droppedFactsOf(line) : undefined;
    if (!dropped) return;
    if (outside.afterDropped.length < MAX_AWAITING_DROP) {
      outside.afterDropped.push([dropped.firstRecvTs, dropped.lastRecvTs]);
    }
    // A loss is counted in the stream's next stored batch, which may lie after the range.
    const state = this.#streams.get(id);
    if (state) this.#explainDrop(state, dropped);
  }

  /** The key says the object starts at one time, its first line at another. */
  #keyTimeMismatch(object: OpenObject, ts: number): void {
    this.#misplaced++;
    this.#problem({
      kind: "misplaced",
      market: object.parts.market,
      stream: object.stream,
      key: object.key,
      line: 1,
      time: isoMicros(ts),
      recvTs: ts,
      detail: `the key's time ${isoMicros(object.parts.firstRecvTs)} is not the first line's ` +
        `receive time ${isoMicros(ts)} (an object renamed or moved?)`,
      explained: false,
    });
  }

  /** Reports another stream's lines, and lines out of receive order, in the object just read. */
  #objectFaults(object: OpenObject): void {
    const { misplaced, disorder } = object;
    const where = { market: object.parts.market, stream: object.stream, key: object.key };
    if (misplaced) {
      this.#misplaced++;
      this.#problem({
        kind: "misplaced",
        ...where,
        line: misplaced.line,
        detail: `${misplaced.count} line(s) of stream ${misplaced.stream} in an object of ` +
          `${object.stream} (left out of both streams' checks)`,
        explained: false,
      });
    }
    if (disorder) {
      this.#disordered++;
      this.#problem({
        kind: "order",
        ...where,
        line: disorder.line,
        time: isoMicros(disorder.ts),
        recvTs: disorder.ts,
        detail: `${disorder.count} line(s) received before the line above them (first: ` +
          `${isoMicros(disorder.ts)} after ${isoMicros(disorder.previous)}); recv_ts never ` +
          "decreases within a stream",
        explained: false,
      });
    }
  }

  #finishObject(stored?: StoredMeta): void {
    const object = this.#object;
    if (!object) return;
    this.#object = undefined;
    if (object.after || object.lookback) return;
    this.#objectFaults(object);
    const inRange = object.inRange > 0 ||
      (object.parts.firstRecvTs >= this.#from && object.parts.firstRecvTs < this.#to);
    if (inRange) {
      // An object with no line in range (e.g. empty) still counts for its own stream.
      if (object.streams.size === 0) object.streams.add(this.#state(object.stream, object.parts));
      for (const state of object.streams) state.stats.objects++;
      if (stored && !object.malformed) this.#checkMeta(object, stored);
    }
    // A run of duplicates is reported per object.
    for (const state of object.streams) this.#flushDuplicates(state);
  }

  /**
   * An object's stored metadata against its lines, counted for its own
   * stream. None at all is counted, not a problem: the lines are the record.
   */
  #checkMeta(object: OpenObject, stored: StoredMeta): void {
    const stats = this.#state(object.stream, object.parts).stats;
    if (stored.kind === "none") {
      stats.objectsWithoutMeta++;
      stats.firstObjectWithoutMeta ??= object.key;
      return;
    }
    const detail = stored.kind === "unreadable"
      ? `its metadata cannot be read: ${stored.reason}`
      : metaDifferences(stored.meta, object.tally.meta()).join("; ");
    if (detail === "") return;
    stats.metaMismatches++;
    this.#problem({
      kind: "meta",
      market: object.parts.market,
      stream: object.stream,
      key: object.key,
      detail: stored.kind === "unreadable"
        ? detail
        : `its metadata does not match its lines: ${detail}`,
      explained: false,
    });
  }

  /** Returns where the problem is in the list, if it was kept. */
  #problem(problem: Problem): number | undefined {
    if (this.#problems.length < (this.#options.maxProblems ?? 10_000)) {
      return this.#problems.push(problem) - 1;
    }
    this.#problemsOmitted++;
    return undefined;
  }

  /** A break or hole over `span`: unexplained, a later `dropped` line may explain it. */
  #lossProblem(
    state: StreamState,
    span: { from: number; to: number; holeUs?: number },
    problem: Problem,
  ): void {
    const index = this.#problem(problem);
    if (problem.explained) return;
    state.awaitingDrop.push({ problem, index, ...span, dropped: [] });
    if (state.awaitingDrop.length > MAX_AWAITING_DROP) state.awaitingDrop.shift();
  }

  /**
   * A `dropped` line says which receive times the collector lost messages
   * in, and why (it came after them: the line is in the next stored batch).
   * It explains a break whose two messages were received before and after
   * every message it counts, and a hole that, with the times of the lost
   * messages taken out (of this and earlier lines), leaves no silence
   * longer than the stream's threshold. One that merely touches a longer
   * silence explains nothing: more was lost than it says.
   */
  #explainDrop(state: StreamState, dropped: DroppedFacts): void {
    const first = dropped.firstRecvTs;
    const last = dropped.lastRecvTs;
    // For the silence at the range's start (clipped to it when judged).
    if (this.#options.from !== undefined && state.startDropped.length < MAX_AWAITING_DROP) {
      state.startDropped.push([first, last]);
    }
    const note =
      `; explained by a dropped line: ${dropped.messages} messages lost (${dropped.reason})`;
    state.awaitingDrop = state.awaitingDrop.filter((awaiting) => {
      if (first > awaiting.to || last < awaiting.from) return true;
      const { problem } = awaiting;
      if (problem.kind === "hole") {
        awaiting.dropped.push([Math.max(first, awaiting.from), Math.min(last, awaiting.to)]);
        if (longestSilence(awaiting.from, awaiting.to, awaiting.dropped) > state.maxHoleUs) {
          return true;
        }
      } else if (first < awaiting.from || last > awaiting.to) return true;
      if (problem.kind === "hole") {
        state.stats.unexplainedHoles--;
        state.stats.unexplainedHoleUs -= awaiting.holeUs ?? 0;
      } else state.stats.unexplainedBreaks--;
      if (awaiting.index !== undefined) {
        this.#problems[awaiting.index] = {
          ...problem,
          detail: problem.detail + note,
          explained: true,
        };
      }
      return false;
    });
  }
}

/** A hole of `length` µs in a stream's counts. */
function countHole(stats: Stats, length: number, explained: boolean): void {
  stats.holes++;
  stats.holeUs += length;
  if (!explained) {
    stats.unexplainedHoles++;
    stats.unexplainedHoleUs += length;
  }
}

function byText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The longest stretch of `from`..`to` outside every one of `spans` (each within it). */
export function longestSilence(
  from: number,
  to: number,
  spans: ReadonlyArray<readonly [number, number]>,
): number {
  let longest = 0;
  let at = from;
  for (const [start, end] of [...spans].sort((a, b) => a[0] - b[0])) {
    longest = Math.max(longest, start - at);
    at = Math.max(at, end);
  }
  return Math.max(longest, to - at);
}

/**
 * "dropped" when `dropped` lines (their lost receive times, clipped to
 * `from`..`to`) leave no silence in `from`..`to` longer than `maxUs`.
 */
function droppedCover(
  from: number,
  to: number,
  dropped: ReadonlyArray<readonly [number, number]>,
  maxUs: number,
): string | undefined {
  const within = dropped
    .filter(([first, last]) => first <= to && last >= from)
    .map(([first, last]) => [Math.max(first, from), Math.min(last, to)] as const);
  if (within.length === 0) return undefined;
  return longestSilence(from, to, within) <= maxUs ? "dropped" : undefined;
}

function seconds(us: number): string {
  const s = us / 1e6;
  return `${s >= 100 ? Math.round(s) : Number(s.toPrecision(3))} s`;
}

/** The field of the id a stream's chain follows, for messages: `U` of diffs, `t` of trades, `a` of aggregate trades. */
function idName(state: { readonly rule: string; readonly streamType: string }): string {
  if (state.rule !== "consecutive") return "U";
  return state.streamType === "aggTrade" ? "a" : "t";
}

/** A book is rebuilt from diff streams only (trades and partial books have none to rebuild). */
function rebuildTrackerFor(rule: SequenceRule, market: string): RebuildTracker | undefined {
  return rule === "spot-diff" || rule === "usdm-diff"
    ? new RebuildTracker(market as Market)
    : undefined;
}

/**
 * A line before `from`: follows the stream's chain (and a diff stream's
 * snapshots) as `#checkChain` does in the range, so that the range's first
 * message is judged against the last one before it, and the book at the
 * range's start stands on the last snapshot before it, as `book --from`
 * reads it. Nothing here is counted or reported.
 */
function beforeRange(outside: Outside, line: DecodedData | DecodedEvent, where: Where): void {
  if (outside.chainBefore === undefined) {
    const rule = sequenceRuleFor(outside.parts.market as Market, outside.parts.streamType);
    outside.chainBefore = {
      rule,
      rebuild: rebuildTrackerFor(rule, outside.parts.market),
      eventSince: false,
    };
  }
  const before = outside.chainBefore;
  if (line.kind === "event") {
    if (EXPLAINING_EVENTS.has(line.event)) before.eventSince = true;
    // As in the range (Auditor.#eventLine): after `stopped`, a new chain.
    if (line.event === "stopped") {
      before.lastUpdateId = before.idLatestTs = undefined;
      before.rebuild?.end();
    }
    return;
  }
  const { firstUpdateId, lastUpdateId, prevUpdateId } = line.ids;
  if (line.kind === "snapshot") {
    if (lastUpdateId !== undefined) before.rebuild?.snapshot(line.recvTs, lastUpdateId);
    return;
  }
  before.lastMessage = where;
  before.eventSince = false;
  if (lastUpdateId === undefined) return;
  const ids = { firstUpdateId: firstUpdateId ?? lastUpdateId, lastUpdateId, prevUpdateId };
  const result = continuity(before.rule, before.lastUpdateId, ids);
  if (result.kind === "duplicate") return;
  if (result.kind !== "next") before.rebuild?.chainStart(line.recvTs, ids.firstUpdateId);
  before.rebuild?.message(line.recvTs, lastUpdateId);
  before.lastUpdateId = lastUpdateId;
  if (before.rule === "partial") before.idLatestTs = line.recvTs;
}
