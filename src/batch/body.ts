/**
 * A batch's body, compressed while the batch is still open.
 *
 * Why: an open batch used to hold its whole NDJSON text until it sealed, and
 * the text is ~6 × its gzip size. Here the text is cut into pieces as it
 * grows, and only their compressed bytes are kept. A piece is cut when its
 * text reaches the piece size, or when `flush` asks (the crash journal does,
 * every 250 ms, and writes each piece to disk: store/journal.ts).
 *
 * Each piece is deflated on its own (raw deflate, RFC 1951, ending on a full
 * flush: byte-aligned, not final, with no back-references into the next
 * piece), so no zlib state is kept between pieces and a damaged piece on
 * disk costs only its own lines. The pieces back to back are one deflate
 * stream; `finish` closes it with an empty final block (`03 00`) and wraps it
 * in one gzip header and trailer: a single ordinary gzip member that every
 * reader inflates to exactly the lines appended. (Not several gzip members:
 * some readers stop after the first.)
 *
 * Cost: each piece starts with an empty window. (A preset dictionary of the
 * text before it would avoid that, as pigz does, but Deno's node:zlib
 * ignores the `dictionary` option.) Measured on the bench's partial-book
 * messages, 250 ms pieces of 10 msg/s streams make the archive ~1 % larger.
 *
 * Memory accounting: the body reports what it holds to a `MemoryAccount` as
 * it changes, including when a piece's compression completes later and when
 * the crash journal has written a piece (`spill`); `detach` stops that. Two
 * counts: `bytes`, the memory (raw text in whole chunks, plus compressed
 * pieces), and `held`, what the bounds on batches count (see the batcher and
 * store/budget.ts): the text not yet compressed, exactly, plus compressed
 * pieces still in memory. `held` leaves out the unused end of each batch's
 * last chunk, so a bound does not grow with the number of streams (1,500
 * one-line batches take 6 MB of 4 KiB chunks).
 */

import { constants, crc32, deflateRawSync, inflateRawSync } from "node:zlib";
import { concatBytes } from "../archive/bytes.ts";
import { ChunkedText, type ChunkPool } from "./chunks.ts";

/** Raw deflate (RFC 1951) of some bytes, as one piece of a longer stream. */
export interface Deflater {
  /**
   * Deflates `chunks` back to back. Not `final`: the output ends with a full
   * flush (byte-aligned, history reset), so another piece may follow it.
   * `final`: its last block is marked final. The chunks must stay unchanged
   * until the promise settles. Fails by rejecting, never by throwing.
   */
  deflateRaw(chunks: readonly Uint8Array[], final: boolean): Promise<Uint8Array>;
  /** zlib level, -1 to 9 (written into the gzip header's XFL byte). */
  readonly level: number;
}

