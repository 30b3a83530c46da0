/**
 * A new user's first `deno task start`: it fetches only the packages the
 * collector runs (deno.collector.lock, not the test suite's deno.lock with
 * s3rver and its web framework), prints the collector's own log lines and
 * nothing of Deno's (no experimental-feature warning, no "launchctl" line on
 * Linux), and then serves the status page at `/`.
 */

import assert from "node:assert/strict";
import { spawnCollector, startTaskArgs } from "./support/collector.ts";
import { CHROMIUM, renderPage } from "./support/chromium.ts";
import { FakeExchange, partialDepthFeed } from "./support/fake_exchange.ts";
import { tempDir } from "./support/temp.ts";
import { waitFor } from "./support/wait.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const denoJson = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));

interface Lock {
  specifiers: Record<string, string>;
  npm: Record<string, unknown>;
}
const readLock = async (name: string): Promise<Lock> =>
  JSON.parse(await Deno.readTextFile(`${ROOT}${name}`));

/** Packages only the tests use: they must not be fetched by a start. */
const TEST_ONLY = ["s3rver"];

Deno.test("start and status use the collector's own lock file", () => {
  for (const task of ["start", "status"]) {
    assert.match(denoJson.tasks[task], / -q --lock=deno\.collector\.lock /, task);
  }
  assert.ok(startTaskArgs().includes("--lock=deno.collector.lock"));
});

Deno.test("deno.collector.lock holds no test-only package, and the same versions as deno.lock", async () => {
  const collector = await readLock("deno.collector.lock");
  const full = await readLock("deno.lock");
  const packages = Object.keys(collector.npm);
  for (const name of TEST_ONLY) {
    assert.ok(!packages.some((p) => p.startsWith(`${name}@`)), `${name} in deno.collector.lock`);
    assert.ok(!Object.keys(collector.specifiers).some((s) => s.startsWith(`npm:${name}@`)));
  }
  // s3rver's web server, logger and router are in the suite's lock only.
  for (const name of ["koa", "winston", "@koa/router"]) {
    assert.ok(Object.keys(full.npm).some((p) => p.startsWith(`${name}@`)), name);
    assert.ok(!packages.some((p) => p.startsWith(`${name}@`)), name);
  }
  assert.ok(packages.length < Object.keys(full.npm).length / 2);
  for (const p of packages) assert.deepEqual(collector.npm[p], full.npm[p], p);
  // Every package the collector imports is in it.
  for (const [alias, target] of Object.entries(denoJson.imports as Record<string, string>)) {
    if (TEST_ONLY.includes(alias)) continue;
    assert.ok(target in collector.specifiers, `${target} missing from deno.collector.lock`);
  }
});

Deno.test({
  name: "deno.collector.lock covers everything src/main.ts loads (deno cache --frozen)",
  async fn() {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["cache", "--frozen", "--lock=deno.collector.lock", "src/main.ts"],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(
      out.code,
      0,
      `${new TextDecoder().decode(out.stderr)}\nrun \`deno task lock:collector\` to update it`,
    );
  },
});

/** Our log lines: `2024-08-08T12:00:00.000Z [INF] l2·run: …`. */
const OWN_LINE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[(DBG|INF|WRN|ERR|FTL)\] l2·/;

Deno.test({
  name: "a start prints only its own lines before recording, then serves the status page at /",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await FakeExchange.start();
    exchange.setFeed("btcusdt@depth20@100ms", partialDepthFeed({ rate: 20, startId: 1_000 }));
    await using data = await tempDir();
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    listener.close();
    await using collector = spawnCollector({
      SYMBOL: "BTCUSDT",
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: data.path,
      METRICS_ADDR: `127.0.0.1:${port}`,
    });
    await waitFor(() => /Recording 1 /.test(collector.stderr()), 30_000, "recording to start");
    const lines = collector.stderr().split("\n");
    const upTo = lines.findIndex((l) => /Recording 1 /.test(l));
    for (const line of lines.slice(0, upTo + 1)) assert.match(line, OWN_LINE);
    assert.doesNotMatch(collector.stderr(), /experimental|launchctl|Download|Warning/);

    // `open http://127.0.0.1:9464/`: the page, with the stream once it delivered.
    await waitFor(() => exchange.openCount > 0, 15_000, "the connection");
    let html = "";
    await waitFor(
      async () => {
        const response = await fetch(`http://127.0.0.1:${port}/`);
        html = await response.text();
        return response.ok && html.includes("<td>btcusdt@depth20@100ms</td>");
      },
      15_000,
      "the status page to list the stream",
      250,
    );
    assert.match(html, /<section class="health (ok|warning)" id="health">/);
    if (CHROMIUM) {
      const rendered = await renderPage(`http://127.0.0.1:${port}/`);
      assert.deepEqual(rendered.console, []);
    }
    collector.kill("SIGTERM");
    assert.equal((await collector.status).code, 0);
  },
});
