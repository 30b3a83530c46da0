/**
 * Per-stream batches in memory. Pure state: time comes in as arguments, and
 * sealed batches are returned, never sent anywhere from here.
 *
 * A batch is sealed when its first line is `batchMs` old or when it holds
 * `maxLines` lines, whichever comes first. Its key is fixed when it opens
 * (from its first line), so the crash journal can name it before sealing.
 */

import {
  dataLineMaxBytes,
  dataLineMiddle,
  type DataLineParts,
  writeDataLine,
} from "../archive/encode.ts";
import type { ObjectMeta } from "../archive/meta.ts";
import { type Deflater, GzipBody, localDeflater, type MemoryAccount } from "./body.ts";
import { ChunkPool } from "./chunks.ts";

const encoder = new TextEncoder();

export interface BatchLine {
  readonly text: string;
  /** µs since the epoch. */
  readonly recvTs: number;
  /** A data line (exchange message or snapshot), as opposed to an event line. */
  readonly isData: boolean;
  /** A REST snapshot line (archive/meta.ts: counted apart from messages). */
  readonly isSnapshot?: boolean;
  readonly firstUpdateId?: number;
  readonly lastUpdateId?: number;
}

/**
 * A data line given as its parts instead of its text: written as `dataLine`
 * spells it with `recvTs` (archive/encode.ts), without the line being built.
 */
export interface PartsLine extends Omit<BatchLine, "text"> {
  readonly text?: undefined;
  readonly parts: DataLineParts;
}

export interface SealedBatch {
  readonly key: string;
  /**
   * Resolves once the batch is safe in the crash journal (absent without
   * one), with the journal's file that holds the finished object, when it
   * is whole (see `ObjectFile`).
   */
  readonly durable?: Promise<ObjectFile | undefined>;
  readonly stream: string;
  /** The NDJSON text, mostly compressed already; the uploader finishes it. */
  readonly body: GzipBody;
  readonly meta: ObjectMeta;
  /** UTF-8 bytes of the text, newlines included. */
  readonly textBytes: number;
  /**
   * What the open batches' bound counted for it when it sealed (its text not
   * yet compressed plus its compressed pieces in memory, `GzipBody.heldBytes`):
   * what the upload queue counts it at, so a sealed batch fits the room it left.
   */
  readonly heldBytes: number;
  /**
   * Rebuilt from the crash journal: stored only where its key is absent, as
   * a copy of it may have been stored whole before the crash.
   */
  readonly recovered?: boolean;
}

/** A file holding a sealed batch's finished gzip object, byte for byte what `body.finish()` gives. */
export interface ObjectFile {
  readonly path: string;
  readonly bytes: number;
}

/**
 * Follows every batch's life, e.g. to journal it. Called synchronously. The
 * crash journal takes the body's compressed pieces as they are cut (see
 * `GzipBody.flush` and `takePieces`), so it needs no copy of each line.
 */
export interface BatchObserver {
  opened(key: string, stream: string, body: GzipBody): void;
  /** Returns a promise that resolves when the seal is durable (with the object's file, if whole). */
  sealed(key: string): Promise<ObjectFile | undefined>;
}

export interface BatcherOptions {
  readonly batchMs: number;
  readonly maxLines: number;
  /** Fixes the key of a batch from its stream, first receive time and number. */
  readonly planKey: (stream: string, firstRecvTs: number, seq: number) => string;
  readonly observer?: BatchObserver;
  /**
   * Bound on what all open batches together hold (`GzipBody.heldBytes`: text
   * not yet compressed, plus compressed pieces the crash journal has not yet
   * written): beyond it the oldest open batches are sealed early
   * (`sealOverflow`), so memory does not grow with the number of streams
   * times BATCH_SECONDS. With a crash journal that writes, a batch holds
   * little more than its last quarter second of text, so batches last their
   * whole BATCH_SECONDS; without one (or while it cannot write), their
   * compressed pieces count. The unused end of each batch's last chunk is
   * left out (counting whole chunks would make the bound grow with the
   * number of streams: 1,500 one-line batches take 6 MB of 4 KiB chunks).
   */
  readonly maxOpenBytes?: number | (() => number);
  /** Where batch text is kept until compressed; default: a pool of this batcher's own. */
  readonly pool?: ChunkPool;
  /** Compresses the pieces of open batches; default: on this thread at level 5. */
  readonly deflater?: Deflater;
}

