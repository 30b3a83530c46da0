/**
 * The stage between the feed and the uploader: turns frames and feed events
 * into archive lines, appends them to per-stream batches, and hands sealed
 * batches on. Synchronous and free of I/O, so the receive path never waits.
 *
 * Its one job is dispatch: which stream a frame belongs to, and the lines it
 * becomes. Which socket a stream is taken from, and what is a repeat, a gap
 * or a rotation, is decided by the pure `handover` (handover.ts); what is
 * counted is in recorder_metrics.ts; the malformed-frame warning is
 * throttled by throttled_log.ts.
 */

import { getLogger } from "@logtape/logtape";
import type { Batcher, SealedBatch } from "../batch/batcher.ts";
import { dataLine, eventLine, type EventName } from "../archive/encode.ts";
import { type Frame, parseFrameFast, parseFrameSlow } from "../binance/frames.ts";
import type { SequenceRule } from "../binance/sequence.ts";
import {
  allLeft,
  handover,
  type HandoverAction,
  type HandoverEvent,
  newStream,
  recordsPlainly,
  type StreamHandover,
} from "./handover.ts";
import { RecorderCounters, type RecorderMetrics } from "./recorder_metrics.ts";
import { ThrottledWarning } from "./throttled_log.ts";

export { utf8Length } from "./recorder_metrics.ts";

const log = getLogger(["l2", "recorder"]);

/** The streams of one logical connection, and the feed's controls for it. */
export interface StreamGroup {
  readonly conn: number;
  readonly names: readonly string[];
  /** Close the old socket: every stream continues on its successor. */
  retire?(socketId: number): void;
  /** Open a successor now (Binance announced a shutdown). */
  rotate?(socketId?: number): void;
}

export interface RecorderOptions {
  readonly batcher: Batcher;
  readonly submit: (batch: SealedBatch) => void;
  readonly metrics?: RecorderMetrics;
  /** Continuity rule of a stream; default: no checks. */
  readonly ruleFor?: (stream: string) => SequenceRule | undefined;
  /**
   * A stream starts a new chain: its first message, or the first after a
   * gap or a reconnect (diff mode takes a snapshot then).
   */
  readonly onChainStart?: (stream: string) => void;
  /** A break in a stream's update-id chain, after its `gap` line is added (the caller logs and counts it). */
  readonly onGap?: (stream: string, gap: { expected: number; received: number }) => void;
  /** Monotonic ms, for batch ages. */
  readonly monotonicMs?: () => number;
  /** Minimum ms between two log lines about malformed frames. */
  readonly malformedLogIntervalMs?: number;
  /**
   * Receive time minus the event time `E`, seconds, of every tenth data
   * message that carries one.
   */
  readonly onExchangeLag?: (seconds: number) => void;
  /** Unit of `E`: `us` with TIME_UNIT=us (default ms). */
  readonly eventTimeUnit?: "ms" | "us";
}

type DataFrame = Extract<Frame, { kind: "data" }>;
type Line = Parameters<Batcher["add"]>[1];

/** What a socket's close says about the streams it carried. */
interface CloseInfo {
  readonly replaced?: boolean;
  readonly recvTs: number;
  readonly details: Record<string, unknown>;
}

export class Recorder {
  readonly #options: RecorderOptions;
  readonly #now: () => number;
  readonly #counters: RecorderCounters;
  readonly #malformed: ThrottledWarning;
  readonly #lastMessageAt = new Map<string, number>();
  readonly #streams = new Map<string, StreamHandover<DataFrame>>();
  /** Per stream, the first update id of its current chain (a snapshot must reach back to it). */
  readonly #chainStarts = new Map<string, number>();
  /** Per group, its stream names as a set: checked on every frame. */
  readonly #groupSets = new WeakMap<StreamGroup, ReadonlySet<string>>();
  /** Streams that left the recorded set: their frames and events are no longer kept. */
  readonly #stopped = new Set<string>();
  /** The group a stream is recorded from, once `adopt` named one (a re-listed symbol's new group). */
  readonly #home = new Map<string, StreamGroup>();
  /** Reads the monotonic clock, keeping the reading in `#readAt`. */
  readonly #clock = (): number => this.#readAt = this.#now();
  /**
   * The last monotonic reading, ms. A data message is dated by it, for
   * `messageAges`, instead of by a reading of its own (a clock read per
   * message was ~3 % of the main thread): readings come at every tick (five a
   * second) and whenever a batch opens, so an age is at most a tick too old.
   */
  #readAt: number;

