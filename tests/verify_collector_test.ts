/**
 * `verify` on a real recording: a diff-mode archive of three symbols made by
 * the collector is clean; deleting an object or truncating one is found and
 * named.
 */

import assert from "node:assert/strict";
import {
  diffDepthFeed,
  FakeExchange,
  loadFixturePayloads,
  replayFeed,
} from "./support/fake_exchange.ts";
import { runCollector, spawnCollector } from "./support/collector.ts";
import { listFiles, tempDir } from "./support/temp.ts";
import { waitFor } from "./support/wait.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url);

Deno.test({
  name: "verify passes a fresh diff-mode recording and names a deleted and a truncated object",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await FakeExchange.start();
    exchange.setFeed(
      "btcusdt@depth@100ms",
      replayFeed({
        rate: 20,
        payloads: await loadFixturePayloads(
          new URL("spot_diff_btcusdt_2024-08-08.ndjson.gz", FIXTURES),
        ),
      }),
    );
    exchange.setFeed(
      "ethusdt@depth@100ms",
      replayFeed({
        rate: 20,
        payloads: await loadFixturePayloads(
          new URL("spot_diff_ethusdt_2024-08-08.ndjson.gz", FIXTURES),
        ),
      }),
    );
    exchange.setFeed("bnbusdt@depth@100ms", diffDepthFeed({ rate: 20, symbol: "BNBUSDT" }));
    await using tmp = await tempDir();
    const env = {
      SYMBOL: "BTCUSDT,ETHUSDT,BNBUSDT",
      DEPTH_LEVEL: "full",
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: tmp.path,
      BATCH_SECONDS: "1",
      METRICS_ADDR: "off",
    };
    const objects = (symbol: string) =>
      listFiles(`${tmp.path}/archive`).then((files) =>
        files.filter((f) => f.includes(`/symbol=${symbol}/`) && f.endsWith(".ndjson.gz"))
      );
    const proc = spawnCollector(env);
    // Enough one-second objects per stream to delete and damage some of them.
    await waitFor(
      async () => {
        const counts = await Promise.all(["BTCUSDT", "ETHUSDT", "BNBUSDT"].map(objects));
        return counts.every((list) => list.length >= 10);
      },
      30_000,
      "ten objects a stream",
      250,
    );
    proc.kill("SIGTERM");
    assert.equal((await proc.status).code, 0, proc.stderr());

    const clean = await runCollector(env, { args: ["verify"] });
    assert.equal(clean.code, 0, clean.stdout + clean.stderr);

    const eth = await objects("ETHUSDT");
    assert.ok(eth.length >= 8, `only ${eth.length} ETHUSDT objects`);
    await Deno.remove(`${tmp.path}/archive/${eth[4]}`);
    const afterDelete = await runCollector(env, { args: ["verify"] });
    assert.equal(afterDelete.code, 1, afterDelete.stdout);
    assert.match(afterDelete.stdout, /ethusdt@depth@100ms/);

    const bnb = await objects("BNBUSDT");
    const victim = `${tmp.path}/archive/${bnb[2]}`;
    await Deno.writeFile(victim, (await Deno.readFile(victim)).subarray(0, 100));
    const json = await runCollector(env, { args: ["verify", "--json"] });
    assert.equal(json.code, 1);
    const report = JSON.parse(json.stdout);
    assert.ok(
      JSON.stringify(report).includes(bnb[2].split("/").at(-1)!),
      "truncated object not named",
    );
  },
});
