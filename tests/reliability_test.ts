/**
 * Nothing already safe is ever lost, end to end: the collector as a
 * subprocess (the `start` task's exact permissions) against the fake exchange.
 */

import assert from "node:assert/strict";
import { FakeExchange, partialDepthFeed } from "./support/fake_exchange.ts";
import { type ArchivedLine, rawData, readArchive, spawnCollector } from "./support/collector.ts";
import { listFiles, tempDir } from "./support/temp.ts";
import { delay, waitFor } from "./support/wait.ts";

/** The journal is flushed every 250 ms: a SIGKILL may take this much, no more. */
const KILL_WINDOW_MS = 1000;

function dataByStream(lines: readonly ArchivedLine[]): Map<string, string[]> {
  const byStream = new Map<string, string[]>();
  for (const line of lines) {
    if (line.value.event !== undefined) continue;
    const list = byStream.get(line.value.stream) ?? [];
    list.push(rawData(line));
    byStream.set(line.value.stream, list);
  }
  return byStream;
}

Deno.test({
  name:
    "a second instance on the same DATA_DIR exits 2 at once naming the holder; the first loses nothing",
  sanitizeResources: false,
  async fn() {
    await using exchange = await FakeExchange.start();
    const streams = ["btcusdt@depth20@100ms", "ethusdt@depth20@100ms"];
    streams.forEach((s, i) =>
      exchange.setFeed(s, partialDepthFeed({ rate: 40, startId: 1000 * (i + 1) }))
    );
    await using tmp = await tempDir();
    const env = {
      SYMBOL: "BTCUSDT,ETHUSDT",
      DEPTH_LEVEL: "20",
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: tmp.path,
      BATCH_SECONDS: "60",
      METRICS_ADDR: "off",
      INSTANCE_ID: "first",
    };
    await using first = spawnCollector(env);
    await waitFor(() => exchange.openCount > 0, 15_000, "the first collector to connect");
    await waitFor(
      () => Math.min(...streams.map((s) => exchange.sentCountFor(s))) >= 40,
      15_000,
      "traffic",
    );
    const journalBefore = await listFiles(`${tmp.path}/journal`);
    const restartsBefore = await Deno.readTextFile(`${tmp.path}/state/restarts.json`);
    const connectionsBefore = exchange.connections.length;

    const startedAt = Date.now();
    await using second = spawnCollector({ ...env, INSTANCE_ID: "second" });
    const status = await Promise.race([second.status, delay(5000).then(() => undefined)]);
    const tookMs = Date.now() - startedAt;
    assert.ok(status, `the second instance still runs after 5 s:\n${second.stderr()}`);
    assert.equal(status.code, 2, second.stderr());
    assert.match(second.stderr(), new RegExp(`PID ${first.child.pid}\\b`));
    assert.ok(second.stderr().includes(tmp.path), second.stderr());
    assert.ok(tookMs < 2000, `the second instance took ${tookMs} ms to exit`);
    // It touched nothing of the first's: journal, restart history, the exchange.
    assert.deepEqual(await listFiles(`${tmp.path}/journal`), journalBefore);
    assert.equal(await Deno.readTextFile(`${tmp.path}/state/restarts.json`), restartsBefore);
    assert.equal(exchange.connections.length, connectionsBefore);

    // The first goes on; SIGKILLed (its batches are open: they live only in
    // its journal), a new start on the DATA_DIR recovers them.
    await delay(1500);
    first.kill("SIGKILL");
    const killedAt = Date.now();
    await first.status;
    const sentBeforeKill = new Map(
      streams.map((s) => [
        s,
        exchange.sentFor(s).filter((f) => f.at <= killedAt - KILL_WINDOW_MS).map((f) =>
          f.text.slice(`{"stream":"${s}","data":`.length, -1)
        ),
      ]),
    );
    await using third = spawnCollector({ ...env, BATCH_SECONDS: "1" });
    await waitFor(
      () => third.stderr().includes("Recovered"),
      15_000,
      "the restart to recover the journal",
    );
    await waitFor(() => exchange.openCount > 0, 15_000, "the restart to connect");
    third.kill("SIGTERM");
    assert.equal((await third.status).code, 0, third.stderr());
    const stored = dataByStream(await readArchive(`${tmp.path}/archive`));
    for (const stream of streams) {
      const want = sentBeforeKill.get(stream)!;
      assert.ok(want.length >= 80, `${stream}: only ${want.length} sent before the kill`);
      const got = stored.get(stream) ?? [];
      assert.deepEqual(got.slice(0, want.length), want, `${stream}: lost what the journal held`);
    }
  },
});
