/**
 * Nothing already safe is ever lost, end to end: the collector as a
 * subprocess (the `start` task's exact permissions) against the fake exchange.
 */

import assert from "node:assert/strict";
import { FakeExchange, partialDepthFeed } from "./support/fake_exchange.ts";
import { dataByStream, readArchive, runCollector, spawnCollector } from "./support/collector.ts";
import { listFiles, tempDir } from "./support/temp.ts";
import { delay, waitFor } from "./support/wait.ts";

/** The journal is flushed every 250 ms: a SIGKILL may take this much, no more. */
const KILL_WINDOW_MS = 1000;

const streams = ["btcusdt@depth20@100ms", "ethusdt@depth20@100ms"];

/** The fake exchange with BTC's and ETH's partial books at 40 a second. */
async function twoPartialBooks(): Promise<FakeExchange> {
  const exchange = await FakeExchange.start();
  streams.forEach((s, i) =>
    exchange.setFeed(s, partialDepthFeed({ rate: 40, startId: 1000 * (i + 1) }))
  );
  return exchange;
}

/** The collector's environment for both, into `dataDir`, plus `extra`. */
function twoSymbolEnv(exchange: FakeExchange, dataDir: string, extra: Record<string, string>) {
  return {
    SYMBOL: "BTCUSDT,ETHUSDT",
    DEPTH_LEVEL: "20",
    BINANCE_WS_URL: exchange.wsUrl,
    BINANCE_REST_URL: exchange.restUrl,
    DATA_DIR: dataDir,
    METRICS_ADDR: "off",
    ...extra,
  };
}

