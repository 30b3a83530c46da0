// deno-lint-ignore-file arch/no-upward-import -- issue 14: recorder.ts belongs in feed/
/**
 * The stage between the feed and the uploader: turns frames and feed events
 * into archive lines, appends them to per-stream batches, and hands sealed
 * batches on. Synchronous and free of I/O, so the receive path never waits.
 *
 * Per stream it also keeps the update-id chain: which socket the stream is
 * taken from (its owner), the last update id stored, and whether the next
 * message follows on. A break writes a `gap` event line before the message.
 *
 * Rotation without a hole: while a successor socket overlaps the owner, its
 * frames are held back per stream until one of them follows on from the
 * last id stored; from there the stream is taken from the successor (a
 * `rotated` event line marks the switch) and the owner's later frames for it
 * are dropped as the repeats they are. When every stream of the connection
 * has switched, the old socket is retired.
 */

import { getLogger } from "@logtape/logtape";
import type { Batcher, SealedBatch } from "./batch/batcher.ts";
import { dataLine, eventLine, type EventName } from "./archive/encode.ts";
import { type Frame, parseFrameFast, parseFrameSlow } from "./binance/frames.ts";
import { continuity, type SequenceRule } from "./binance/sequence.ts";
import type { Metrics } from "./ops/metrics.ts";

const log = getLogger(["l2", "recorder"]);

/** The streams of one logical connection, and the feed's controls for it. */
export interface StreamGroup {
  readonly conn: number;
  readonly names: readonly string[];
  /** Close the old socket: every stream continues on its successor. */
  retire?(socketId: number): void;
  /** Open a successor now (Binance announced a shutdown). */
  rotate?(): void;
}

export interface RecorderOptions {
  readonly batcher: Batcher;
  readonly submit: (batch: SealedBatch) => void;
  readonly metrics?: Metrics;
  /** Continuity rule of a stream; default: no checks. */
  readonly ruleFor?: (stream: string) => SequenceRule | undefined;
  /**
   * A stream starts a new chain: its first message, or the first after a
   * gap or a reconnect (diff mode takes a snapshot then).
   */
  readonly onChainStart?: (stream: string) => void;
  /** A break in a stream's update-id chain (after the `gap` event line is added). */
  readonly onGap?: (stream: string, gap: { expected: number; received: number }) => void;
  /** Monotonic ms, for batch ages. */
  readonly monotonicMs?: () => number;
  /** Minimum ms between two log lines about malformed frames. */
  readonly malformedLogIntervalMs?: number;
  /**
   * Receive time minus the event time `E`, seconds, of every
   * `LAG_SAMPLE_EVERY`th data message that carries one.
   */
  readonly onExchangeLag?: (seconds: number) => void;
  /** Unit of `E`: `us` with TIME_UNIT=us (default ms). */
  readonly eventTimeUnit?: "ms" | "us";
}

/** One message in this many is measured for exchange lag: a sample, not a per-message cost. */
const LAG_SAMPLE_EVERY = 10;
/** `E` (event time) near the start of a depth payload. */
const EVENT_TIME = /"E":(\d+)[,}]/;

type DataFrame = Extract<Frame, { kind: "data" }>;

interface Held {
  readonly frame: DataFrame;
  readonly recvTs: number;
}

interface StreamState {
  /** Socket the stream is stored from; undefined until one delivers. */
  owner?: number;
  /** Last update id stored. */
  last?: number;
  /** A successor's frames waiting to join the chain. */
  held?: { socketId: number; frames: Held[] };
  /**
   * Just switched to a successor that is still delivering messages the old
   * socket already gave: drop those repeats until the first new one.
   */
  catchingUp?: boolean;
  /**
   * The socket this stream left in its last switch, while it still runs, and
   * what it delivered since: if the new owner dies before the old socket is
   * retired, the stream goes back to it and loses nothing.
   */
  previous?: { socketId: number; frames: Held[] };
}

const MAX_HELD = 100_000;

export class Recorder {
  readonly #options: RecorderOptions;
  readonly #now: () => number;
  readonly #lastMessageAt = new Map<string, number>();
  readonly #streams = new Map<string, StreamState>();
  /** Per stream, the first update id of its current chain (a snapshot must reach back to it). */
  readonly #chainStarts = new Map<string, number>();
  /** Per group, its stream names as a set: checked on every frame. */
  readonly #groupSets = new WeakMap<StreamGroup, ReadonlySet<string>>();
  /** Streams that left the recorded set: their frames and events are no longer kept. */
  readonly #stopped = new Set<string>();
  /** The group a stream is recorded from, once `adopt` named one (a re-listed symbol's new group). */
  readonly #home = new Map<string, StreamGroup>();
  #malformedSinceLog = 0;
  #malformedLoggedAt = -Infinity;
  #sinceLagSample = 0;
  /** The monotonic time read for the data frame being handled, if any. */
  #frameNow: number | undefined;

