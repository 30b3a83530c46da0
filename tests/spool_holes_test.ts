/**
 * A spooled batch that never reaches the archive (its file damaged, or
 * removed by hand) leaves a `dropped` line in its stream, as every other
 * loss does: the storage stage run alone, draining a real spool in a temp
 * dir into the local archive or s3rver, then `verify` over what was stored.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { Storage } from "../src/cli/stages/storage.ts";
import { gzipLines } from "../src/archive/encode.ts";
import { planKey } from "../src/archive/keys.ts";
import { Spool } from "../src/store/spool.ts";
import { parseConfig } from "../src/config.ts";
import type { Config } from "../src/config_types.ts";
import { Telemetry } from "../src/ops/events.ts";
import { Metrics } from "../src/ops/metrics.ts";
import { verifyFromArgs } from "../src/cli/verify.ts";
import type { Report } from "../src/verify/audit.ts";
import { readArchive } from "./support/collector.ts";
import { TestS3 } from "./support/s3.ts";
import { listFiles, tempDir } from "./support/temp.ts";
import { waitFor } from "./support/wait.ts";

const BTC = "btcusdt@depth20@100ms";
const STEP_US = 100_000;

function configFor(dataDir: string, env: Record<string, string> = {}): Config {
  return parseConfig({
    SYMBOL: "BTCUSDT",
    DEPTH_LEVEL: "20",
    DATA_DIR: dataDir,
    METRICS_ADDR: "off",
    INSTANCE_ID: "test-box",
    BINANCE_WS_URL: "ws://127.0.0.1:9",
    BINANCE_REST_URL: "http://127.0.0.1:9",
    ...env,
  });
}

interface Spooled {
  readonly name: string;
  readonly messages: number;
  readonly firstRecvTs: number;
  readonly lastRecvTs: number;
}

/** Spools `count` partial-book lines of BTC from `first` (µs), 100 ms apart, as the uploader does. */
async function spoolBatch(spool: Spool, first: number, count: number, seq: number) {
  const times = Array.from({ length: count }, (_, i) => first + i * STEP_US);
  const lines = times.map((t, i) =>
    `{"recv_ts":${t},"stream":"${BTC}","data":{"lastUpdateId":${
      seq * 1000 + i
    },"bids":[],"asks":[]}}`
  );
  const key = planKey({
    prefix: "binance",
    market: "spot",
    streamType: "depth20@100ms",
    symbol: "BTCUSDT",
    firstRecvTs: first,
    instanceId: "test-box",
    seq,
  });
  const meta = {
    messages: count,
    events: 0,
    firstRecvTs: first,
    lastRecvTs: times.at(-1)!,
    firstUpdateId: seq * 1000,
    lastUpdateId: seq * 1000 + count - 1,
  };
  const before = new Set(spool.names());
  assert.ok(await spool.write({ key, body: await gzipLines(lines, 5), meta, stream: BTC }));
  const name = spool.names().find((n) => !before.has(n))!;
  return {
    name,
    messages: count,
    firstRecvTs: first,
    lastRecvTs: meta.lastRecvTs,
  } satisfies Spooled;
}

/**
 * Four batches of BTC spooled by an earlier run: the second truncated (its
 * header intact), the third overwritten with random bytes (only its name
 * tells what it held); the first and last intact.
 */
async function damagedSpool(dataDir: string): Promise<Spooled[]> {
  const spool = await Spool.open(join(dataDir, "spool"), { maxBytes: 10_000_000 });
  const t0 = (Date.now() - 60_000) * 1000;
  const batches = [
    await spoolBatch(spool, t0, 10, 0),
    await spoolBatch(spool, t0 + 10 * STEP_US, 20, 1),
    await spoolBatch(spool, t0 + 30 * STEP_US, 10, 2),
    await spoolBatch(spool, t0 + 40 * STEP_US, 10, 3),
  ];
  const truncated = join(dataDir, "spool", batches[1].name);
  const bytes = await Deno.readFile(truncated);
  await Deno.writeFile(truncated, bytes.subarray(0, bytes.length - 7));
  await Deno.writeFile(
    join(dataDir, "spool", batches[2].name),
    crypto.getRandomValues(new Uint8Array(500)),
  );
  return batches;
}

