/**
 * What sleep looks like to a process, for real: the collector subprocess is
 * stopped (SIGSTOP) for 8 s while the fake exchange keeps sending two diff
 * streams, then resumed (SIGCONT). With SUSPEND_THRESHOLD_SECONDS=3 every
 * stream gets one `suspended` line as long as the pause, new data follows
 * within 5 s on a new connection, each symbol gets a fresh snapshot, and
 * `verify` counts the hole as explained.
 *
 * The longer case, a 45 s pause with the defaults (STALE_AFTER_SECONDS=30
 * runs out during it), is a manual check, not CI:
 * `SUSPEND_TEST_LONG=1 deno test -A --no-prompt tests/suspension_collector_test.ts`.
 */

import assert from "node:assert/strict";
import { diffDepthFeed, FakeExchange } from "./support/fake_exchange.ts";
import { readArchive, runCollector, spawnCollector } from "./support/collector.ts";
import { tempDir } from "./support/temp.ts";
import { delay, waitFor } from "./support/wait.ts";

const STREAMS = { BTCUSDT: "btcusdt@depth@100ms", ETHUSDT: "ethusdt@depth@100ms" } as const;
const LONG = Deno.env.get("SUSPEND_TEST_LONG") === "1";
const PAUSE_MS = LONG ? 45_000 : 8000;

Deno.test({
  name: `a collector stopped for ${
    PAUSE_MS / 1000
  } s writes one suspended line per stream, reconnects and snapshots`,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await FakeExchange.start();
    exchange.setFeed(STREAMS.BTCUSDT, diffDepthFeed({ rate: 50, symbol: "BTCUSDT" }));
    exchange.setFeed(STREAMS.ETHUSDT, diffDepthFeed({ rate: 50, symbol: "ETHUSDT" }));
    await using tmp = await tempDir();
    const env = {
      SYMBOL: "BTCUSDT,ETHUSDT",
      DEPTH_LEVEL: "full",
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: tmp.path,
      BATCH_SECONDS: "1",
      METRICS_ADDR: "off",
      ...(LONG ? {} : { SUSPEND_THRESHOLD_SECONDS: "3" }),
    };
    await using proc = spawnCollector(env);
    await waitFor(() => exchange.openCount >= 1, 20_000, "the collector to connect");
    await waitFor(
      () => exchange.restRequests.filter((r) => r.path.endsWith("/depth")).length >= 2,
      10_000,
      "the first snapshots",
    );
    await delay(1500);

    proc.kill("SIGSTOP");
    const stoppedAt = Date.now();
    await delay(PAUSE_MS);
    const resumedAt = Date.now();
    proc.kill("SIGCONT");
    const pauseMs = resumedAt - stoppedAt;

    await waitFor(
      () => exchange.connections.length >= 2,
      5000,
      "a new connection after the resume",
    ).catch((error) => {
      throw new Error(`${error.message}\n${proc.stderr()}`);
    });
    await waitFor(
      () =>
        Object.keys(STREAMS).every((symbol) =>
          exchange.restRequests.some((r) =>
            r.path.endsWith("/depth") && r.query.includes(symbol) && r.at >= resumedAt
          )
        ),
      5000,
      "a fresh snapshot per symbol",
    );
    await delay(2000);
    proc.kill("SIGTERM");
    assert.equal((await proc.status).code, 0, proc.stderr());
    assert.match(proc.stderr(), /the process was suspended for \d+ s/);
    if (Deno.build.os !== "darwin") {
      // PREVENT_SLEEP (default true) is a no-op here, said once.
      assert.equal(proc.stderr().match(/PREVENT_SLEEP has nothing to do on/g)?.length, 1);
    }

    const lines = (await readArchive(`${tmp.path}/archive`)).map((l) => l.value);
    for (const [symbol, stream] of Object.entries(STREAMS)) {
      // A stream's objects: its own lines and its snapshots.
      const ofStream = lines.filter((v) =>
        v.stream === stream || v.stream === `${symbol.toLowerCase()}@depthSnapshot`
      );
      const suspended = ofStream.filter((v) => v.event === "suspended");
      assert.equal(suspended.length, 1, `${stream}: ${suspended.length} suspended lines`);
      const s = suspended[0];
      const duration = s.duration_ms as number;
      assert.ok(Math.abs(duration - pauseMs) <= 1000, `${stream}: ${duration} ms for ${pauseMs}`);
      assert.equal(Math.round((s.to as number - (s.from as number)) / 1000), duration);
      assert.equal(s.recv_ts, s.to);
      assert.equal(s.measured_by, "monotonic");
      const at = ofStream.indexOf(s);
      const after = ofStream.slice(at + 1);

      // Nothing stamped between the pause's start and the suspended line.
      const before = ofStream.slice(0, at);
      assert.ok(before.every((v) => v.recv_ts <= (s.from as number)), `${stream}: line in pause`);

      // The old socket: closed because of the suspension, its lines within buffered_until.
      const closed = after.findIndex((v) => v.event === "disconnected");
      assert.ok(closed >= 0, `${stream}: no disconnected line after the resume`);
      assert.equal(after[closed].cause, "suspended");
      for (const v of after.slice(0, closed)) {
        assert.ok(v.recv_ts <= (s.buffered_until as number), `${stream}: buffered line too late`);
      }
      // A new connection, new data within 5 s of the resume, and a fresh snapshot.
      const reconnected = after.findIndex((v) => v.event === "connected");
      assert.ok(reconnected > closed, `${stream}: no new connection`);
      const fresh = after.slice(reconnected).find((v) =>
        v.data !== undefined && v.stream === stream
      );
      assert.ok(fresh, `${stream}: no data on the new connection`);
      assert.ok(fresh.recv_ts - (s.to as number) <= 5_000_000, `${stream}: new data too late`);
      assert.ok(
        after.some((v) => v.stream === `${symbol.toLowerCase()}@depthSnapshot`),
        `${stream}: no snapshot after the resume`,
      );
      // recv_ts never decreases.
      const stamps = ofStream.map((v) => v.recv_ts);
      assert.ok(stamps.every((t, i) => i === 0 || t >= stamps[i - 1]), `${stream}: recv_ts order`);
    }

    const verify = await runCollector(env, { args: ["verify", "--json"] });
    assert.equal(verify.code, 0, verify.stdout + verify.stderr);
    const report = JSON.parse(verify.stdout) as {
      problems: { kind: string; stream?: string; explained: boolean; recvTs?: number }[];
    };
    for (const stream of Object.values(STREAMS)) {
      const holes = report.problems.filter((p) => p.kind === "hole" && p.stream === stream);
      const pauseHole = holes.find((p) =>
        p.recvTs !== undefined && Math.abs(p.recvTs / 1000 - stoppedAt) < 1500
      );
      assert.ok(pauseHole, `${stream}: the pause is not a hole: ${JSON.stringify(holes)}`);
      assert.equal(pauseHole.explained, true);
    }
  },
});
