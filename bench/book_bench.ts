/**
 * How long `book` takes over one day of one diff stream: 864,000 diffs (10/s)
 * in 1,440 one-minute objects with an hourly 1,000-level REST snapshot that is
 * the true book at its id (the fake exchange's kept book, fed the same diffs),
 * so all 23 later snapshots are checked and must pass. Laid out as the
 * collector writes it (planKey, dataLine, gzipLines, the local sink). The day
 * is generated once and cached under the system temp directory.
 *
 * Target: under 30 s wall and 200 MiB peak RSS, with `--levels 10 --every 1s`
 * (86,400 CSV rows written to a file).
 */

import { join } from "node:path";
import { planKey } from "../src/archive/keys.ts";
import { dataLine, gzipLines } from "../src/archive/encode.ts";
import { snapshotStreamOf } from "../src/archive/meta.ts";
import { localSink } from "../src/store/local.ts";
import { startTaskArgs } from "../tests/support/collector.ts";
import { diffDepthFeed } from "../tests/support/fake_exchange.ts";
import { FakeBook } from "../tests/support/fake_book.ts";
import { baseEnv, ROOT } from "./child.ts";
import { measureChild } from "./proc.ts";

const DAY = "2024-08-08";
const RATE = 10;
const OBJECT_SECONDS = 60;
const MESSAGES = 86_400 * RATE;
const OBJECTS = 86_400 / OBJECT_SECONDS;
const STREAM = "btcusdt@depth@100ms";
const CACHE_NAME = "l2-bench-book-day-v1";
const SNAPSHOT_LEVELS = 1000;

export interface BookBenchResult {
  readonly messages: number;
  readonly objects: number;
  readonly generatedNow: boolean;
  readonly generateSeconds?: number;
  readonly wallSeconds: number;
  readonly cpuSeconds: number;
  readonly peakRssBytes: number;
  readonly exitCode: number;
  readonly rows: number;
  /** The summary line `book` printed (checks passed/failed, downtime). */
  readonly summary: string;
}

export async function benchBook(log: (text: string) => void): Promise<BookBenchResult> {
  const dataDir = join(Deno.env.get("TMPDIR") ?? "/tmp", CACHE_NAME);
  const marker = join(dataDir, "complete.json");
  let generatedNow = false;
  let generateSeconds: number | undefined;
  if (!await exists(marker)) {
    log(`  generating one day of ${STREAM} with true snapshots into ${dataDir} (cached)`);
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    const started = performance.now();
    await generateDay(join(dataDir, "archive"));
    generateSeconds = (performance.now() - started) / 1000;
    await Deno.writeTextFile(marker, JSON.stringify({ messages: MESSAGES, objects: OBJECTS }));
    generatedNow = true;
  } else {
    log(`  using the cached day in ${dataDir}`);
  }

  log("  timing `book --levels 10 --every 1s` over it");
  const outFile = await Deno.makeTempFile({ prefix: "l2-bench-book-", suffix: ".csv" });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      ...startTaskArgs(),
      "book",
      "--symbol",
      "BTCUSDT",
      "--from",
      `${DAY}T00:00:00Z`,
      "--to",
      "2024-08-09T00:00:00Z",
      "--levels",
      "10",
      "--every",
      "1s",
      "--out",
      outFile,
    ],
    cwd: ROOT.pathname,
    clearEnv: true,
    env: { ...baseEnv(), DATA_DIR: dataDir },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const { output, wallSeconds, cpuSeconds: cpu, peakRssBytes } = await measureChild(child);
  const stderr = new TextDecoder().decode(output.stderr);
  const summary = stderr.split("\n").find((line) => line.includes(" row(s); ")) ??
    stderr.slice(-500);
  const rows = (await Deno.readTextFile(outFile)).split("\n").length - 2; // header, last newline
  await Deno.remove(outFile);
  return {
    messages: MESSAGES,
    objects: OBJECTS,
    generatedNow,
    generateSeconds,
    wallSeconds,
    cpuSeconds: cpu,
    peakRssBytes,
    exitCode: output.code,
    rows,
    summary: summary.replace(/^book: /, ""),
  };
}

/** Writes the day through the real local sink, one object per minute. */
async function generateDay(archiveDir: string): Promise<void> {
  const sink = localSink(archiveDir);
  const feed = diffDepthFeed({ rate: RATE, symbol: "BTCUSDT" });
  const dayStartUs = Date.parse(`${DAY}T00:00:00Z`) * 1000;
  const perObject = RATE * OBJECT_SECONDS;
  const first = JSON.parse(feed.next(0)) as { U: number };
  // The book the exchange keeps: a 1,000-level start just before the first diff.
  const book = new FakeBook(initialSnapshot(first.U - 1));
  for (let seq = 0; seq < OBJECTS; seq++) {
    const lines: string[] = [];
    let firstRecvTs = 0;
    let lastRecvTs = 0;
    let firstUpdateId: number | undefined;
    let messages = 0;
    let snapshots = 0;
    const push = (recvTs: number, stream: string, payload: string) => {
      if (lines.length === 0) firstRecvTs = recvTs;
      lastRecvTs = recvTs;
      lines.push(dataLine(recvTs, stream, payload));
    };
    for (let i = 0; i < perObject; i++) {
      const n = seq * perObject + i;
      const recvTs = dayStartUs + n * 100_000 + ((n * 7919) % 5000);
      // The hourly REST snapshot: the true book just before this diff.
      if (i === 0 && seq % 60 === 0) {
        push(recvTs - 1, snapshotStreamOf("BTCUSDT"), book.snapshotText(SNAPSHOT_LEVELS));
        snapshots++;
      }
      const payload = feed.next(n);
      book.apply(payload);
      const ids = JSON.parse(payload) as { U: number };
      firstUpdateId ??= ids.U;
      push(recvTs, STREAM, payload);
      messages++;
    }
    const key = planKey({
      prefix: "binance",
      market: "spot",
      streamType: "depth@100ms",
      symbol: "BTCUSDT",
      firstRecvTs,
      instanceId: "bench",
      seq,
    });
    await sink.put(key, await gzipLines(lines, 6), {
      messages,
      snapshots,
      events: 0,
      firstRecvTs,
      lastRecvTs,
      firstUpdateId,
      lastUpdateId: book.lastUpdateId,
    });
  }
}

/** 1,000 levels a side around 60,000.00, spot formatting. */
function initialSnapshot(lastUpdateId: number): string {
  const level = (cents: number, i: number) =>
    `["${(cents / 100).toFixed(8)}","${((i * 7 % 500) / 100 + 0.001).toFixed(8)}"]`;
  const bids = Array.from({ length: 1000 }, (_, i) => level(6_000_000 - 1 - i, i));
  const asks = Array.from({ length: 1000 }, (_, i) => level(6_000_000 + i, i + 1));
  return `{"lastUpdateId":${lastUpdateId},"bids":[${bids.join(",")}],"asks":[${asks.join(",")}]}`;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}
