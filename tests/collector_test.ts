/**
 * The real collector as a subprocess (the `start` task's exact command and
 * permissions) against the fake exchange, compared with what the exchange
 * recorded as written to its sockets.
 */

import assert from "node:assert/strict";
import { parseKey } from "../src/archive/keys.ts";
import { FakeExchange, partialDepthFeed } from "./support/fake_exchange.ts";
import {
  type ArchivedLine,
  dataByStream,
  readArchive,
  runCollector,
  spawnCollector,
} from "./support/collector.ts";
import { tempDir } from "./support/temp.ts";
import { unreachableBinance } from "./support/net_guard.ts";
import { delay, waitFor } from "./support/wait.ts";

Deno.test({
  name: "collector keeps every message through a drop, a stall and SIGTERM, exactly once",
  sanitizeResources: false,
  async fn() {
    await using exchange = await FakeExchange.start();
    const streams = ["btcusdt@depth20@100ms", "ethusdt@depth20@100ms"];
    streams.forEach((s, i) =>
      exchange.setFeed(s, partialDepthFeed({ rate: 40, startId: 1000 * (i + 1) }))
    );
    await using tmp = await tempDir();
    await using proc = spawnCollector({
      SYMBOL: "BTCUSDT,ETHUSDT",
      DEPTH_LEVEL: "20",
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: tmp.path,
      BATCH_SECONDS: "2",
      STALE_AFTER_SECONDS: "2",
      METRICS_ADDR: "off",
      INSTANCE_ID: "test-box",
    });
    await waitFor(() => exchange.openCount > 0, 15_000, "the collector to connect");
    const sent = () => Math.min(...streams.map((s) => exchange.sentCountFor(s)));
    await waitFor(() => sent() >= 150, 15_000, "150 messages a stream");
    // The drop: every socket closed at once; the collector reconnects.
    let opened = exchange.connections.length;
    exchange.dropAll();
    await waitFor(() => exchange.connections.length > opened, 15_000, "a reconnect after the drop");
    const afterDrop = sent();
    await waitFor(() => sent() >= afterDrop + 40, 15_000, "traffic after the drop");
    // The stall: silent sockets, found stale after STALE_AFTER_SECONDS and replaced.
    opened = exchange.connections.length;
    exchange.stall(6000);
    await waitFor(
      () => exchange.connections.length > opened,
      15_000,
      "a reconnect after the stall",
    );
    const beforeEnd = sent();
    // … and enough in all for the checks below (more than 300 messages a stream).
    await waitFor(() => sent() >= Math.max(beforeEnd + 80, 320), 20_000, "traffic after the stall");
    const sentBeforeSigterm = new Map(
      streams.map((s) => [s, exchange.sentFor(s).map((f) => f.text)]),
    );
    const signalledAt = Date.now();
    proc.kill("SIGTERM");
    const status = await proc.status;
    const exitMs = Date.now() - signalledAt;
    assert.equal(status.code, 0, proc.stderr());
    assert.ok(exitMs < 10_000, `exit took ${exitMs} ms (README: within 10 s)`);

    const lines = await readArchive(`${tmp.path}/archive`);
    const stored = dataByStream(lines);
    for (const stream of streams) {
      const sent = sentBeforeSigterm.get(stream)!.map((t) =>
        t.slice(`{"stream":"${stream}","data":`.length, -1)
      );
      assert.ok(sent.length > 300, `${stream}: only ${sent.length} sent`);
      const got = stored.get(stream) ?? [];
      // Exactly once, byte-identical, in order: the stored sequence starts with
      // everything sent before SIGTERM (messages after it may follow).
      assert.deepEqual(
        got.slice(0, sent.length),
        sent,
        `${stream}: archive differs from what was sent`,
      );
      assert.equal(new Set(got).size, got.length, `${stream}: duplicates in the archive`);
    }

    // Keys follow the layout, and each object's partitions are its first line's UTC hour.
    const firstLines = new Map<string, ArchivedLine>();
    for (const line of lines) if (!firstLines.has(line.key)) firstLines.set(line.key, line);
    for (const [key, first] of firstLines) {
      const parts = parseKey(key);
      assert.ok(parts, `key does not follow the layout: ${key}`);
      assert.equal(parts.prefix, "binance");
      assert.equal(parts.streamType, "depth20@100ms");
      assert.equal(parts.instanceId, "test-box");
      assert.equal(parts.firstRecvTs, first.value.recv_ts);
      const when = new Date(first.value.recv_ts / 1000).toISOString();
      assert.ok(key.includes(`/date=${when.slice(0, 10)}/hour=${when.slice(11, 13)}/`), key);
      assert.equal(`${parts.symbol.toLowerCase()}@${parts.streamType}`, first.value.stream);
    }

    // Event lines mark the drop and the stall in every stream.
    for (const stream of streams) {
      const events = lines.filter((l) => l.value.stream === stream && l.value.event !== undefined);
      const causes = events.filter((l) => l.value.event === "disconnected").map((l) =>
        l.value.cause
      );
      assert.ok(
        causes.includes("server") || causes.includes("error"),
        `${stream}: no drop event in ${causes}`,
      );
      assert.ok(causes.includes("stale"), `${stream}: no stale disconnect in ${causes}`);
      assert.ok(events.some((l) => l.value.event === "stale"), `${stream}: no stale event`);
      assert.ok(
        events.filter((l) => l.value.event === "connected").length >= 3,
        `${stream}: reconnects`,
      );
      // Every connection's end is marked: the last connection event is a
      // disconnect (by shutdown, or a stale one if SIGTERM came during backoff).
      const connectionEvents = events.filter((l) =>
        l.value.event === "connected" || l.value.event === "disconnected"
      );
      assert.equal(connectionEvents.at(-1)?.value.event, "disconnected");
    }
    // Receive times never go backwards within a stream's archive order.
    for (const stream of streams) {
      const ts = lines.filter((l) => l.value.stream === stream).map((l) => l.value.recv_ts);
      assert.ok(ts.every((t, i) => i === 0 || t >= ts[i - 1]), `${stream}: recv_ts out of order`);
    }
  },
});

