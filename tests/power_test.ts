/**
 * Keeping the Mac awake (src/ops/power.ts): the caffeinate command as data,
 * what `preventSleep` does on macOS and elsewhere, and `pmset -g` samples
 * read into advice for `check`.
 */

import assert from "node:assert/strict";
import {
  caffeinateCommand,
  type CommandSpec,
  parsePmset,
  preventSleep,
  sleepAdvice,
} from "../src/ops/power.ts";
import { check } from "../src/cli/check.ts";
import { parseConfig } from "../src/config.ts";
import { tempDir } from "./support/temp.ts";
import { fakeBinanceRest } from "./support/binance_rest.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url);

Deno.test("the caffeinate command holds idle and system sleep off until this process ends", () => {
  assert.deepEqual(caffeinateCommand(4242), {
    command: "/usr/bin/caffeinate",
    args: ["-i", "-s", "-w", "4242"],
  });
});

Deno.test("preventSleep on macOS starts caffeinate for its own pid once; release stops it", () => {
  const started: CommandSpec[] = [];
  let killed = 0;
  const guard = preventSleep({
    enabled: true,
    os: "darwin",
    pid: 777,
    spawn: (spec) => {
      started.push(spec);
      return { kill: () => killed++ };
    },
  });
  assert.deepEqual(started, [caffeinateCommand(777)]);
  guard.release();
  assert.equal(killed, 1);
});

Deno.test("preventSleep starts nothing on Linux, nor with PREVENT_SLEEP=false", () => {
  const started: CommandSpec[] = [];
  const spawn = (spec: CommandSpec) => {
    started.push(spec);
    return { kill: () => {} };
  };
  preventSleep({ enabled: true, os: "linux", spawn }).release();
  preventSleep({ enabled: false, os: "darwin", spawn }).release();
  assert.deepEqual(started, []);
});

Deno.test("preventSleep keeps going when caffeinate cannot start", () => {
  const guard = preventSleep({
    enabled: true,
    os: "darwin",
    spawn: () => {
      throw new Deno.errors.NotFound("no /usr/bin/caffeinate");
    },
  });
  guard.release();
});

Deno.test("a Mac mini's pmset -g with sleep 10 warns and names the pmset command that fixes it", async () => {
  const text = await Deno.readTextFile(new URL("pmset_g_mac_mini.txt", FIXTURES));
  const settings = parsePmset(text);
  assert.deepEqual(settings, {
    autorestart: 0,
    disksleep: 10,
    sleep: 10,
    sleepPreventedBy: "sharingd, powerd",
    displaysleep: 10,
  });
  const advice = sleepAdvice(settings);
  assert.equal(advice.ok, false);
  assert.match(advice.detail, /system sleep after 10 min, disk sleep after 10 min/);
  assert.match(advice.detail, /fix: sudo pmset -c sleep 0 disksleep 0/);
  assert.match(advice.detail, /sudo pmset autorestart 1/);
});

Deno.test("pmset -g custom: the AC Power section counts, not the battery's", async () => {
  const text = await Deno.readTextFile(new URL("pmset_g_custom_macbook.txt", FIXTURES));
  const settings = parsePmset(text);
  assert.equal(settings.sleep, 0);
  assert.equal(settings.disksleep, 0);
  assert.equal(settings.displaysleep, 10);
  const advice = sleepAdvice(settings);
  assert.equal(advice.ok, true, advice.detail);
  assert.match(advice.detail, /system sleep never, disk sleep never on AC power/);
});

Deno.test("only disk sleep left on: the fix names disksleep alone", () => {
  const advice = sleepAdvice(parsePmset(" sleep                0\n disksleep            10\n"));
  assert.equal(advice.ok, false);
  assert.match(advice.detail, /fix: sudo pmset -c disksleep 0$/);
});

Deno.test("check on macOS prints the sleep settings as a WARN line that does not fail it", async () => {
  await using tmp = await tempDir();
  const config = parseConfig({
    DATA_DIR: tmp.path,
    BINANCE_REST_URL: "http://127.0.0.1:9",
    METRICS_ADDR: "off",
  });
  const sample = await Deno.readTextFile(new URL("pmset_g_mac_mini.txt", FIXTURES));
  let out = "";
  const code = await check(config, {
    print: (text) => out += text,
    fetch: fakeBinanceRest(),
    os: "darwin",
    pmset: () => Promise.resolve(sample),
  });
  assert.equal(code, 0, out);
  assert.match(out, /^WARN {2}sleep settings .*fix: sudo pmset -c sleep 0 disksleep 0/m);

  let linux = "";
  await check(config, {
    print: (text) => linux += text,
    fetch: fakeBinanceRest(),
    os: "linux",
    pmset: () => Promise.reject(new Error("must not be called")),
  });
  assert.doesNotMatch(linux, /sleep settings/);
});
