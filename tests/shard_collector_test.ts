/**
 * SHARD=k/N across instances sharing one bucket, pattern selection, and a
 * symbol with non-ASCII letters from the exchange to the archive and back
 * through `verify` (issue 16).
 */

import assert from "node:assert/strict";
import { gunzipSync } from "node:zlib";
import { parseKey, planKey } from "../src/archive/keys.ts";
import { shardOf } from "../src/binance/shard.ts";
import { Auditor } from "../src/verify/audit.ts";
import { readArchive, runCollector, spawnCollector } from "./support/collector.ts";
import { FakeExchange, partialDepthFeed } from "./support/fake_exchange.ts";
import { duckdb } from "./support/duckdb.ts";
import { TestS3 } from "./support/s3.ts";
import { tempDir } from "./support/temp.ts";
import { waitFor } from "./support/wait.ts";

const NON_ASCII = "币安人生USDT";
const name = (symbol: string) => `${symbol.toLowerCase()}@depth5`;

Deno.test({
  name:
    "three instances SHARD=0/3,1/3,2/3 on one bucket record every selected symbol exactly once, and verify checks the union",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await FakeExchange.start({ market: "spot" });
    const matching = [
      ...Array.from({ length: 24 }, (_, i) => `C${i}USDT`),
      "ETHUSDT",
      "WBTCUSDT",
      NON_ASCII,
    ];
    const notMatching = ["BTCUSDT", "BTCDOMUSDT", "ETHBTC", "BNBFDUSD"];
    [...matching, ...notMatching].forEach((s, i) =>
      exchange.setFeed(name(s), partialDepthFeed({ rate: 4, levels: 2, startId: 1000 * (i + 1) }))
    );
    // The fake lists a few symbols of its own; this market has only the ones above.
    exchange.delistSymbol("BNBUSDT");
    await using s3 = await TestS3.start();
    await using data = await tempDir();
    const env = (k: number) => ({
      ...s3.env(),
      SYMBOL: "*usdt",
      SYMBOL_EXCLUDE: "BTC*",
      SHARD: `${k}/3`,
      INSTANCE_ID: `shard-${k}`,
      DEPTH_LEVEL: "5",
      UPDATE_SPEED_MS: "1000",
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: `${data.path}/${k}`,
      BATCH_SECONDS: "2",
      METRICS_ADDR: "off",
    });
    const procs = [0, 1, 2].map((k) => spawnCollector(env(k)));
    try {
      await waitFor(
        () => matching.every((s) => exchange.sentCountFor(name(s)) >= 8),
        30_000,
        "every matching symbol flowing",
      );
      for (const proc of procs) proc.kill("SIGTERM");
      for (const proc of procs) assert.equal((await proc.status).code, 0, proc.stderr());
    } finally {
      for (const proc of procs) await proc[Symbol.asyncDispose]();
    }

    // Each symbol in exactly one instance's objects: the one its hash names.
    const instancesOf = new Map<string, Set<string>>();
    for (const key of await s3.keys()) {
      const parts = parseKey(key);
      assert.ok(parts, `key outside the layout: ${key}`);
      const set = instancesOf.get(parts.symbol) ?? new Set();
      set.add(parts.instanceId);
      instancesOf.set(parts.symbol, set);
    }
    assert.deepEqual([...instancesOf.keys()].sort(), [...matching].sort());
    for (const [symbol, instances] of instancesOf) {
      assert.deepEqual([...instances], [`shard-${shardOf(symbol, 3)}`], symbol);
    }
    // The non-ASCII symbol sits in its key as UTF-8 (NFC), and its lines name it as Binance does.
    const keys = (await s3.keys()).filter((k) => k.includes(`/symbol=${NON_ASCII}/`));
    assert.ok(keys.length > 0, "no object of the non-ASCII symbol");
    const first = new TextDecoder().decode(gunzipSync((await s3.get(keys[0])).body));
    assert.ok(first.includes(`"stream":"${name(NON_ASCII)}"`));

    // verify over the bucket: the union is whole, each stream from one instance.
    const verified = await runCollector(
      { ...env(0), SHARD: "0/1" },
      { args: ["verify", "--json"], timeoutMs: 60_000 },
    );
    assert.equal(verified.code, 0, verified.stdout + verified.stderr);
    const report = JSON.parse(verified.stdout) as {
      streams: Array<{ symbol: string; instances: string[] }>;
    };
    assert.deepEqual(report.streams.map((s) => s.symbol).sort(), [...matching].sort());
    for (const stream of report.streams) assert.equal(stream.instances.length, 1, stream.symbol);
    const one = await runCollector(
      { ...env(0), SHARD: "0/1" },
      { args: ["verify", "--symbol", NON_ASCII.toLowerCase()], timeoutMs: 60_000 },
    );
    assert.equal(one.code, 0, one.stdout + one.stderr);
    assert.match(one.stdout, new RegExp(`${name(NON_ASCII)}`));
  },
});