/**
 * Text not yet compressed, all open batches together, that the piece size
 * aims at: each open batch cuts a piece at about this divided by the number
 * of open batches, within the limits below. Few streams get large pieces
 * (the object is barely larger than one-shot gzip), many streams small ones
 * (memory stays bounded; objects grow up to ~5 %). See body.ts.
 */
export const TEXT_BUDGET_BYTES = 16 * 1024 * 1024;
export const MIN_PIECE_BYTES = 64 * 1024;
export const MAX_PIECE_BYTES = 1024 * 1024;

/** The piece size for `openBatches` open batches. */
export function pieceBytesFor(openBatches: number): number {
  const share = Math.floor(TEXT_BUDGET_BYTES / Math.max(1, openBatches));
  return Math.min(MAX_PIECE_BYTES, Math.max(MIN_PIECE_BYTES, share));
}

const NONE_SEALED: readonly SealedBatch[] = Object.freeze([]);

interface OpenBatch {
  readonly stream: string;
  /** Fixed when the batch opens, from its stream, first receive time and number. */
  readonly key: string;
  readonly openedAt: number;
  readonly body: GzipBody;
  messages: number;
  snapshots: number;
  events: number;
  firstRecvTs: number;
  lastRecvTs: number;
  firstUpdateId?: number;
  lastUpdateId?: number;
  /** The stream of the last data line given as parts, and its `dataLineMiddle`. */
  middleOf?: string;
  middle?: Uint8Array;
}

export class Batcher {
  readonly #options: BatcherOptions;
  readonly #open = new Map<string, OpenBatch>();
  readonly #nextSeq = new Map<string, number>();
  /** Per stream, the newest receive time of its last sealed batch. */
  readonly #sealedNewest = new Map<string, number>();
  readonly #pool: ChunkPool;
  readonly #deflater: Deflater;
  /** Memory held by open batches' bodies, kept up to date by the bodies themselves. */
  readonly #account: MemoryAccount = { bytes: 0, held: 0 };
  readonly #pieceBytes = (): number => pieceBytesFor(this.#open.size);
  #openText = 0;
  #scratch = new Uint8Array(64 * 1024);

  constructor(options: BatcherOptions) {
    this.#options = options;
    this.#pool = options.pool ?? new ChunkPool();
    this.#deflater = options.deflater ?? localDeflater(5);
  }

  /**
   * Appends a line to its stream's batch, opening one if needed. Returns the
   * batch when this line filled it. `now` is a monotonic time in ms, or a
   * clock read only when a batch opens.
   */
  add(
    stream: string,
    line: BatchLine | PartsLine,
    now: number | (() => number),
  ): SealedBatch | undefined {
    let batch = this.#open.get(stream);
    if (!batch) {
      const seq = this.#nextSeq.get(stream) ?? 0;
      this.#nextSeq.set(stream, seq + 1);
      batch = {
        stream,
        key: this.#options.planKey(stream, line.recvTs, seq),
        openedAt: typeof now === "number" ? now : now(),
        body: new GzipBody({
          pool: this.#pool,
          deflater: this.#deflater,
          pieceBytes: this.#pieceBytes,
          account: this.#account,
        }),
        messages: 0,
        snapshots: 0,
        events: 0,
        firstRecvTs: line.recvTs,
        lastRecvTs: line.recvTs,
      };
      this.#open.set(stream, batch);
      this.#options.observer?.opened(batch.key, stream, batch.body);
    }
    const bytes = this.#encode(line, batch);
    batch.body.appendLineBytes(bytes);
    this.#openText += bytes.length + 1;
    batch.lastRecvTs = Math.max(batch.lastRecvTs, line.recvTs);
    if (line.isSnapshot) batch.snapshots++;
    else if (line.isData) batch.messages++;
    else batch.events++;
    if (line.firstUpdateId !== undefined) batch.firstUpdateId ??= line.firstUpdateId;
    if (line.lastUpdateId !== undefined) batch.lastUpdateId = line.lastUpdateId;
    return batch.body.lineCount >= this.#options.maxLines ? this.#seal(batch) : undefined;
  }