function telemetered(): { metrics: Metrics; telemetry: Telemetry } {
  const metrics = new Metrics();
  return { metrics, telemetry: new Telemetry({ metrics, market: "spot", now: Date.now }) };
}

/** Opens storage on `config`, waits for the spool to drain, stores what is open and closes. */
async function drainOnce(config: Config): Promise<Telemetry> {
  const background = new AbortController();
  const parts = telemetered();
  await using storage = await Storage.open(config, {
    signal: background.signal,
    ...parts,
    now: Date.now,
  });
  await waitFor(() => storage.backlog() === 0, 10_000, "the spool to drain");
  const left = await storage.flush(Date.now() + 5000);
  assert.deepEqual(left, []);
  background.abort();
  await storage.close(left);
  return parts.telemetry;
}

/** The `dropped` lines of BTC, as facts. */
function droppedFacts(values: ReadonlyArray<Record<string, unknown>>) {
  return values
    .filter((v) => v.event === "dropped" && v.stream === BTC)
    .map((v) => ({
      reason: v.reason,
      messages: v.messages,
      firstRecvTs: v.first_recv_ts,
      lastRecvTs: v.last_recv_ts,
    }))
    .sort((a, b) => Number(a.firstRecvTs) - Number(b.firstRecvTs));
}

function expectedFacts(lost: readonly Spooled[]) {
  return lost.map((b) => ({
    reason: "spool file damaged",
    messages: b.messages,
    firstRecvTs: b.firstRecvTs,
    lastRecvTs: b.lastRecvTs,
  }));
}

async function verifyJson(config: Config): Promise<Report> {
  let printed = "";
  const code = await verifyFromArgs(config, ["--json"], { print: (text) => printed += text });
  const report = JSON.parse(printed) as Report;
  assert.equal(code, 0, printed);
  return report;
}

/**
 * The hole the damaged files left is explained by their `dropped` lines (so
 * is the silence from the last line to the batch carrying them, written now).
 */
function assertExplained(report: Report, batches: readonly Spooled[]): void {
  assert.ok(report.ok, JSON.stringify(report.problems, null, 1));
  const hole = report.problems.find((p) =>
    p.stream === BTC && p.kind === "hole" && p.untilRecvTs === batches[3].firstRecvTs
  );
  assert.ok(hole, JSON.stringify(report.problems, null, 1));
  assert.equal(hole.recvTs, batches[0].lastRecvTs);
  assert.ok(hole.explained);
  assert.match(
    hole.detail,
    /explained by a dropped line: \d+ messages lost \(spool file damaged\)/,
  );
}

Deno.test("a damaged spool file drained into the local archive leaves a dropped line, and verify explains the hole", async () => {
  await using tmp = await tempDir();
  const batches = await damagedSpool(tmp.path);
  const telemetry = await drainOnce(configFor(tmp.path));
  assert.equal(telemetry.state.droppedMessages, 30);
  const quarantined = await listFiles(join(tmp.path, "spool", "quarantine"));
  assert.deepEqual(quarantined, [batches[1].name, batches[2].name].sort());
  const lines = await readArchive(join(tmp.path, "archive"));
  const values = lines.map((l) => l.value as Record<string, unknown>);
  assert.deepEqual(droppedFacts(values), expectedFacts(batches.slice(1, 3)));
  assertExplained(await verifyJson(configFor(tmp.path)), batches);
});

Deno.test({
  name: "a damaged spool file drained into S3 leaves a dropped line, and verify explains the hole",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using s3 = await TestS3.start();
    await using tmp = await tempDir();
    const batches = await damagedSpool(tmp.path);
    const config = configFor(tmp.path, s3.env());
    await drainOnce(config);
    const values: Array<Record<string, unknown>> = [];
    for (const key of await s3.keys()) {
      const { body } = await s3.get(key);
      const text = new TextDecoder().decode(gunzipSync(body));
      for (const line of text.trimEnd().split("\n")) values.push(JSON.parse(line));
    }
    assert.deepEqual(droppedFacts(values), expectedFacts(batches.slice(1, 3)));
    assertExplained(await verifyJson(config), batches);
  },
});
