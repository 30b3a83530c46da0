import assert from "node:assert/strict";
import { check } from "../src/cli/check.ts";
import { parseConfig } from "../src/config.ts";
import { currentHolder, lockDataDir } from "../src/ops/data_dir_lock.ts";
import { tempDir } from "./support/temp.ts";
import { fakeBinanceRest } from "./support/binance_rest.ts";

Deno.test("data dir lock: a second taker is refused and told the holder's PID", async () => {
  await using tmp = await tempDir();
  const first = await lockDataDir(tmp.path);
  assert.ok("lock" in first);
  const second = await lockDataDir(tmp.path);
  assert.ok("holder" in second, "a second lock on the same DATA_DIR was granted");
  assert.equal(second.holder.pid, Deno.pid);
  assert.deepEqual(await currentHolder(tmp.path), { pid: Deno.pid });
  first.lock.release();
  assert.equal(await currentHolder(tmp.path), undefined);
  const third = await lockDataDir(tmp.path);
  assert.ok("lock" in third, "the lock was not free after release");
  third.lock.release();
});

Deno.test("data dir lock: dies with its process, even on SIGKILL", async () => {
  await using tmp = await tempDir();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { lockDataDir } from ${
        JSON.stringify(new URL("../src/ops/data_dir_lock.ts", import.meta.url).href)
      };
       const r = await lockDataDir(${JSON.stringify(tmp.path)});
       console.log("lock" in r ? "locked" : "refused");
       await new Promise(() => setInterval(() => {}, 1000));`,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.getReader();
  const { value } = await reader.read();
  assert.equal(new TextDecoder().decode(value).trim(), "locked");
  assert.deepEqual(await currentHolder(tmp.path), { pid: child.pid });
  child.kill("SIGKILL");
  await child.status;
  reader.releaseLock();
  await child.stdout.cancel();
  assert.equal(await currentHolder(tmp.path), undefined, "a SIGKILLed holder left its lock");
  const after = await lockDataDir(tmp.path);
  assert.ok("lock" in after);
  after.lock.release();
});

Deno.test("data dir lock: nobody holds a DATA_DIR that does not exist", async () => {
  await using tmp = await tempDir();
  assert.equal(await currentHolder(`${tmp.path}/absent`), undefined);
});

Deno.test("check reports the collector holding DATA_DIR instead of failing", async () => {
  await using tmp = await tempDir();
  const config = parseConfig({ SYMBOL: "BTCUSDT", DATA_DIR: tmp.path, METRICS_ADDR: "off" });
  const ping = fakeBinanceRest(["BTCUSDT"]);
  const run = async () => {
    let text = "";
    const code = await check(config, { print: (t) => text += t, fetch: ping });
    return { code, text };
  };
  const free = await run();
  assert.equal(free.code, 0, free.text);
  assert.match(free.text, /OK +data dir lock +\S+ is free/);
  const taken = await lockDataDir(tmp.path);
  assert.ok("lock" in taken);
  try {
    const held = await run();
    assert.equal(held.code, 0, held.text);
    assert.match(held.text, new RegExp(`OK +data dir lock .* in use .*PID ${Deno.pid}\\)`));
  } finally {
    taken.lock.release();
  }
});

Deno.test("check fails where run would stop: an unlisted symbol, METRICS_ADDR taken, LOG_FILE that cannot be opened", async () => {
  await using tmp = await tempDir();
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const config = parseConfig({
    SYMBOL: "BTCUSDT,NOSUCHCOIN",
    DATA_DIR: tmp.path,
    METRICS_ADDR: `127.0.0.1:${taken.addr.port}`,
    LOG_FILE: `${tmp.path}/file/l2.log`,
  });
  await Deno.writeTextFile(`${tmp.path}/file`, "");
  let text = "";
  const code = await check(config, { print: (t) => text += t, fetch: fakeBinanceRest() });
  assert.equal(code, 1, text);
  assert.match(text, /^FAIL +symbols +Binance does not list NOSUCHCOIN on spot$/m);
  assert.match(text, /^FAIL +metrics addr +127\.0\.0\.1:\d+ is already in use/m);
  assert.match(text, /^FAIL +log file +Not a directory/m);
  assert.match(text, /^3 check\(s\) failed$/m);
  // A directory `run` makes (LOG_FILE inside a DATA_DIR not made yet) is no failure.
  const fresh = parseConfig({
    SYMBOL: "BTCUSDT",
    DATA_DIR: `${tmp.path}/data`,
    METRICS_ADDR: "off",
    LOG_FILE: `${tmp.path}/new/logs/l2.log`,
  });
  text = "";
  assert.equal(await check(fresh, { print: (t) => text += t, fetch: fakeBinanceRest() }), 0, text);
  assert.match(text, /^OK +log file +.*l2\.log can be created \(run makes .*new\/logs\)$/m);
});

Deno.test("check passes while a collector runs: its lock and its METRICS_ADDR are reported, not failed", async () => {
  await using tmp = await tempDir();
  // What a running collector holds: the DATA_DIR lock and its status port.
  using port = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const taken = await lockDataDir(tmp.path);
  assert.ok("lock" in taken);
  try {
    const config = parseConfig({
      SYMBOL: "BTCUSDT",
      DATA_DIR: tmp.path,
      METRICS_ADDR: `127.0.0.1:${port.addr.port}`,
    });
    let text = "";
    const code = await check(config, { print: (t) => text += t, fetch: fakeBinanceRest() });
    assert.equal(code, 0, text);
    assert.match(text, /^OK +metrics addr +127\.0\.0\.1:\d+ is in use, by the running collector/m);
  } finally {
    taken.lock.release();
  }
});

Deno.test("check names the Binance URL it could not reach, and why", async () => {
  await using tmp = await tempDir();
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const restUrl = `http://127.0.0.1:${closed.addr.port}`;
  closed.close();
  const config = parseConfig({
    SYMBOL: "BTCUSDT",
    DATA_DIR: tmp.path,
    METRICS_ADDR: "off",
    BINANCE_REST_URL: restUrl,
  });
  let text = "";
  assert.equal(await check(config, { print: (t) => text += t }), 1, text);
  const failed = text.split("\n").filter((line) => line.startsWith("FAIL"));
  assert.equal(failed.length, 2, text);
  for (const line of failed) {
    assert.ok(line.includes(restUrl), line);
    assert.match(line, /refused/i);
  }
});

