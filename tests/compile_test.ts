/**
 * The single binary. `deno compile` needs the `denort` runtime, which it
 * downloads from Deno's CDN; these build machines cannot reach it, so the
 * compile test runs only when DENORT_BIN points at a runtime, and is
 * reported as ignored otherwise. The permission test always runs.
 */

import assert from "node:assert/strict";
import { FakeExchange, partialDepthFeed } from "./support/fake_exchange.ts";
import { readArchive, startTaskArgs } from "./support/collector.ts";
import { tempDir } from "./support/temp.ts";

const ROOT = new URL("../", import.meta.url);
const denoJson = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
const denort = Deno.env.get("DENORT_BIN");
if (!denort) {
  // deno-lint-ignore no-console -- the reason a test is ignored must be printed
  console.log(
    "compile test ignored: set DENORT_BIN to a denort runtime to compile and run the binary",
  );
}

Deno.test("start, compile and compile:all grant exactly the same permission set", () => {
  const tasks = denoJson.tasks as Record<string, string>;
  const permissionFlags = (command: string) =>
    command.split(/\s+/).filter((w) => /^(-P|--permission-set|-A|--allow-|--deny-)/.test(w));
  assert.deepEqual(permissionFlags(tasks.start), ["-P=collector"]);
  assert.deepEqual(startTaskArgs().slice(0, 2), ["run", "-P=collector"]);
  assert.deepEqual(permissionFlags(tasks.compile), ["-P=collector"]);
  for (const part of tasks["compile:all"].split("&&")) {
    assert.deepEqual(permissionFlags(part), ["-P=collector"], part);
  }
  // The binary runs with the V8 flags the tests and the benchmark run with.
  const v8Flags = (command: string) =>
    command.split(/\s+/).filter((w) => w.startsWith("--v8-flags"));
  assert.deepEqual(v8Flags(tasks.start), [
    "--v8-flags=--max-semi-space-size=4,--heap-growing-percent=100,--no-flush-bytecode",
  ]);
  assert.deepEqual(v8Flags(tasks.compile), v8Flags(tasks.start));
  for (const part of tasks["compile:all"].split("&&")) {
    assert.deepEqual(v8Flags(part), v8Flags(tasks.start), part);
  }
  const targets = [...tasks["compile:all"].matchAll(/--target (\S+)/g)].map((m) => m[1]);
  assert.deepEqual(targets, [
    "aarch64-apple-darwin",
    "x86_64-apple-darwin",
    "x86_64-unknown-linux-gnu",
  ]);
  // Narrow: no blanket -A, and `run` only for launchctl, caffeinate (PREVENT_SLEEP) and pmset (check).
  const set = denoJson.permissions.collector;
  assert.deepEqual(set.run, ["launchctl", "/usr/bin/caffeinate", "/usr/bin/pmset"]);
  assert.equal(set.ffi, undefined);
});

Deno.test({
  name: "the compiled binary prints its version and records with the compiled-in permissions",
  ignore: !denort,
  sanitizeResources: false,
  async fn() {
    await using tmp = await tempDir();
    const binary = `${tmp.path}/l2-uploader`;
    const args = (denoJson.tasks.compile as string).split(/\s+/).slice(1)
      .map((w, i, all) => all[i - 1] === "--output" ? binary : w);
    const build = await new Deno.Command(Deno.execPath(), {
      args,
      cwd: ROOT.pathname,
      env: { DENORT_BIN: denort! },
    }).output();
    assert.equal(build.code, 0, new TextDecoder().decode(build.stderr));

    const version = await new Deno.Command(binary, { args: ["--version"] }).output();
    assert.equal(
      new TextDecoder().decode(version.stdout).trim(),
      `l2-uploader ${denoJson.version}`,
    );

    await using exchange = await FakeExchange.start();
    exchange.setFeed("btcusdt@depth20@100ms", partialDepthFeed({ rate: 20 }));
    const child = new Deno.Command(binary, {
      args: ["run"],
      clearEnv: true,
      env: {
        BINANCE_WS_URL: exchange.wsUrl,
        BINANCE_REST_URL: exchange.restUrl,
        DATA_DIR: `${tmp.path}/data`,
        BATCH_SECONDS: "1",
        METRICS_ADDR: "off",
      },
      stdout: "null",
      stderr: "piped",
    }).spawn();
    await new Promise((r) => setTimeout(r, 3000));
    child.kill("SIGTERM");
    const out = await child.output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const lines = await readArchive(`${tmp.path}/data/archive`);
    assert.ok(lines.some((l) => l.value.data !== undefined), "no data recorded");
  },
});
