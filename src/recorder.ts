/**
 * The stage between the feed and the uploader: turns frames and feed events
 * into archive lines, appends them to per-stream batches, and hands sealed
 * batches on. Synchronous and free of I/O, so the receive path never waits.
 */

import { getLogger } from "@logtape/logtape";
import type { Batcher, SealedBatch } from "./batch/batcher.ts";
import { dataLine, eventLine, type EventName } from "./batch/encode.ts";
import { parseFrame } from "./binance/frames.ts";
import type { Metrics } from "./ops/metrics.ts";

const log = getLogger(["l2", "recorder"]);

export interface RecorderOptions {
  readonly batcher: Batcher;
  readonly submit: (batch: SealedBatch) => void;
  readonly metrics?: Metrics;
  /** Monotonic ms, for batch ages. */
  readonly monotonicMs?: () => number;
  /** Minimum ms between two log lines about malformed frames. */
  readonly malformedLogIntervalMs?: number;
}

export class Recorder {
  readonly #options: RecorderOptions;
  readonly #now: () => number;
  readonly #lastMessageAt = new Map<string, number>();
  #malformedSinceLog = 0;
  #malformedLoggedAt = -Infinity;

  constructor(options: RecorderOptions) {
    this.#options = options;
    this.#now = options.monotonicMs ?? (() => performance.now());
  }

  /**
   * One frame from a connection that carries `streams`. Frames that are not
   * stream data are kept too, as event lines with the raw text, under the
   * stream they name or else the connection's first stream.
   */
  frame(streams: readonly string[], text: string, recvTs: number): void {
    const { metrics } = this.#options;
    metrics?.bytesReceived.inc(utf8Length(text));
    const frame = parseFrame(text);
    const now = this.#now();
    if (frame.kind === "data") {
      metrics?.messagesReceived.inc({ stream: frame.stream });
      this.#lastMessageAt.set(frame.stream, now);
      this.#add(frame.stream, {
        text: dataLine(recvTs, frame.stream, frame.dataText),
        recvTs,
        isData: true,
        firstUpdateId: frame.firstUpdateId,
        lastUpdateId: frame.lastUpdateId,
      }, now);
      return;
    }
    if (frame.kind === "control") {
      log.info("Exchange sent {event} on a connection carrying {streams}", {
        event: frame.event,
        streams: streams.length,
      });
      this.event(streams, "control", recvTs, { raw: text });
      return;
    }
    metrics?.malformedFrames.inc();
    const stream = frame.stream !== undefined && streams.includes(frame.stream)
      ? frame.stream
      : streams[0];
    this.#add(stream, {
      text: eventLine(recvTs, stream, "malformed", { reason: frame.reason, raw: text }),
      recvTs,
      isData: false,
    }, now);
    this.#logMalformed(frame.reason, now);
  }

  /** An event line in each of `streams` (e.g. a connection's open or close). */
  event(
    streams: readonly string[],
    event: EventName,
    recvTs: number,
    details: Readonly<Record<string, unknown>> = {},
  ): void {
    const now = this.#now();
    for (const stream of streams) {
      this.#add(
        stream,
        { text: eventLine(recvTs, stream, event, details), recvTs, isData: false },
        now,
      );
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

  /** Seconds since each stream's last data message, for the age gauge. */
  messageAges(): Map<string, number> {
    const now = this.#now();
    return new Map([...this.#lastMessageAt].map(([s, at]) => [s, (now - at) / 1000]));
  }

  #add(stream: string, line: Parameters<Batcher["add"]>[1], now: number): void {
    const sealed = this.#options.batcher.add(stream, line, now);
    if (sealed) this.#options.submit(sealed);
  }

  #logMalformed(reason: string, now: number): void {
    this.#malformedSinceLog++;
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

/** Bytes of `text` in UTF-8, without encoding it. */
export function utf8Length(text: string): number {
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
