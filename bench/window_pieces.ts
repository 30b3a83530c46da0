/**
 * What the crash journal's pieces cost in archive size, and what carrying
 * the deflate window from one piece to the next would save. The journal
 * deflates each open batch's new text every 250 ms as a piece of its own,
 * with an empty window (any thread may deflate any piece, and
 * Deno's node:zlib ignores a preset `dictionary`), and the object is the
 * pieces end to end. A quiet stream's piece holds a few lines, so it cannot
 * refer back to the lines before it, which are its closest match.
 *
 * Three ways to deflate the same lines cut into pieces of `n` lines:
 *
 * - `alone`: each piece in a fresh context, as the journal does;
 * - `stream`: one context for the batch, flushed after each piece: the
 *   window carries over (the best case, but a context per open batch holds
 *   ~270 KB at level 5);
 * - `tail 4K`: each piece in a fresh context that first deflates the last
 *   4 KiB before the piece and throws that output away. The inflater has
 *   those bytes in its window already, so the piece may refer to them.
 *
 * Each way's pieces, end to end, are inflated and compared with the lines:
 * a size is printed only for output that decodes to the same bytes.
 *
 *   deno run -A bench/window_pieces.ts
 *
 * Not part of CI: a measurement for choosing a design.
 */

import zlib from "node:zlib";
import { concatBytes } from "../src/archive/bytes.ts";
import { partialDepthFeed } from "../tests/support/fake_exchange.ts";
import { BOOK_LEVELS } from "./loads.ts";

const LEVEL = 5;
const TAIL = 4096;
const LINES = 3000;

/** Raw deflate through the public stream API, one flush at a time. */
class Deflate {
  readonly #stream = zlib.createDeflateRaw({ level: LEVEL });
  #out: Uint8Array[] = [];

  constructor() {
    this.#stream.on("data", (chunk: Uint8Array) => this.#out.push(chunk));
  }

  /** Deflates `input` and flushes with `flush`; returns what came out. */
  async write(input: Uint8Array, flush: number): Promise<Uint8Array> {
    this.#stream.write(input);
    await new Promise<void>((resolve) => this.#stream.flush(flush, () => resolve()));
    const out = concatBytes(this.#out);
    this.#out = [];
    return out;
  }

  reset(): void {
    this.#stream.reset();
  }

  close(): void {
    this.#stream.close();
  }
}

type Way = (pieces: Uint8Array[]) => Promise<Uint8Array[]>;

const { Z_FULL_FLUSH, Z_SYNC_FLUSH } = zlib.constants;

const WAYS: Record<string, Way> = {
  async alone(pieces) {
    const deflate = new Deflate();
    const out: Uint8Array[] = [];
    for (const piece of pieces) {
      out.push(await deflate.write(piece, Z_FULL_FLUSH));
      deflate.reset();
    }
    deflate.close();
    return out;
  },
  async stream(pieces) {
    const deflate = new Deflate();
    const out: Uint8Array[] = [];
    for (const piece of pieces) out.push(await deflate.write(piece, Z_SYNC_FLUSH));
    deflate.close();
    return out;
  },
  async "tail 4K"(pieces) {
    const deflate = new Deflate();
    const out: Uint8Array[] = [];
    let before: Uint8Array = new Uint8Array(0);
    for (const piece of pieces) {
      if (before.length > 0) await deflate.write(before, Z_SYNC_FLUSH);
      out.push(await deflate.write(piece, Z_FULL_FLUSH));
      deflate.reset();
      const joined = concatBytes([before, piece]);
      before = joined.subarray(Math.max(0, joined.length - TAIL));
    }
    deflate.close();
    return out;
  },
};

/** The pieces end to end, closed with an empty final block, inflated. */
function inflated(out: Uint8Array[]): Uint8Array {
  const finalEmpty = new Uint8Array([0x03, 0x00]);
  return new Uint8Array(zlib.inflateRawSync(concatBytes([...out, finalEmpty])));
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

async function measure(label: string, lines: string[]): Promise<void> {
  const encoder = new TextEncoder();
  for (const perPiece of [1, 2, 3, 10, 100]) {
    const pieces: Uint8Array[] = [];
    for (let i = 0; i < lines.length; i += perPiece) {
      pieces.push(encoder.encode(lines.slice(i, i + perPiece).join("\n") + "\n"));
    }
    const text = concatBytes(pieces);
    const cells = [`${label}, ${perPiece} a piece`];
    for (const [name, way] of Object.entries(WAYS)) {
      const out = await way(pieces);
      if (!sameBytes(inflated(out), text)) throw new Error(`${name} does not decode to the lines`);
      const bytes = out.reduce((n, p) => n + p.length, 0);
      cells.push(`${name} ${(text.length / bytes).toFixed(2)}×`);
    }
    // deno-lint-ignore no-console -- the report is the output
    console.log(cells.join(" | "));
  }
}

const feed = partialDepthFeed({ rate: 10, levels: BOOK_LEVELS });
const synthetic = Array.from(
  { length: LINES },
  (_, n) => `{"stream":"b0001usdt@depth20@100ms","data":${feed.next(n)}}`,
);
const fixture = new URL(
  "../tests/fixtures/spot_diff_btcusdt_2024-08-08.ndjson.gz",
  import.meta.url,
);
const real = new TextDecoder().decode(zlib.gunzipSync(await Deno.readFile(fixture)))
  .split("\n").filter((line) => line !== "").slice(0, LINES);

// deno-lint-ignore no-console -- the report is the output
console.log(`compression ratio (raw ÷ deflated) at level ${LEVEL}, ${LINES} lines each`);
await measure("bench's partial book", synthetic);
await measure("real spot diffs (BTCUSDT)", real);