  constructor(options: RecorderOptions) {
    this.#options = options;
    this.#now = options.monotonicMs ?? (() => performance.now());
  }

  /**
   * One frame from `socketId`, a socket of `group`. Frames that are not
   * stream data are kept too, as event lines with the raw text, under the
   * stream they name or else the group's first stream.
   */
  frame(group: StreamGroup, text: string, recvTs: number, socketId = 0): void {
    const { metrics } = this.#options;
    // A frame the fast path reads is ASCII: its length is its UTF-8 length.
    const fast = parseFrameFast(text);
    metrics?.countBytes(fast ? text.length : utf8Length(text));
    const frame = fast ?? parseFrameSlow(text);
    if (frame.kind === "data" && this.#left(group, frame.stream)) return;
    if (frame.kind === "data" && this.#carries(group, frame.stream)) {
      metrics?.countMessage(frame.stream);
      // One clock read per message: the batcher is given the same instant.
      const now = this.#frameNow = this.#now();
      this.#lastMessageAt.set(frame.stream, now);
      if (this.#options.onExchangeLag && ++this.#sinceLagSample >= LAG_SAMPLE_EVERY) {
        this.#sinceLagSample = 0;
        this.#sampleLag(frame.dataText, recvTs);
      }
      try {
        this.#route(group, frame, recvTs, socketId);
      } finally {
        this.#frameNow = undefined;
      }
      return;
    }
    if (frame.kind === "control") {
      log.info("Exchange sent {event} on connection {conn}", {
        event: frame.event,
        conn: group.conn,
      });
      this.event(this.#live(group, group.names), "control", recvTs, {
        conn: group.conn,
        socket: socketId,
        raw: text,
      });
      if (frame.event === "serverShutdown") group.rotate?.();
      return;
    }
    // Kept as an event with the raw text: broken frames, and data of a
    // stream this connection did not ask for (no chain or partition of its own).
    metrics?.malformedFrames.inc();
    const reason = frame.kind === "data"
      ? `stream ${frame.stream} is not subscribed on this connection`
      : frame.reason;
    const stream = frame.stream !== undefined && this.#carries(group, frame.stream)
      ? frame.stream
      : this.#live(group, group.names)[0] ?? group.names[0];
    this.#add(stream, {
      text: eventLine(recvTs, stream, "malformed", { reason, raw: text }),
      recvTs,
      isData: false,
    });
    this.#logMalformed(reason);
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
  closed(
    group: StreamGroup,
    socketId: number,
    info: { replaced?: boolean; recvTs: number; details: Record<string, unknown> },
  ): void {
    for (const stream of this.#live(group, group.names)) {
      let state = this.#streams.get(stream);
      if (!state) this.#streams.set(stream, state = {});
      if (state.held?.socketId === socketId) state.held = undefined;
      if (state.previous?.socketId === socketId) state.previous = undefined;
      // Owned by another socket that is still running: nothing lost here.
      if (state.owner !== undefined && state.owner !== socketId) continue;
      const wasOwner = state.owner === socketId;
      state.owner = undefined;
      const previous = state.previous;
      if (wasOwner && !info.replaced && previous) {
        // The new socket died before the old one was retired: the stream goes
        // back to the old one, with what it delivered meanwhile.
        state.previous = undefined;
        state.owner = previous.socketId;
        state.catchingUp = true;
        for (const h of previous.frames) this.#acceptOwned(stream, state, h.frame, h.recvTs);
        continue;
      }
      if (!info.replaced) {
        this.#disconnected(stream, info.recvTs, info.details);
        continue;
      }
      if (!wasOwner) continue;
      // The successor carries on before it joined this stream's chain: take
      // what it has; a break, if any, is found and marked by the sequence
      // check. A planned retirement is a rotation; anything else (the old
      // socket went stale or was cut) is a disconnect, and says why.
      const held = state.held;
      state.held = undefined;
      if (info.details.cause === "rotated") {
        this.#add(
          stream,
          this.#event(stream, info.recvTs, "rotated", {
            conn: group.conn,
            from_socket: socketId,
            to_socket: held?.socketId,
            last_update_id: state.last,
            confirmed: false,
          }),
        );
      } else {
        this.#disconnected(stream, info.recvTs, { ...info.details, successor: held?.socketId });
      }
      if (held) {
        state.owner = held.socketId;
        for (const h of held.frames) this.#accept(stream, state, h.frame, h.recvTs);
      }
    }
  }

  /** An event line in each of `streams`. */
  event(
    streams: readonly string[],
    event: EventName,
    recvTs: number,
    details: Readonly<Record<string, unknown>> = {},
  ): void {
    for (const stream of streams) this.#add(stream, this.#event(stream, recvTs, event, details));
  }

  /**
   * A REST snapshot for a diff stream: a data line of its own stream name
   * (`<symbol>@depthSnapshot`), stored in `stream`'s objects so a reader
   * finds the snapshot among the diffs it belongs with.
   */
  snapshot(stream: string, snapshotStream: string, text: string, recvTs: number): void {
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
    for (const batch of this.#options.batcher.sealDue(this.#now())) this.#options.submit(batch);
  }

  /** Seals every open batch (shutdown). */
  sealAll(): void {
    for (const batch of this.#options.batcher.sealAll()) this.#options.submit(batch);
  }

  /** The first update id (`U`) of `stream`'s current chain; undefined before its first message. */
  chainStart(stream: string): number | undefined {
    return this.#chainStarts.get(stream);
  }

  /** Seconds since each stream's last data message, for the age gauge. */
  messageAges(): Map<string, number> {
    const now = this.#now();
    return new Map([...this.#lastMessageAt].map(([s, at]) => [s, (now - at) / 1000]));
  }

  #route(group: StreamGroup, frame: DataFrame, recvTs: number, socketId: number): void {
    const stream = frame.stream;
    let state = this.#streams.get(stream);
    if (!state) this.#streams.set(stream, state = {});
    if (state.owner === undefined) {
      // A new diff socket after a disconnect may start with updates already
      // stored. (A partial book repeating its lastUpdateId is just unchanged.)
      state.owner = socketId;
      const rule = this.#options.ruleFor?.(stream);
      state.catchingUp = state.last !== undefined && rule !== undefined && rule !== "partial";
    }
    if (state.owner === socketId) {
      this.#acceptOwned(stream, state, frame, recvTs);
      if (state.held) this.#tryHandover(group, stream, state);
      return;
    }
    // Socket ids only grow: an older socket is one this stream already left
    // (still delivering frames in flight while it closes). Never go back to it.
    if (socketId < state.owner) {
      if (state.previous?.socketId === socketId && state.previous.frames.length < MAX_HELD) {
        state.previous.frames.push({ frame, recvTs });
      }
      this.#options.metrics?.rotationRepeats.inc();
      return;
    }
    // A newer socket of the group: a successor overlapping the owner.
    if (state.held?.socketId !== socketId) state.held = { socketId, frames: [] };
    if (state.held.frames.length < MAX_HELD) state.held.frames.push({ frame, recvTs });
    this.#tryHandover(group, stream, state);
  }

  /** An owner's frame; right after a switch, repeats of what was stored are dropped. */
  #acceptOwned(stream: string, state: StreamState, frame: DataFrame, recvTs: number): void {
    if (state.catchingUp) {
      if (isRepeat(frame, state.last)) {
        this.#options.metrics?.rotationRepeats.inc();
        return;
      }
      state.catchingUp = false;
    }
    this.#accept(stream, state, frame, recvTs);
  }

  /** Stores a frame from the stream's owner, marking a break in its chain. */
  #accept(stream: string, state: StreamState, frame: DataFrame, recvTs: number): void {
    const rule = this.#options.ruleFor?.(stream);
    if (rule && frame.firstUpdateId !== undefined && frame.lastUpdateId !== undefined) {
      const verdict = continuity(rule, state.last, {
        firstUpdateId: frame.firstUpdateId,
        lastUpdateId: frame.lastUpdateId,
        prevUpdateId: frame.prevUpdateId,
      });
      if (verdict.kind === "gap") {
        this.#options.metrics?.sequenceGaps.inc();
        log.warn("Sequence gap on {stream}: expected {expected}, received {received}", {
          stream,
          expected: verdict.expected,
          received: verdict.received,
        });
        this.#add(
          stream,
          this.#event(stream, recvTs, "gap", {
            expected: verdict.expected,
            received: verdict.received,
          }),
        );
        this.#options.onGap?.(stream, { expected: verdict.expected, received: verdict.received });
      }
      if (verdict.kind !== "duplicate") state.last = frame.lastUpdateId;
      if (verdict.kind === "first" || verdict.kind === "gap") {
        this.#chainStarts.set(stream, frame.firstUpdateId);
        this.#options.onChainStart?.(stream);
      }
    }
    this.#add(stream, {
      text: dataLine(recvTs, stream, frame.dataText),
      recvTs,
      isData: true,
      firstUpdateId: frame.firstUpdateId,
      lastUpdateId: frame.lastUpdateId,
    });
  }

  /**
   * Switches a stream to the successor once it is proven to be on the same
   * chain: it delivered a message that was already stored (a repeat: all it
   * sends next follows on), or its next message follows on from the last
   * one stored. A successor ahead of the owner waits for the owner to catch up.
   */
  #tryHandover(group: StreamGroup, stream: string, state: StreamState): void {
    const held = state.held!;
    const rule = this.#options.ruleFor?.(stream);
    let sawRepeat = false;
    let switchTs = 0;
    while (held.frames.length > 0 && isRepeat(held.frames[0].frame, state.last)) {
      switchTs = held.frames.shift()!.recvTs;
      sawRepeat = true;
      this.#options.metrics?.rotationRepeats.inc();
    }
    const next = held.frames[0];
    if (!sawRepeat) {
      if (!next) return;
      const f = next.frame;
      const joins = !rule || state.last === undefined || f.firstUpdateId === undefined ||
        continuity(rule, state.last, {
            firstUpdateId: f.firstUpdateId,
            lastUpdateId: f.lastUpdateId!,
            prevUpdateId: f.prevUpdateId,
          }).kind === "next";
      if (!joins) return;
    }
    const from = state.owner;
    state.owner = held.socketId;
    state.held = undefined;
    state.catchingUp = true;
    state.previous = from === undefined ? undefined : { socketId: from, frames: [] };
    this.#add(
      stream,
      this.#event(stream, next?.recvTs ?? switchTs, "rotated", {
        conn: group.conn,
        from_socket: from,
        to_socket: held.socketId,
        last_update_id: state.last,
      }),
    );
    for (const h of held.frames) this.#acceptOwned(stream, state, h.frame, h.recvTs);
    if (from !== undefined && group.names.every((s) => this.#streams.get(s)?.owner !== from)) {
      group.retire?.(from);
    }
  }

  #carries(group: StreamGroup, stream: string): boolean {
    let names = this.#groupSets.get(group);
    if (!names) this.#groupSets.set(group, names = new Set(group.names));
    return names.has(stream) && (this.#home.get(stream) ?? group) === group;
  }

  /** A stream of `group` that is no longer recorded from it (stopped, or moved to another group). */
  #left(group: StreamGroup, stream: string): boolean {
    if (this.#stopped.has(stream)) return true;
    const home = this.#home.get(stream);
    return home !== undefined && home !== group;
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
  ) {
    return { text: eventLine(recvTs, stream, event, details), recvTs, isData: false };
  }

  #add(stream: string, line: Parameters<Batcher["add"]>[1]): void {
    const { batcher, submit } = this.#options;
    const sealed = batcher.add(stream, line, this.#frameNow ?? this.#now());
    if (sealed) submit(sealed);
    for (const early of batcher.sealOverflow()) submit(early);
  }

  #sampleLag(dataText: string, recvTs: number): void {
    const match = EVENT_TIME.exec(dataText);
    if (!match) return;
    const eventUs = Number(match[1]) * (this.#options.eventTimeUnit === "us" ? 1 : 1000);
    this.#options.onExchangeLag?.((recvTs - eventUs) / 1e6);
  }

  #logMalformed(reason: string): void {
    this.#malformedSinceLog++;
    const now = this.#now();
    const interval = this.#options.malformedLogIntervalMs ?? 10_000;
    if (now - this.#malformedLoggedAt < interval) return;
    log.warn("Kept {count} malformed frame(s) as event lines; latest: {reason}", {
      count: this.#malformedSinceLog,
      reason,
    });
    this.#malformedSinceLog = 0;
    this.#malformedLoggedAt = now;
  }
}

function isRepeat(frame: DataFrame, last: number | undefined): boolean {
  return last !== undefined && frame.lastUpdateId !== undefined && frame.lastUpdateId <= last;
}

const NON_ASCII = /[\u0080-\uffff]/;

/** Bytes of `text` in UTF-8, without encoding it. */
export function utf8Length(text: string): number {
  // Binance frames are ASCII: one native scan instead of a loop per character.
  if (!NON_ASCII.test(text)) return text.length;
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) bytes += 1;
    else if (c >= 0xd800 && c <= 0xdbff) i++, bytes += 2; // a surrogate pair: 4 bytes for 2 units
    else bytes += 2;
  }
  return bytes;
}
