/**
 * A new user's first `deno task start`: it fetches only the packages the
 * collector runs (deno.lock holds nothing else: the tests' s3rver runs in its
 * own process, pinned by tests/support/s3rver.lock), prints the collector's
 * own log lines and nothing of Deno's (no experimental-feature warning, no
 * "launchctl" line on Linux), and then serves the status page at `/`.
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
const readLock = async (path: string): Promise<Lock> =>
  JSON.parse(await Deno.readTextFile(`${ROOT}${path}`));
const packageNames = (lock: Lock) => Object.keys(lock.npm).map((k) => k.replace(/(.)@.*$/, "$1"));

Deno.test("start and status run quietly: Deno's own warnings and notes are off", () => {
  for (const task of ["start", "status"]) {
    assert.match(denoJson.tasks[task], /^deno run -P=collector -q /, task);
  }
  assert.ok(startTaskArgs().includes("-q"));
});

Deno.test("deno.lock holds only what the collector imports; s3rver is pinned apart", async () => {
  const project = await readLock("deno.lock");
  const imports = Object.values(denoJson.imports as Record<string, string>);
  assert.deepEqual(Object.keys(project.specifiers).sort(), [...imports].sort());
  const names = packageNames(project);
  for (const name of ["s3rver", "koa", "winston", "@koa/router", "busboy"]) {
    assert.ok(!names.includes(name), `${name} in deno.lock`);
  }
  const s3rver = await readLock("tests/support/s3rver.lock");
  assert.deepEqual(Object.keys(s3rver.specifiers), ["npm:s3rver@3.7.1"]);
  assert.ok(packageNames(s3rver).includes("koa"));
});

Deno.test({
  name: "deno.lock covers everything src/main.ts loads (deno cache --frozen)",
  async fn() {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["cache", "--frozen", "src/main.ts"],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
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
