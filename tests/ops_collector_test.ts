/**
 * The appliance view of a running collector (subprocess, start-task
 * permissions): /metrics, /healthz and the `status` command while it runs
 * against the fake exchange and S3, and `status` after it stopped.
 */

import assert from "node:assert/strict";
import { FakeExchange, partialDepthFeed } from "./support/fake_exchange.ts";
import { runCollector, spawnCollector } from "./support/collector.ts";
import { TestS3 } from "./support/s3.ts";
import { tempDir } from "./support/temp.ts";
import { delay } from "./support/wait.ts";
import { REQUIRED_METRICS } from "./support/metrics.ts";
import { freePort } from "./support/net_guard.ts";

Deno.test({
  name: "a running collector serves metrics and health, status says ok, then not running",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await FakeExchange.start();
    exchange.setFeed("btcusdt@depth20@100ms", partialDepthFeed({ rate: 20 }));
    await using s3 = await TestS3.start();
    await using tmp = await tempDir();
    const addr = `127.0.0.1:${freePort()}`;
    const env = {
      ...s3.env(),
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: tmp.path,
      BATCH_SECONDS: "1",
      METRICS_ADDR: addr,
      // The per-stream series asserted below (the default labels by market and type).
      METRICS_PER_STREAM: "true",
    };
    const proc = spawnCollector(env);
    let metrics = "";
    const until = Date.now() + 15_000;
    while (Date.now() < until) {
      try {
        metrics = await (await fetch(`http://${addr}/metrics`)).text();
        if (/^l2_batches_stored_total\{sink="s3"\} [1-9]/m.test(metrics)) break;
      } catch {
        // not listening yet
      }
      await delay(200);
    }
    assert.match(
      metrics,
      /^l2_batches_stored_total\{sink="s3"\} [1-9]/m,
      "no batch stored in S3 within 15 s",
    );
    for (const name of REQUIRED_METRICS) {
      assert.match(metrics, new RegExp(`^${name}(\\{[^}]*\\})? `, "m"), `${name} missing`);
    }
    const received = /^l2_messages_received_total\{stream="btcusdt@depth20@100ms"\} (\d+)/m.exec(
      metrics,
    );
    assert.ok(received && Number(received[1]) > 0, "no messages counted");
    assert.match(metrics, /^process_resident_memory_bytes [1-9]\d{6,}/m);

    const healthz = await fetch(`http://${addr}/healthz`);
    const health = await healthz.json();
    assert.equal(healthz.status, 200);
    assert.equal(health.status, "ok", JSON.stringify(health));
    assert.ok(Array.isArray(health.checks) && health.checks.length >= 6);
    const recording = health.checks.find((c: { name: string }) => c.name === "recording");
    assert.deepEqual(recording, {
      name: "recording",
      status: "ok",
      message: "1 stream recorded",
      value: 1,
    });

    const running = await runCollector(env, { args: ["status"] });
    assert.equal(running.code, 0, running.stdout + running.stderr);
    assert.match(running.stdout, /ok/i);

    proc.kill("SIGTERM");
    assert.equal((await proc.status).code, 0, proc.stderr());
    const stopped = await runCollector(env, { args: ["status"] });
    assert.equal(stopped.code, 3, stopped.stdout);
    assert.match(stopped.stdout, /not running/);
  },
});
