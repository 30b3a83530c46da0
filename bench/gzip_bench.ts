/**
 * gzip at every level on two batches of archive lines: 10,000 synthetic
 * partial-book lines (~1.1 KB, the fake exchange's) and the real Binance
 * BTCUSDT diff messages of tests/fixtures (6,495 lines). Real data is what
 * the sweet spot is chosen on: synthetic books compress differently.
 */

import { gzipSync } from "node:zlib";
import { dataLine } from "../src/archive/encode.ts";
import { loadFixtureMessages, partialDepthFeed } from "../tests/support/fake_exchange.ts";
import { BOOK_LEVELS } from "./loads.ts";

export interface GzipLevel {
  readonly level: number;
  /** Input MB (10^6 bytes) compressed per CPU second, best of the repetitions. */
  readonly mbPerSec: number;
  /** Input bytes / output bytes. */
  readonly ratio: number;
}

export interface GzipCorpus {
  readonly name: string;
  readonly lines: number;
  readonly bytes: number;
  readonly levels: readonly GzipLevel[];
}

export interface GzipResult {
  readonly corpora: readonly GzipCorpus[];
  /** The level past which more compression costs far more CPU than it saves bytes. */
  readonly sweetSpot: number;
  readonly reason: string;
}

const FIXTURE = new URL(
  "../tests/fixtures/spot_diff_btcusdt_2024-08-08.ndjson.gz",
  import.meta.url,
);

/**
 * A level is worth its next step up while the step shrinks the output by at
 * least a quarter as much, in percent, as it adds CPU time: 1 % smaller for
 * every 4 % slower.
 */
const BYTES_PER_CPU = 0.25;

export async function benchGzip(options: { repetitions: number }): Promise<GzipResult> {
  const feed = partialDepthFeed({ rate: 10, levels: BOOK_LEVELS });
  const base = Date.parse("2026-01-01T00:00:00Z") * 1000;
  const synthetic = Array.from(
    { length: 10_000 },
    (_, i) => dataLine(base + i * 2_500, "b0001usdt@depth20@100ms", feed.next(i)),
  );
  const real = (await loadFixtureMessages(FIXTURE)).map((m, i) =>
    dataLine(base + i * 100_000, m.stream ?? "btcusdt@depth@100ms", m.data)
  );
  const corpora = [
    measure("synthetic partial book (depth20 lines, 16 levels)", synthetic, options.repetitions),
    measure("real BTCUSDT diff depth (fixture)", real, options.repetitions),
  ];
  const { level, reason } = sweetSpot(corpora[1].levels);
  return { corpora, sweetSpot: level, reason };
}

function measure(name: string, lines: readonly string[], repetitions: number): GzipCorpus {
  const input = new TextEncoder().encode(lines.join("\n") + "\n");
  const levels: GzipLevel[] = [];
  for (let level = 1; level <= 9; level++) {
    let best = Infinity;
    let size = 0;
    for (let r = 0; r < repetitions; r++) {
      const started = performance.now();
      size = gzipSync(input, { level }).length;
      best = Math.min(best, performance.now() - started);
    }
    levels.push({
      level,
      mbPerSec: input.length / 1e6 / (best / 1000),
      ratio: input.length / size,
    });
  }
  return { name, lines: lines.length, bytes: input.length, levels };
}

function sweetSpot(levels: readonly GzipLevel[]): { level: number; reason: string } {
  let chosen = levels[0];
  for (const next of levels.slice(1)) {
    const smallerPct = (1 - chosen.ratio / next.ratio) * 100;
    const slowerPct = (chosen.mbPerSec / next.mbPerSec - 1) * 100;
    if (smallerPct < BYTES_PER_CPU * slowerPct) {
      return {
        level: chosen.level,
        reason: `level ${next.level} would make objects ${smallerPct.toFixed(1)} % smaller ` +
          `for ${slowerPct.toFixed(0)} % more CPU (on real diff data)`,
      };
    }
    chosen = next;
  }
  return { level: chosen.level, reason: "every step up paid for itself" };
}