Deno.test("collector exits 2 naming every bad variable and printing no secret", async () => {
  const result = await runCollector({
    ...unreachableBinance(),
    DEPTH_LEVEL: "7",
    UPDATE_SPEED_MS: "fast",
    BATCH_SECONDS: "0",
    AWS_SECRET_ACCESS_KEY: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ALERT_WEBHOOK_URL: "not a url hooks.slack.com/T000/SECRET",
  });
  assert.equal(result.code, 2);
  for (const name of ["DEPTH_LEVEL", "UPDATE_SPEED_MS", "BATCH_SECONDS", "ALERT_WEBHOOK_URL"]) {
    assert.match(result.stderr, new RegExp(name), `${name} not named`);
  }
  assert.doesNotMatch(result.stderr, /wJalrXUtnFEMI|SECRET/);
});

Deno.test("collector --version prints the version from deno.json and --help lists every command", async () => {
  const denoJson = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  const version = await runCollector({}, { args: ["--version"] });
  assert.equal(version.code, 0);
  assert.equal(version.stdout.trim(), `l2-uploader ${denoJson.version}`);
  const help = await runCollector({}, { args: ["--help"] });
  assert.equal(help.code, 0);
  for (const command of ["run", "check", "status", "verify", "book", "install", "uninstall"]) {
    assert.match(help.stdout, new RegExp(`^\\s+${command}\\s`, "m"), `${command} not in --help`);
  }
});

Deno.test("collector exits 2 naming DATA_DIR when it is not writable", async () => {
  await using tmp = await tempDir();
  const file = `${tmp.path}/not-a-dir`;
  await Deno.writeTextFile(file, "");
  const result = await runCollector({
    ...unreachableBinance(),
    DATA_DIR: `${file}/data`,
    METRICS_ADDR: "off",
  });
  assert.equal(result.code, 2, result.stderr);
  assert.match(result.stderr, /DATA_DIR/);
  assert.ok(result.stderr.includes(`${file}/data`));
});