  constructor(options: RecorderOptions) {
    this.#options = options;
    this.#now = options.monotonicMs ?? (() => performance.now());
    this.#readAt = this.#now();
    this.#counters = new RecorderCounters(options);
    this.#malformed = new ThrottledWarning(this.#now, options.malformedLogIntervalMs ?? 10_000);
  }

  /**
   * One frame from `socketId`, a socket of `group`. Frames that are not
   * stream data are kept too, as event lines with the raw text, under the
   * stream they name or else the group's first stream.
   */
  frame(group: StreamGroup, text: string, recvTs: number, socketId = 0): void {
    const fast = parseFrameFast(text);
    this.#counters.frame(text, fast !== null);
    const frame = fast ?? readSlowly(text);
    const route = frame.kind === "data" ? this.#route(group, frame.stream) : undefined;
    if (route === "left") return;
    if (route === "carried" && frame.kind === "data") {
      this.#data(group, frame, recvTs, socketId);
    } else if (frame.kind === "control") {
      this.#control(group, frame.event, text, recvTs, socketId);
    } else {
      this.#unexpected(group, frame, text, recvTs);
    }
  }

  /**
   * A socket of `group` opened, or (`streams`) Binance acknowledged a live
   * subscription of some of its streams: a stream counts as connected only
   * then. A successor is silent: its streams join by id.
   */
  opened(
    group: StreamGroup,
    socketId: number,
    role: string,
    recvTs: number,
    streams: readonly string[] = group.names,
  ): void {
    if (role === "successor") return;
    this.event(this.#live(group, streams), "connected", recvTs, {
      conn: group.conn,
      socket: socketId,
    });
  }

  /**
   * A socket of `group` closed. When `replaced`, a successor carries on:
   * streams still owned by the old socket move to it. Otherwise the
   * streams it owned have a hole from here, marked in the archive.
   */
  closed(group: StreamGroup, socketId: number, info: CloseInfo): void {
    const event: HandoverEvent<DataFrame> = {
      kind: "closed",
      socketId,
      replaced: info.replaced ?? false,
      cause: info.details.cause,
      recvTs: info.recvTs,
    };
    for (const stream of this.#live(group, group.names)) this.#step(group, stream, event, info);
  }

  /** An event line in each of `streams`. */
  event(
    streams: readonly string[],
    event: EventName,
    recvTs: number,
    details: Readonly<Record<string, unknown>> = {},
  ): void {
    for (const stream of streams) {
      // Never before a line the stream has: a loss marked while a suspension sealed
      // the batches is stamped a few µs after the `suspended` line's time.
      const newest = this.#options.batcher.newestRecvTs(stream);
      const at = newest !== undefined && newest > recvTs ? newest : recvTs;
      this.#add(stream, this.#event(stream, at, event, details));
    }
  }

  /**
   * A REST snapshot for a diff stream: a data line of its own stream name
   * (`<symbol>@depthSnapshot`), stored in `stream`'s objects so a reader
   * finds the snapshot among the diffs it belongs with.
   */
  snapshot(stream: string, snapshotStream: string, text: string, recvTs: number): void {
    // The snapshotter stores only one-line bodies; anything else would split its line.
    if (/[\n\r]/.test(text)) throw new RangeError("a snapshot body must be one line");
    this.#add(stream, {
      text: dataLine(recvTs, snapshotStream, text),
      recvTs,
      isData: true,
      isSnapshot: true,
    });
  }

  /**
   * `group` records its streams from now on: a stream that had stopped (a
   * symbol listed again) starts a fresh chain, and frames of it from the
   * group it left are no longer kept.
   */
  adopt(group: StreamGroup): void {
    for (const stream of group.names) {
      this.#home.set(stream, group);
      if (!this.#stopped.delete(stream)) continue;
      this.#streams.delete(stream);
      this.#chainStarts.delete(stream);
      this.#lastMessageAt.delete(stream);
    }
  }

  /**
   * `streams` leave the record (their symbol was delisted or excluded): a
   * `stopped` event line ends each, its open batch is sealed and handed on,
   * and whatever still arrives for it is dropped.
   */
  stop(
    streams: readonly string[],
    recvTs: number,
    details: Readonly<Record<string, unknown>> = {},
  ): void {
    for (const stream of streams) {
      if (this.#stopped.has(stream)) continue;
      this.#add(stream, this.#event(stream, recvTs, "stopped", details));
      this.#stopped.add(stream);
      this.#home.delete(stream);
      this.#lastMessageAt.delete(stream);
      const sealed = this.#options.batcher.sealStream(stream);
      if (sealed) this.#options.submit(sealed);
    }
  }

  /** Seals batches that reached their age; call a few times a second. */
  tick(): void {
    for (const batch of this.#options.batcher.sealDue(this.#clock())) this.#options.submit(batch);
  }

  /** Seals every open batch (shutdown). */
  sealAll(): void {
    for (const batch of this.#options.batcher.sealAll()) this.#options.submit(batch);
  }

  /** The first update id (`U`) of `stream`'s current chain; undefined before its first message. */
  chainStart(stream: string): number | undefined {
    return this.#chainStarts.get(stream);
  }

  /** Seconds since each stream's last data message (to within a tick), for the age gauge. */
  messageAges(): Map<string, number> {
    const now = this.#clock();
    return new Map([...this.#lastMessageAt].map(([s, at]) => [s, (now - at) / 1000]));
  }

  /** A data frame of a stream `group` carries. */
  #data(group: StreamGroup, frame: DataFrame, recvTs: number, socketId: number): void {
    this.#counters.message(frame.stream, frame.dataText, recvTs);
    const before = this.#streams.get(frame.stream);
    const plain = before && recordsPlainly(before, frame, socketId);
    if (!plain) {
      this.#step(group, frame.stream, { kind: "frame", socketId, frame, recvTs });
    } else {
      if (plain !== before) this.#streams.set(frame.stream, plain);
      this.#record(frame.stream, frame, recvTs);
    }
    // After the line: a batch it opened has just read the clock.
    this.#lastMessageAt.set(frame.stream, this.#readAt);
  }

  /** A control frame (e.g. `serverShutdown`): a line in every stream; a shutdown rotates. */
  #control(group: StreamGroup, event: string, text: string, recvTs: number, socketId: number) {
    log.info("Exchange sent {event} on connection {conn}", { event, conn: group.conn });
    this.event(this.#live(group, group.names), "control", recvTs, {
      conn: group.conn,
      socket: socketId,
      raw: text,
    });
    if (event === "serverShutdown") group.rotate?.(socketId);
  }

  /**
   * Kept as an event with the raw text: broken frames, and data of a stream
   * this connection did not ask for (no chain or partition of its own).
   */
  #unexpected(
    group: StreamGroup,
    frame: Exclude<Frame, { kind: "control" }>,
    text: string,
    recvTs: number,
  ): void {
    this.#counters.malformed();
    const reason = frame.kind === "data"
      ? `stream ${frame.stream} is not subscribed on this connection`
      : frame.reason;
    // Not into a stream that stopped: its `stopped` line is its last.
    const named = frame.stream;
    const stream = named !== undefined && !this.#stopped.has(named) && this.#carries(group, named)
      ? named
      : this.#live(group, group.names)[0] ?? group.names[0];
    this.#add(stream, {
      text: eventLine(recvTs, stream, "malformed", { reason, raw: text }),
      recvTs,
      isData: false,
    });
    this.#malformed.malformed(reason);
  }

  /** Runs the handover decision for `stream` and carries out what it says. */
  #step(
    group: StreamGroup,
    stream: string,
    event: HandoverEvent<DataFrame>,
    close?: CloseInfo,
  ): void {
    const before = this.#streams.get(stream) ?? newStream(this.#options.ruleFor?.(stream));
    const { state, actions } = handover(before, event);
    this.#streams.set(stream, state);
    for (const action of actions) this.#apply(group, stream, action, close);
  }

  #apply(
    group: StreamGroup,
    stream: string,
    action: HandoverAction<DataFrame>,
    close: CloseInfo | undefined,
  ): void {
    // A frame held back during a handover is written after frames received
    // later (the chain's order): it and the lines about it take the newest
    // receive time of the stream, which never decreases.
    if ("recvTs" in action) {
      const newest = this.#options.batcher.newestRecvTs(stream);
      if (newest !== undefined && action.recvTs < newest) action = { ...action, recvTs: newest };
    }
    switch (action.kind) {
      case "record":
        return this.#record(stream, action.frame, action.recvTs);
      case "discard":
        return this.#counters.repeat();
      case "gap":
        return this.#gap(stream, action);
      case "chain-start":
        this.#chainStarts.set(stream, action.firstUpdateId);
        return this.#options.onChainStart?.(stream);
      case "rotated":
        return this.#add(
          stream,
          this.#event(stream, action.recvTs, "rotated", rotatedDetails(group, action)),
        );
      case "disconnected": {
        const details = close?.details ?? {};
        const why = action.replaced ? { ...details, successor: action.successor } : details;
        return this.#disconnected(stream, action.recvTs, why);
      }
      case "left":
        // Only the streams still recorded from this group: a stopped or moved one
        // keeps its last owner, and would hold the old socket until the overlap ends.
        if (
          allLeft(
            this.#live(group, group.names),
            (s) => this.#streams.get(s)?.owner,
            action.socketId,
          )
        ) {
          group.retire?.(action.socketId);
        }
    }
  }

  #record(stream: string, frame: DataFrame, recvTs: number): void {
    // The frame is the line's parts (its stream is `stream`): no line text is built.
    this.#add(stream, {
      parts: frame,
      recvTs,
      isData: true,
      firstUpdateId: frame.firstUpdateId,
      lastUpdateId: frame.lastUpdateId,
    });
  }

  #gap(stream: string, gap: { expected: number; received: number; recvTs: number }): void {
    const { expected, received } = gap;
    this.#add(stream, this.#event(stream, gap.recvTs, "gap", { expected, received }));
    this.#options.onGap?.(stream, { expected, received });
  }

  #carries(group: StreamGroup, stream: string): boolean {
    let names = this.#groupSets.get(group);
    if (!names) this.#groupSets.set(group, names = new Set(group.names));
    return names.has(stream) && (this.#home.get(stream) ?? group) === group;
  }

  /**
   * What a data frame of `stream` on `group` is: `left`, a stream no longer
   * recorded from it (stopped, or moved to another group); `carried`, one
   * of its streams; or `foreign`. Two lookups where `#carries` after a
   * check for `left` took five (this runs for every message).
   */
  #route(group: StreamGroup, stream: string): "left" | "carried" | "foreign" {
    if (this.#stopped.size > 0 && this.#stopped.has(stream)) return "left";
    const home = this.#home.get(stream);
    if (home !== undefined && home !== group) return "left";
    let names = this.#groupSets.get(group);
    if (!names) this.#groupSets.set(group, names = new Set(group.names));
    return names.has(stream) ? "carried" : "foreign";
  }

  /** Those of `streams` still recorded from `group`. */
  #live(group: StreamGroup, streams: readonly string[]): readonly string[] {
    if (this.#stopped.size === 0 && this.#home.size === 0) return streams;
    return streams.filter((s) => !this.#stopped.has(s) && (this.#home.get(s) ?? group) === group);
  }

  #disconnected(stream: string, recvTs: number, details: Record<string, unknown>): void {
    if (details.cause === "stale") this.#add(stream, this.#event(stream, recvTs, "stale", details));
    this.#add(stream, this.#event(stream, recvTs, "disconnected", details));
  }

  #event(
    stream: string,
    recvTs: number,
    event: EventName,
    details: Readonly<Record<string, unknown>>,
  ): Line {
    return { text: eventLine(recvTs, stream, event, details), recvTs, isData: false };
  }

  #add(stream: string, line: Line): void {
    const { batcher, submit } = this.#options;
    // The clock is read only if the line opens a batch.
    const sealed = batcher.add(stream, line, this.#clock);
    if (sealed) submit(sealed);
    for (const early of batcher.sealOverflow()) submit(early);
  }
}

/** The fields of a `rotated` event line, in their archive order. */
function rotatedDetails(
  group: StreamGroup,
  action: Extract<HandoverAction<unknown>, { kind: "rotated" }>,
): Record<string, unknown> {
  const details: Record<string, unknown> = {
    conn: group.conn,
    from_socket: action.from,
    to_socket: action.to,
    last_update_id: action.last,
  };
  if (action.confirmed === false) details.confirmed = false;
  return details;
}

/**
 * The slow path, and a frame it cannot classify (an exception, which thrown
 * here would end the process from the socket's handler) kept as malformed:
 * its raw text is stored all the same.
 */
function readSlowly(text: string): Frame {
  try {
    return parseFrameSlow(text);
  } catch (error) {
    const why = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    return { kind: "malformed", reason: `could not be read (${why})` };
  }
}
