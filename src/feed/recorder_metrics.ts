/**
 * What the recorder counts, in one place: received bytes, data messages per
 * stream, malformed frames, sequence gaps, repeats dropped during a handover,
 * and a sample of the exchange lag. The counters themselves belong to ops/
 * (a higher layer): the recorder is handed any object of this shape.
 */

/** The recorder's view of the ops metrics (`src/ops/metrics.ts` `Metrics` fits it). */
export interface RecorderMetrics {
  countBytes(bytes: number): void;
  countMessage(stream: string): void;
  readonly malformedFrames: { inc(): void };
  readonly rotationRepeats: { inc(): void };
}

export interface CounterOptions {
  readonly metrics?: RecorderMetrics;
  /** Receive time minus the event time `E`, seconds, of a sample of data messages. */
  readonly onExchangeLag?: (seconds: number) => void;
  /** Unit of `E`: `us` with TIME_UNIT=us (default ms). */
  readonly eventTimeUnit?: "ms" | "us";
}

/** One message in this many is measured for exchange lag: a sample, not a per-message cost. */
const LAG_SAMPLE_EVERY = 10;
/** `E` (event time) near the start of a depth payload. */
const EVENT_TIME = /"E":(\d+)[,}]/;

export class RecorderCounters {
  readonly #metrics: RecorderMetrics | undefined;
  readonly #options: CounterOptions;
  #sinceLagSample = 0;

  constructor(options: CounterOptions) {
    this.#options = options;
    this.#metrics = options.metrics;
  }

  /** A frame received; `ascii` when the fast parser read it (its length is its UTF-8 length). */
  frame(text: string, ascii: boolean): void {
    this.#metrics?.countBytes(ascii ? text.length : utf8Length(text));
  }

  /** A data message of `stream`, with its payload and receive time (µs) for the lag sample. */
  message(stream: string, dataText: string, recvTs: number): void {
    this.#metrics?.countMessage(stream);
    if (!this.#options.onExchangeLag || ++this.#sinceLagSample < LAG_SAMPLE_EVERY) return;
    this.#sinceLagSample = 0;
    const match = EVENT_TIME.exec(dataText);
    if (!match) return;
    const eventUs = Number(match[1]) * (this.#options.eventTimeUnit === "us" ? 1 : 1000);
    this.#options.onExchangeLag((recvTs - eventUs) / 1e6);
  }

  malformed(): void {
    this.#metrics?.malformedFrames.inc();
  }

  /** A message received twice while two sockets overlapped, kept once. */
  repeat(): void {
    this.#metrics?.rotationRepeats.inc();
  }
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