Deno.test({
  name:
    "a second instance on the same DATA_DIR exits 2 at once naming the holder; the first loses nothing",
  sanitizeResources: false,
  async fn() {
    await using exchange = await twoPartialBooks();
    await using tmp = await tempDir();
    const env = twoSymbolEnv(exchange, tmp.path, { BATCH_SECONDS: "60", INSTANCE_ID: "first" });
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
    // Enough in the journal that the check below means something (40 msg/s a stream).
    await waitFor(
      () => Math.min(...streams.map((s) => exchange.sentCountFor(s))) >= 160,
      15_000,
      "more traffic",
    );
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

Deno.test({
  name: "passwords in URL options appear nowhere: stdout, stderr, log file, /status, /metrics",
  sanitizeResources: false,
  async fn() {
    await using exchange = await FakeExchange.start();
    exchange.setFeed("btcusdt@depth20@100ms", partialDepthFeed({ rate: 20 }));
    await using tmp = await tempDir();
    const withUser = (url: string, password: string) => url.replace("://", `://user:${password}@`);
    const secrets = ["SeCrEt9", "Pw-ws-1", "Pw-rest-2", "Pw-hook-3"];
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = listener.addr.port;
    listener.close();
    const env = {
      SYMBOL: "BTCUSDT",
      DEPTH_LEVEL: "20",
      DATA_DIR: tmp.path,
      LOG_FILE: `${tmp.path}/collector.log`,
      S3_BUCKET_NAME: "l2-test-bucket",
      // Nothing listens there: check fails and run warns, both quoting the endpoint.
      S3_ENDPOINT: "http://user:SeCrEt9@127.0.0.1:9",
      S3_FORCE_PATH_STYLE: "true",
      AWS_REGION: "us-east-1",
      AWS_ACCESS_KEY_ID: "AKIDEXAMPLE",
      AWS_SECRET_ACCESS_KEY: "not-a-url-secret",
      BINANCE_WS_URL: withUser(exchange.wsUrl, "Pw-ws-1"),
      BINANCE_REST_URL: withUser(exchange.restUrl, "Pw-rest-2"),
      ALERT_WEBHOOK_URL: "http://user:Pw-hook-3@127.0.0.1:9/hook",
      METRICS_ADDR: `0.0.0.0:${port}`,
    };
    const checked = await runCollector(env, { args: ["check"], timeoutMs: 60_000 });
    assert.equal(checked.code, 1, checked.stdout + checked.stderr);
    assert.match(checked.stdout, /<redacted>@127\.0\.0\.1:9/);

    await using proc = spawnCollector(env);
    await waitFor(
      async () => {
        try {
          const response = await fetch(`http://127.0.0.1:${port}/status`);
          await response.body?.cancel();
          return response.ok;
        } catch {
          return false;
        }
      },
      20_000,
      "the ops endpoint",
    );
    await delay(1500);
    const pages = await Promise.all(
      ["/status", "/metrics", "/healthz"].map(async (path) =>
        await (await fetch(`http://127.0.0.1:${port}${path}`)).text()
      ),
    );
    proc.kill("SIGTERM");
    await proc.status;
    const log = await Deno.readTextFile(env.LOG_FILE);
    assert.match(
      log,
      new RegExp(`\\[WRN\\].*METRICS_ADDR 0\\.0\\.0\\.0:${port}.*no authentication`),
    );
    assert.match(log, /<redacted>@127\.0\.0\.1:9/, "the S3 warning did not quote the endpoint");
    const outputs = {
      checkStdout: checked.stdout,
      checkStderr: checked.stderr,
      runStderr: proc.stderr(),
      logFile: log,
      status: pages[0],
      metrics: pages[1],
      healthz: pages[2],
    };
    for (const [where, text] of Object.entries(outputs)) {
      for (const secret of secrets) {
        assert.ok(!text.includes(secret), `${secret} in ${where}:\n${text}`);
      }
    }
  },
});

Deno.test({
  name:
    "the crash journal's directory removed while recording: its batches are marked dropped, the journal is made again and a SIGKILL after it is recovered, verify passes",
  sanitizeResources: false,
  async fn() {
    await using exchange = await twoPartialBooks();
    await using tmp = await tempDir();
    const env = twoSymbolEnv(exchange, tmp.path, { BATCH_SECONDS: "3" });
    const journal = `${tmp.path}/journal`;
    {
      await using proc = spawnCollector(env);
      await waitFor(() => exchange.openCount > 0, 15_000, "the collector to connect");
      await delay(1000);
      // A clean-up script, say, removes it: the open batches' pieces on disk go with it.
      await Deno.remove(journal, { recursive: true });
      // The batches opened after it are journalled again, in a directory made again.
      await waitFor(
        async () => {
          const names = await listFiles(journal).catch(() => []);
          return names.some((n) => n.endsWith(".jnl")) && names.some((n) => n.endsWith(".part"));
        },
        8_000,
        "the journal to be made again",
      );
      await delay(1000);
      proc.kill("SIGKILL");
      await proc.status;
      assert.doesNotMatch(proc.stderr(), /stays in the crash journal/);
    }
    {
      // The restart recovers what the killed run's new journal held.
      const before = exchange.connections.length;
      await using proc = spawnCollector(env);
      await waitFor(() => exchange.connections.length > before, 15_000, "the restart to connect");
      await delay(2000);
      proc.kill("SIGTERM");
      assert.equal((await proc.status).code, 0, proc.stderr());
    }
    const lines = await readArchive(`${tmp.path}/archive`);
    for (const stream of streams) {
      const ofStream = lines.filter((l) => l.value.stream === stream);
      const dropped = ofStream.filter((l) =>
        l.value.event === "dropped" && l.value.reason === "journal file lost"
      );
      assert.equal(dropped.length, 1, `${stream}: one batch lost with the directory`);
      assert.ok((dropped[0].value.messages as number) > 0);
      // Killed after the journal was made again: its batches were recovered at the restart.
      assert.ok(
        ofStream.some((l) => l.value.event === "recovered"),
        `${stream}: nothing recovered`,
      );
    }
    // Recovered under the keys they were given (batch numbers from 900000 are rebuilt ones).
    assert.deepEqual(lines.filter((l) => /_9\d{5}\.ndjson\.gz$/.test(l.key)), []);
    const verified = await runCollector(env, { args: ["verify"] });
    assert.equal(verified.code, 0, verified.stdout + verified.stderr);
  },
});