Deno.test("check names the symbols and, with SHARD, which of them this instance records", async () => {
  await using tmp = await tempDir();
  const lineFor = async (env: Record<string, string>) => {
    const config = parseConfig({ DATA_DIR: tmp.path, METRICS_ADDR: "off", ...env });
    let text = "";
    await check(config, { print: (t) => text += t, fetch: fakeBinanceRest() });
    return text.split("\n").find((line) => /^OK +config /.test(line)) ?? text;
  };
  assert.match(await lineFor({ SYMBOL: "BTCUSDT,ETHUSDT" }), /config +spot BTCUSDT,ETHUSDT, depth/);
  // Each of BTCUSDT and ETHUSDT falls in one of two shards; one symbol leaves the other empty.
  const both = [
    await lineFor({ SYMBOL: "BTCUSDT", SHARD: "0/2" }),
    await lineFor({ SYMBOL: "BTCUSDT", SHARD: "1/2" }),
  ];
  assert.equal(both.filter((line) => /: BTCUSDT\)/.test(line)).length, 1, both.join("\n"));
  assert.equal(
    both.filter((line) => /none of them: this instance records nothing/.test(line)).length,
    1,
    both.join("\n"),
  );
});

Deno.test("check with a local archive probes DATA_DIR itself: a file at DATA_DIR/spool is no failure, as run leaves it alone", async () => {
  await using tmp = await tempDir();
  await Deno.writeTextFile(`${tmp.path}/spool`, "not a directory");
  const config = parseConfig({ SYMBOL: "BTCUSDT", DATA_DIR: tmp.path, METRICS_ADDR: "off" });
  let text = "";
  const code = await check(config, { print: (t) => text += t, fetch: fakeBinanceRest() });
  assert.match(text, new RegExp(`^OK +data dir +${tmp.path} takes a write and a rename$`, "m"));
  assert.equal(code, 0, text);
});