Deno.test("collector exits 2 naming LOG_FILE when it cannot be opened, not with a stack trace", async () => {
  await using tmp = await tempDir();
  // Under a regular file: no directory can be made for it (a missing one is made, as DATA_DIR is).
  await Deno.writeTextFile(`${tmp.path}/file`, "");
  const logFile = `${tmp.path}/file/collector.log`;
  const result = await runCollector({
    ...unreachableBinance(),
    DATA_DIR: `${tmp.path}/data`,
    METRICS_ADDR: "off",
    LOG_FILE: logFile,
  });
  assert.equal(result.code, 2, result.stderr);
  assert.ok(result.stderr.includes(`cannot open LOG_FILE "${logFile}"`), result.stderr);
  assert.doesNotMatch(result.stderr, /Uncaught/);
});

Deno.test("collector warns when its .env file is readable by others or sets what is no option, and reads it", async () => {
  await using tmp = await tempDir();
  const envFile = `${tmp.path}/collector.env`;
  // SYMBOLS: a misspelt SYMBOL, read by nothing.
  await Deno.writeTextFile(envFile, "DEPTH_LEVEL=7\nSYMBOLS=ETHUSDT\n");
  await Deno.chmod(envFile, 0o644);
  const shared = await runCollector(unreachableBinance(), { args: ["--env-file", envFile] });
  assert.equal(shared.code, 2, "the file's bad DEPTH_LEVEL should be read");
  assert.match(shared.stderr, /readable by group or others/);
  assert.match(shared.stderr, /DEPTH_LEVEL="7"/);
  assert.match(shared.stderr, /collector\.env sets SYMBOLS, which is not an option and is ignored/);
  await Deno.chmod(envFile, 0o600);
  const private_ = await runCollector(unreachableBinance(), { args: ["--env-file", envFile] });
  assert.doesNotMatch(private_.stderr, /readable by group or others/);
  const missing = await runCollector(unreachableBinance(), {
    args: ["--env-file", `${tmp.path}/nope.env`],
  });
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /nope\.env/);
});

Deno.test({
  name: "collector writes JSON log lines to LOG_FILE and a second signal exits at once",
  sanitizeResources: false,
  async fn() {
    await using exchange = await FakeExchange.start();
    exchange.setFeed("btcusdt@depth20@100ms", partialDepthFeed({ rate: 20 }));
    await using tmp = await tempDir();
    // A bucket on a port that refuses at start-up (recording starts anyway)
    // and, from before the first signal, accepts and never answers: the
    // shutdown's store attempts then hang, so a second signal surely finds
    // the first shutdown still running (refused attempts could finish first).
    const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (closed.addr as Deno.NetAddr).port;
    closed.close();
    await using proc = spawnCollector({
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: tmp.path,
      METRICS_ADDR: "off",
      S3_BUCKET_NAME: "some-bucket",
      S3_ENDPOINT: `http://127.0.0.1:${port}`,
      S3_FORCE_PATH_STYLE: "true",
      AWS_REGION: "us-east-1",
      AWS_ACCESS_KEY_ID: "AKIDEXAMPLE",
      AWS_SECRET_ACCESS_KEY: "not-a-real-secret-value",
      // In a directory that does not exist yet (the first start of a new DATA_DIR).
      LOG_FILE: `${tmp.path}/logs/collector.log`,
      LOG_FORMAT: "json",
    });
    await waitFor(() => exchange.openCount > 0, 15_000, "connect");
    await delay(1500);
    const silent = Deno.listen({ hostname: "127.0.0.1", port });
    const held: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const conn of silent) held.push(conn);
    })();
    proc.kill("SIGTERM");
    await delay(300);
    const secondAt = Date.now();
    proc.kill("SIGTERM");
    const status = await proc.status;
    silent.close();
    await accepting;
    for (const conn of held) conn.close();
    assert.equal(status.code, 1, "a second signal exits at once, non-zero");
    assert.ok(Date.now() - secondAt < 2000, "the second signal must not wait for the flush");
    const log = (await Deno.readTextFile(`${tmp.path}/logs/collector.log`)).trim().split("\n");
    const records = log.map((line) => JSON.parse(line));
    assert.ok(records.some((r) => /again/.test(String(r.message))), "second signal not logged");
    assert.ok(
      records.every((r) => typeof r["@timestamp"] === "string" && typeof r.level === "string"),
    );
    assert.ok(!log.join("\n").includes("not-a-real-secret-value"), "a secret reached the log");
  },
});