/** Deflates on the calling thread (tests, and the fallback when a worker fails). */
export function deflateRawHere(
  chunks: readonly Uint8Array[],
  level: number,
  final: boolean,
): Uint8Array {
  const out = deflateRawSync(concatBytes(chunks), {
    level,
    finishFlush: final ? constants.Z_FINISH : constants.Z_FULL_FLUSH,
  });
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/** A `Deflater` on the calling thread. A failure rejects; it never throws. */
export function localDeflater(level: number): Deflater {
  return {
    level,
    deflateRaw: (chunks, final) => {
      try {
        return Promise.resolve(deflateRawHere(chunks, level, final));
      } catch (error) {
        return Promise.reject(error);
      }
    },
  };
}

/** What a group of bodies (e.g. all open batches) holds in memory. */
export interface MemoryAccount {
  /** Memory: raw text in whole chunks, plus compressed pieces. */
  bytes: number;
  /** What bounds count: text not yet compressed (exact bytes), plus compressed pieces in memory. */
  held: number;
}

export interface GzipBodyOptions {
  readonly pool: ChunkPool;
  readonly deflater: Deflater;
  /** Text gathered before it is deflated as one piece; asked after each line (default 256 KB). */
  readonly pieceBytes?: () => number;
  /** Where this body's memory is counted until `detach`. */
  readonly account?: MemoryAccount;
}

const DEFAULT_PIECE_BYTES = 256 * 1024;

/** The empty final block that ends a stream of sync-flushed pieces (fixed Huffman, BFINAL). */
export const FINAL_BLOCK: Uint8Array = new Uint8Array([0x03, 0x00]);

/** One piece of a body: its compressed bytes (once deflated) and what text it holds. */
export interface BodyPiece {
  /** Its place among the body's pieces (for `spill`). */
  readonly index: number;
  /** Raw deflate, ending on a full flush; rejects if it could not be compressed. */
  readonly bytes: Promise<Uint8Array>;
  /** Lines in this piece. */
  readonly lines: number;
  /** Lines in the body up to and including this piece. */
  readonly totalLines: number;
  /** CRC-32 and length of the body's text up to and including this piece. */
  readonly textCrc: number;
  readonly textBytes: number;
}

/**
 * The gzip header zlib writes (no name, no time): ten bytes, the same for
 * every body of one level.
 */
export function gzipHeader(level: number): Uint8Array {
  // XFL: 2 = best compression, 4 = fastest, as zlib sets it; OS 3 = Unix (zlib's code).
  const xfl = level === 9 ? 2 : level >= 0 && level < 2 ? 4 : 0;
  return new Uint8Array([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3]);
}

/** The gzip trailer: CRC-32 and length (modulo 2^32) of the text. */
export function gzipTrailer(crc: number, length: number): Uint8Array {
  const out = new Uint8Array(8);
  const view = new DataView(out.buffer);
  view.setUint32(0, crc >>> 0, true);
  // ISIZE: the input length modulo 2^32.
  view.setUint32(4, length % 2 ** 32, true);
  return out;
}

type State = "open" | "finished" | "released";

/** NDJSON lines appended one by one, compressed piece by piece into one gzip member. */
export class GzipBody {
  readonly #pool: ChunkPool;
  readonly #deflater: Deflater;
  readonly #pieceBytes: () => number;
  #account: MemoryAccount | undefined;
  #tail: ChunkedText;
  /**
   * Compressed pieces, in order; each resolves once deflated. A piece that
   * was spilled (see `spill`) is `SPILLED` when it is part of `#run`, or
   * else a function that reads it back.
   */
  readonly #pieces: Array<Promise<Uint8Array> | (() => Promise<Uint8Array>) | typeof SPILLED> = [];
  /**
   * Spilled pieces that lie back to back where they were written (the crash
   * journal writes a batch's pieces in order into one file): one record for
   * all of them, so a body holds nothing per spilled piece but an array slot.
   */
  #run: SpilledRun | undefined;
  /** Pieces cut since `takePieces` was last called. */
  #untaken: BodyPiece[] = [];
  /** CRC-32 of the text handed to pieces so far. */
  #crc = 0;
  /** Text bytes handed to pieces so far. */
  #cutBytes = 0;
  #lines = 0;
  #cutLines = 0;
  #cuts = 0;
  /** What this body holds in memory, as last reported to its account. */
  #memory = 0;
  /** What the bounds count (see `heldBytes`), as last reported to its account. */
  #bounded = 0;
  #state: State = "open";
  /** Finished or released: memory is no longer counted. */
  #gone = false;

  constructor(options: GzipBodyOptions) {
    this.#pool = options.pool;
    this.#deflater = options.deflater;
    this.#pieceBytes = options.pieceBytes ?? (() => DEFAULT_PIECE_BYTES);
    this.#account = options.account;
    this.#tail = new ChunkedText(this.#pool);
  }

  /** zlib level of the pieces (the gzip header depends on it). */
  get level(): number {
    return this.#deflater.level;
  }

  /** UTF-8 bytes of all lines appended, newlines included. */
  get byteLength(): number {
    return this.#cutBytes + this.#tail.byteLength;
  }

  get lineCount(): number {
    return this.#lines;
  }

  /** Bytes held now: raw text in whole chunks (also while a piece compresses) plus compressed pieces. */
  get memoryBytes(): number {
    return this.#memory;
  }

  /**
   * What bounds on batches count: the text not yet compressed (also while a
   * piece compresses), exactly, plus compressed pieces still in memory (not
   * yet written by the crash journal).
   */
  get heldBytes(): number {
    return this.#bounded;
  }

  /** Pieces cut so far (the last one, cut by `finish`, included). */
  get pieceCount(): number {
    return this.#cuts;
  }

  /** Appends `line` and a newline. `line` must not contain a newline itself. */
  appendLine(line: string): void {
    this.#check("append to");
    const tail = this.#tail;
    const [before, text] = [tail.capacity, tail.byteLength];
    tail.appendLine(line);
    this.#appended(tail, before, text);
  }

  /** `appendLine` for a line already encoded as UTF-8 (no newline in it); copies it. */
  appendLineBytes(bytes: Uint8Array): void {
    this.#check("append to");
    const tail = this.#tail;
    const [before, text] = [tail.capacity, tail.byteLength];
    tail.appendLineBytes(bytes);
    this.#appended(tail, before, text);
  }

  /** A line went into `tail` (whose capacity and text were `before`, `text`): counted, a piece cut when due. */
  #appended(tail: ChunkedText, before: number, text: number): void {
    this.#lines++;
    this.#count(tail.capacity - before, tail.byteLength - text);
    if (tail.byteLength >= this.#pieceBytes()) this.#cut();
  }

  /** Cuts the text appended since the last piece into a piece of its own, if there is any. */
  flush(): void {
    if (this.#state === "open" && this.#tail.byteLength > 0) this.#cut();
  }

  /** The pieces cut since the last call, in order (the crash journal writes them). */
  takePieces(): BodyPiece[] {
    const taken = this.#untaken;
    this.#untaken = [];
    return taken;
  }

  /**
   * The piece's bytes are safe elsewhere (the crash journal's file, `bytes`
   * long at offset `at`): the body lets go of them and reads them back with
   * `read` if it is finished (a sink that cannot take the journal's file).
   * Pieces spilled in order, back to back, with the same `read`, are read
   * back with one call.
   */
  spill(piece: BodyPiece, at: number, bytes: number, read: SpillReader): void {
    const slot = this.#pieces[piece.index];
    if (this.#gone || slot === SPILLED || typeof slot !== "object") return;
    const run = this.#run;
    if (run === undefined && piece.index === 0) {
      this.#run = { first: 0, count: 1, at, length: bytes, read };
      this.#pieces[piece.index] = SPILLED;
    } else if (
      run !== undefined && piece.index === run.first + run.count && at === run.at + run.length &&
      read === run.read
    ) {
      run.count++;
      run.length += bytes;
      this.#pieces[piece.index] = SPILLED;
    } else this.#pieces[piece.index] = readerOf(read, at, bytes);
    this.#count(-bytes, -bytes);
  }

  /** Stops counting this body against its account (the batch sealed); returns its memory. */
  detach(): number {
    if (this.#account) {
      this.#account.bytes -= this.#memory;
      this.#account.held -= this.#bounded;
    }
    this.#account = undefined;
    return this.#memory;
  }

  /**
   * The whole body as one gzip member. Once only: the text and pieces are
   * let go as it completes. Rejects if a piece could not be compressed.
   */
  async finish(): Promise<Uint8Array> {
    this.#check("finish");
    this.flush();
    this.#state = "finished";
    try {
      const pieces = await Promise.all(this.#reads());
      return concatBytes([
        gzipHeader(this.#deflater.level),
        ...pieces,
        FINAL_BLOCK,
        gzipTrailer(this.#crc, this.#cutBytes),
      ]);
    } finally {
      this.#letGo();
    }
  }

  /** Lets go of the text and pieces without finishing (a dropped batch). Idempotent. */
  release(): void {
    if (this.#state !== "open") return;
    this.#state = "released";
    this.#tail.release();
    this.#letGo();
  }

  /** The lines appended so far, decoded: for tests and the rare reader of an open batch. */
  async lines(): Promise<string[]> {
    this.#check("read");
    // What is appended now: the pieces so far and a copy of the tail, which
    // may be cut or appended to while the pieces are awaited.
    const cut = this.#reads();
    const tail = concatBytes([new Uint8Array(0), ...this.#tail.chunks()]);
    const pieces = await Promise.all(cut);
    const parts: Uint8Array[] = [];
    if (pieces.length > 0) {
      parts.push(
        inflateRawSync(concatBytes(pieces), { finishFlush: constants.Z_SYNC_FLUSH }),
      );
    }
    parts.push(tail);
    const text = new TextDecoder().decode(concatBytes(parts));
    return text === "" ? [] : text.slice(0, -1).split("\n");
  }

  /** The compressed pieces in order, read back where spilled (a run of them with one read). */
  #reads(): Array<Promise<Uint8Array>> {
    const run = this.#run;
    const reads: Array<Promise<Uint8Array>> = [];
    this.#pieces.forEach((piece, i) => {
      if (piece !== SPILLED) reads.push(typeof piece === "function" ? piece() : piece);
      else if (i === run?.first) reads.push(run.read(run.at, run.length));
    });
    return reads;
  }

  /** Hands the tail to the deflater as the next piece and starts a new tail. */
  #cut(): void {
    const text = this.#tail;
    this.#tail = new ChunkedText(this.#pool);
    const chunks = text.chunks();
    for (const chunk of chunks) this.#crc = crc32(chunk, this.#crc);
    this.#cutBytes += text.byteLength;
    const [raw, length] = [text.capacity, text.byteLength];
    this.#cuts++;
    const piece = this.#deflater.deflateRaw(chunks, false).then(
      (bytes) => {
        text.release();
        // Once let go, the body counts nothing more (its count was zeroed).
        if (!this.#gone) this.#count(bytes.length - raw, bytes.length - length);
        return bytes;
      },
      (error: unknown) => {
        text.release();
        if (!this.#gone) this.#count(-raw, -length);
        throw error;
      },
    );
    // Awaited by `finish`; until then a failure must not count as unhandled.
    piece.catch(() => {});
    this.#pieces.push(piece);
    this.#untaken.push({
      index: this.#pieces.length - 1,
      bytes: piece,
      lines: this.#lines - this.#cutLines,
      totalLines: this.#lines,
      textCrc: this.#crc >>> 0,
      textBytes: this.#cutBytes,
    });
    this.#cutLines = this.#lines;
  }

  /** Drops the pieces and zeroes this body's count; completions after this count nothing. */
  #letGo(): void {
    this.#gone = true;
    this.#pieces.length = 0;
    this.#run = undefined;
    this.#untaken = [];
    this.#count(-this.#memory, -this.#bounded);
  }

  /** Moves the memory (`delta`) and the bounded count (`bounded`) of this body and its account. */
  #count(delta: number, bounded: number): void {
    this.#memory += delta;
    this.#bounded += bounded;
    if (this.#account) {
      this.#account.bytes += delta;
      this.#account.held += bounded;
    }
  }

  #check(what: string): void {
    if (this.#state !== "open") {
      throw new Error(`cannot ${what} a batch body that was already ${this.#state}`);
    }
  }
}

/** Reads `length` bytes at `at` back from where spilled pieces were written. */
export type SpillReader = (at: number, length: number) => Promise<Uint8Array>;

/**
 * What a `SpillReader` rejects with when the file spilled pieces were
 * written to is gone (removed while recording): the batch cannot be
 * finished, and nothing will recover it later.
 */
export class SpillLostError extends Error {
  constructor(readonly path: string, override readonly cause: unknown) {
    super(`${path} is gone: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = "SpillLostError";
  }
}

/** Marks a piece slot whose bytes are part of the body's spilled run. */
const SPILLED = 0;

interface SpilledRun {
  readonly first: number;
  count: number;
  readonly at: number;
  length: number;
  readonly read: SpillReader;
}

/** A reader of one spilled piece (one that is not part of the run). */
function readerOf(read: SpillReader, at: number, length: number): () => Promise<Uint8Array> {
  return () => read(at, length);
}