  /** Seals and returns every batch whose first line is at least `batchMs` old. */
  sealDue(now: number): SealedBatch[] {
    const due: SealedBatch[] = [];
    for (const batch of this.#open.values()) {
      if (now - batch.openedAt >= this.#options.batchMs) due.push(this.#seal(batch));
    }
    return due;
  }

  /**
   * Seals the oldest open batches while all open batches together hold more
   * than `maxOpenBytes` (`openHeldBytes`). Cheap when under the bound; call
   * after `add`.
   */
  sealOverflow(): readonly SealedBatch[] {
    const bound = this.#options.maxOpenBytes;
    const max = typeof bound === "function" ? bound() : bound;
    // Called after every line: under the bound it allocates nothing.
    if (max === undefined || this.openHeldBytes <= max) return NONE_SEALED;
    const sealed: SealedBatch[] = [];
    // A Map iterates in insertion order: the first open batch is the oldest.
    for (const batch of this.#open.values()) {
      if (this.openHeldBytes <= max) break;
      sealed.push(this.#seal(batch));
    }
    return sealed;
  }

  /** UTF-8 bytes of the text of all open batches (a metric). */
  get openTextBytes(): number {
    return this.#openText;
  }

  /**
   * What open batches hold as `maxOpenBytes` counts it: text not yet
   * compressed plus compressed pieces in memory (`GzipBody.heldBytes`).
   */
  get openHeldBytes(): number {
    return this.#account.held;
  }

  /**
   * Memory held by open batches: text not yet compressed (in whole chunks,
   * also while a piece compresses) and compressed pieces.
   */
  get openBytes(): number {
    return this.#account.bytes;
  }

  /** Seals the open batch of `stream`, if any (the stream stops). */
  sealStream(stream: string): SealedBatch | undefined {
    const batch = this.#open.get(stream);
    return batch ? this.#seal(batch) : undefined;
  }

  /** Seals every open batch (shutdown). */
  sealAll(): SealedBatch[] {
    return [...this.#open.values()].map((batch) => this.#seal(batch));
  }

  /** Lines held in open batches, for metrics. */
  get openLines(): number {
    let n = 0;
    for (const batch of this.#open.values()) n += batch.body.lineCount;
    return n;
  }

  /** The line as UTF-8 in a reused buffer: valid until the next call. */
  #encode(line: BatchLine | PartsLine, batch: OpenBatch): Uint8Array {
    const text = line.text;
    if (text === undefined) return this.#encodeData(line.recvTs, line.parts, batch);
    // UTF-8 needs at most 3 bytes per UTF-16 unit.
    const out = this.#room(text.length * 3);
    return out.subarray(0, encoder.encodeInto(text, out).written);
  }

  /** A data line from its parts, with its stream's middle kept by the batch. */
  #encodeData(recvTs: number, parts: DataLineParts, batch: OpenBatch): Uint8Array {
    if (batch.middleOf !== parts.stream || batch.middle === undefined) {
      batch.middle = dataLineMiddle(parts.stream);
      batch.middleOf = parts.stream;
    }
    const out = this.#room(dataLineMaxBytes(parts.dataText, batch.middle));
    return out.subarray(0, writeDataLine(out, recvTs, batch.middle, parts.dataText));
  }

  /** The scratch buffer, grown to at least `bytes`. */
  #room(bytes: number): Uint8Array {
    if (bytes > this.#scratch.length) {
      this.#scratch = new Uint8Array(Math.max(bytes, this.#scratch.length * 2));
    }
    return this.#scratch;
  }

  /** The key of the batch a line of `stream` received at `recvTs` goes into now (opened by it, if none is). */
  keyFor(stream: string, recvTs: number): string {
    const open = this.#open.get(stream);
    return open?.key ?? this.#options.planKey(stream, recvTs, this.#nextSeq.get(stream) ?? 0);
  }

  /** The newest receive time of a line `stream` has been given, in this batch or its last sealed one. */
  newestRecvTs(stream: string): number | undefined {
    return this.#open.get(stream)?.lastRecvTs ?? this.#sealedNewest.get(stream);
  }

  #seal(batch: OpenBatch): SealedBatch {
    this.#open.delete(batch.stream);
    this.#sealedNewest.set(batch.stream, batch.lastRecvTs);
    this.#openText -= batch.body.byteLength;
    const heldBytes = batch.body.heldBytes;
    batch.body.detach();
    return {
      key: batch.key,
      durable: this.#options.observer?.sealed(batch.key),
      stream: batch.stream,
      body: batch.body,
      textBytes: batch.body.byteLength,
      heldBytes,
      meta: {
        messages: batch.messages,
        snapshots: batch.snapshots,
        events: batch.events,
        firstRecvTs: batch.firstRecvTs,
        lastRecvTs: batch.lastRecvTs,
        firstUpdateId: batch.firstUpdateId,
        lastUpdateId: batch.lastUpdateId,
      },
    };
  }
}
