/**
 * How long `verify` takes over one day of one diff stream: 864,000 messages
 * (10/s) in 1,440 one-minute objects, plus an hourly REST snapshot line, laid
 * out exactly as the collector writes it (the real planKey, dataLine,
 * gzipLines and local sink). The day is generated once and cached under the
 * system temp directory; a marker file says it is complete.
 */

import { join } from "node:path";
import { planKey } from "../src/archive/keys.ts";
import { dataLine, gzipLines } from "../src/archive/encode.ts";
import { snapshotStreamOf } from "../src/archive/meta.ts";
import { localSink } from "../src/store/local.ts";
import { startTaskArgs } from "../tests/support/collector.ts";
import { diffDepthFeed } from "../tests/support/fake_exchange.ts";
import { baseEnv, ROOT } from "./child.ts";
import { measureChild } from "./proc.ts";

const DAY = "2024-08-08";
const RATE = 10;
const OBJECT_SECONDS = 60;
const MESSAGES = 86_400 * RATE;
const OBJECTS = 86_400 / OBJECT_SECONDS;
const STREAM = "btcusdt@depth@100ms";
const CACHE_NAME = "l2-bench-verify-day-v1";

export interface VerifyResult {
  readonly messages: number;
  readonly objects: number;
  readonly archiveBytes: number;
  readonly generatedNow: boolean;
  readonly generateSeconds?: number;
  readonly wallSeconds: number;
  readonly cpuSeconds: number;
  readonly peakRssBytes: number;
  readonly exitCode: number;
  /** What verify itself reported: messages counted and whether the day is whole. */
  readonly reportedMessages?: number;
  readonly reportedOk?: boolean;
}

export async function benchVerify(log: (text: string) => void): Promise<VerifyResult> {
  const dataDir = join(Deno.env.get("TMPDIR") ?? "/tmp", CACHE_NAME);
  const marker = join(dataDir, "complete.json");
  let generatedNow = false;
  let generateSeconds: number | undefined;
  if (!await exists(marker)) {
    log(`  generating one day of ${STREAM} into ${dataDir} (cached for later runs)`);
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    const started = performance.now();
    await generateDay(join(dataDir, "archive"));
    generateSeconds = (performance.now() - started) / 1000;
    await Deno.writeTextFile(marker, JSON.stringify({ messages: MESSAGES, objects: OBJECTS }));
    generatedNow = true;
  } else {
    log(`  using the cached day in ${dataDir}`);
  }
  const archiveBytes = await sizeOf(join(dataDir, "archive"), ".ndjson.gz");

  log("  timing `verify --json` over it");
  const child = new Deno.Command(Deno.execPath(), {
    args: [...startTaskArgs(), "verify", "--json"],
    cwd: ROOT.pathname,
    clearEnv: true,
    env: {
      ...baseEnv(),
      DATA_DIR: dataDir,
      DEPTH_LEVEL: "full",
      SYMBOL: "BTCUSDT",
      MARKET: "spot",
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const { output, wallSeconds, cpuSeconds: cpu, peakRssBytes } = await measureChild(child);

  let reportedMessages: number | undefined;
  let reportedOk: boolean | undefined;
  try {
    const report = JSON.parse(new TextDecoder().decode(output.stdout)) as {
      ok?: boolean;
      streams?: { messages?: number }[];
    };
    reportedOk = report.ok;
    reportedMessages = report.streams?.reduce((n, s) => n + (s.messages ?? 0), 0);
  } catch {
    log(
      `  verify printed no JSON report: ${new TextDecoder().decode(output.stderr).slice(0, 500)}`,
    );
  }
  return {
    messages: MESSAGES,
    objects: OBJECTS,
    archiveBytes,
    generatedNow,
    generateSeconds,
    wallSeconds,
    // Sampled every 100 ms, so the last tenth of a second may be missing.
    cpuSeconds: cpu,
    peakRssBytes,
    exitCode: output.code,
    reportedMessages,
    reportedOk,
  };
}

/** Writes the day through the real local sink, one object per minute. */
async function generateDay(archiveDir: string): Promise<void> {
  const sink = localSink(archiveDir);
  const feed = diffDepthFeed({ rate: RATE, symbol: "BTCUSDT" });
  const dayStartUs = Date.parse(`${DAY}T00:00:00Z`) * 1000;
  const perObject = RATE * OBJECT_SECONDS;
  let lastU = 0;
  for (let seq = 0; seq < OBJECTS; seq++) {
    const lines: string[] = [];
    let firstUpdateId: number | undefined;
    let firstRecvTs = 0;
    let lastRecvTs = 0;
    const push = (recvTs: number, stream: string, payload: string) => {
      if (lines.length === 0) firstRecvTs = recvTs;
      lastRecvTs = recvTs;
      lines.push(dataLine(recvTs, stream, payload));
    };
    for (let i = 0; i < perObject; i++) {
      const n = seq * perObject + i;
      // Receive times 100 ms apart with a few ms of deterministic jitter.
      const recvTs = dayStartUs + n * 100_000 + ((n * 7919) % 5000);
      const payload = feed.next(n);
      const ids = JSON.parse(payload) as { U: number; u: number };
      if (n === 0) lastU = ids.U - 1;
      // The hourly REST snapshot, stored with the diffs as the collector does.
      if (i === 0 && seq % 60 === 0) {
        push(recvTs - 1, snapshotStreamOf("BTCUSDT"), snapshotText(lastU));
      }
      firstUpdateId ??= ids.U;
      push(recvTs, STREAM, payload);
      lastU = ids.u;
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
      messages: lines.length,
      events: 0,
      firstRecvTs,
      lastRecvTs,
      firstUpdateId,
      lastUpdateId: lastU,
    });
  }
}

/** A 1,000-level spot `/depth` body whose id lines up with the diff stream. */
function snapshotText(lastUpdateId: number): string {
  const level = (price: number, i: number) =>
    `["${(price / 100).toFixed(8)}","${((i * 7 % 500) / 100 + 0.001).toFixed(8)}"]`;
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

async function sizeOf(dir: string, suffix: string): Promise<number> {
  let total = 0;
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) total += await sizeOf(path, suffix);
    else if (entry.name.endsWith(suffix)) total += (await Deno.stat(path)).size;
  }
  return total;
}
