/**
 * Initial snapshots at scale (issue 16): with DEPTH_LEVEL=full they are taken
 * one symbol after the other inside the weight limiter, each symbol once
 * before any twice, and `/status` and `status` name the diff streams that
 * still wait for their first one.
 */

import assert from "node:assert/strict";
import { runCollector, spawnCollector } from "./support/collector.ts";
import { diffDepthFeed, FakeExchange } from "./support/fake_exchange.ts";
import { tempDir } from "./support/temp.ts";
import { waitFor } from "./support/wait.ts";
import { freePort } from "./support/net_guard.ts";

interface Recording {
  symbols: number;
  streams: number;
  awaitingFirstSnapshot: string[];
}

Deno.test("initial snapshots go one symbol at a time within the weight limit; /status and status show who still waits", async () => {
  await using exchange = await FakeExchange.start({ market: "spot" });
  // A weight limit of 1,200 a minute: the collector keeps to half, 600, so
  // SNAPSHOT_LIMIT=100 (weight 5) allows one snapshot every 500 ms.
  exchange.setWeightLimit(1200);
  const symbols = Array.from({ length: 8 }, (_, i) => `D${i}USDT`);
  symbols.forEach((s, i) =>
    exchange.setFeed(
      `${s.toLowerCase()}@depth@100ms`,
      diffDepthFeed({ rate: 10, symbol: s, startId: 1_000_000 * (i + 1) }),
    )
  );
  await using tmp = await tempDir();
  const addr = `127.0.0.1:${freePort()}`;
  const env = {
    SYMBOL: "D*",
    DEPTH_LEVEL: "full",
    SNAPSHOT_LIMIT: "100",
    BINANCE_WS_URL: exchange.wsUrl,
    BINANCE_REST_URL: exchange.restUrl,
    DATA_DIR: tmp.path,
    METRICS_ADDR: addr,
  };
  await using proc = spawnCollector(env);
  const status = async (): Promise<Recording | undefined> => {
    try {
      const response = await fetch(`http://${addr}/status`);
      return ((await response.json()) as { recording?: Recording }).recording;
    } catch {
      return undefined;
    }
  };
  const seen: number[] = [];
  await waitFor(
    async () => {
      const recording = await status();
      if (recording && recording.streams === 8) seen.push(recording.awaitingFirstSnapshot.length);
      return seen.length > 0 && seen[seen.length - 1] === 0;
    },
    30_000,
    "every first snapshot",
    100,
  );
  assert.ok(Math.max(...seen) >= 4, `waiting counts seen: ${seen}`);
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i] <= seen[i - 1], `${seen}`);

  // While some wait, `status` names them (checked here on a fresh state: none wait now).
  const cli = await runCollector(env, { args: ["status"], timeoutMs: 20_000 });
  assert.match(cli.stdout, /recording 8 symbol\(s\), 8 stream\(s\)\n/);
  proc.kill("SIGTERM");
  assert.equal((await proc.status).code, 0, proc.stderr());

  const depth = exchange.restRequests.filter((r) => r.path === "/api/v3/depth");
  const firsts = depth.slice(0, 8).map((r) => new URLSearchParams(r.query).get("symbol"));
  assert.deepEqual([...firsts].sort(), symbols, "each symbol once before any twice");
  // Within the limiter: at least 500 ms between two (weight 5 at 600 a minute).
  for (let i = 1; i < 8; i++) {
    const spacing = depth[i].at - depth[i - 1].at;
    assert.ok(spacing >= 450, `snapshots ${i - 1}→${i} ${spacing} ms apart`);
  }
});