Deno.test("a non-ASCII symbol is recorded on the local filesystem and read back by verify and DuckDB", async () => {
  await using exchange = await FakeExchange.start({ market: "spot" });
  exchange.setFeed(name(NON_ASCII), partialDepthFeed({ rate: 10, levels: 2 }));
  await using tmp = await tempDir();
  const env = {
    SYMBOL: NON_ASCII,
    DEPTH_LEVEL: "5",
    UPDATE_SPEED_MS: "1000",
    BINANCE_WS_URL: exchange.wsUrl,
    BINANCE_REST_URL: exchange.restUrl,
    DATA_DIR: tmp.path,
    BATCH_SECONDS: "1",
    METRICS_ADDR: "off",
  };
  await using proc = spawnCollector(env);
  await waitFor(() => exchange.sentCountFor(name(NON_ASCII)) >= 20, 15_000, "messages");
  proc.kill("SIGTERM");
  assert.equal((await proc.status).code, 0, proc.stderr());
  const lines = await readArchive(`${tmp.path}/archive`);
  const data = lines.filter((l) => l.value.data !== undefined);
  assert.ok(data.length >= 20);
  assert.ok(data.every((l) => l.key.includes(`/symbol=${NON_ASCII}/`)), data[0]?.key);
  const verified = await runCollector(env, { args: ["verify"], timeoutMs: 30_000 });
  assert.equal(verified.code, 0, verified.stdout + verified.stderr);
  assert.match(verified.stdout, /OK: the archive is whole/);

  // DuckDB reads the partition value back as the symbol itself.
  const rows = await duckdb(
    `SELECT symbol, count(data) AS messages FROM read_json('${tmp.path}/archive/**/*.ndjson.gz', ` +
      `hive_partitioning = true, union_by_name = true) GROUP BY symbol`,
    tmp.path,
  );
  assert.deepEqual(rows, [{ symbol: NON_ASCII, messages: String(data.length) }]);
});

Deno.test("verify reports a stream that two instances recorded at the same time", () => {
  const key = (instanceId: string, firstRecvTs: number) =>
    planKey({
      prefix: "binance",
      market: "spot",
      streamType: "depth5",
      symbol: "ETHUSDT",
      firstRecvTs,
      instanceId,
      seq: 0,
    });
  const line = (ts: number, id: number) =>
    `{"recv_ts":${ts},"stream":"ethusdt@depth5","data":{"lastUpdateId":${id},"bids":[],"asks":[]}}`;
  const t0 = Date.UTC(2026, 0, 1) * 1000;
  const feed = (auditor: Auditor, objects: Array<[string, number[]]>) => {
    for (const [instance, times] of objects) {
      auditor.beginObject(key(instance, times[0]));
      times.forEach((ts, i) => auditor.line(line(ts, ts + i), i + 1));
      auditor.endObject();
    }
    return auditor.report();
  };
  // One after the other (a symbol handed to another shard): fine.
  const handover = feed(new Auditor(), [["a", [t0, t0 + 500_000]], ["b", [t0 + 600_000]]]);
  assert.equal(handover.ok, true, JSON.stringify(handover.problems));
  assert.deepEqual(handover.streams[0].instances, ["a", "b"]);
  // At the same time: the symbol was recorded twice.
  const both = feed(new Auditor(), [["a", [t0, t0 + 900_000]], ["b", [t0 + 400_000]]]);
  assert.equal(both.ok, false);
  // (b's messages repeat a's, hence duplicates too.)
  assert.ok(both.problems.some((p) => p.kind === "overlap" && /instances a and b/.test(p.detail)));
});
