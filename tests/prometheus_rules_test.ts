/**
 * ops/prometheus/alerts.yml with the real promtool (Debian `prometheus`):
 * the rules load, their unit tests (ops/prometheus/alerts_test.yml: each
 * alert absent, pending, firing and resolved at the minute it should) pass,
 * and every alert has a test and annotations that say what to do.
 */

import assert from "node:assert/strict";
import { requireTool, runTool } from "./support/tools.ts";

const OPS = new URL("../ops/prometheus/", import.meta.url).pathname;
const rules = await Deno.readTextFile(`${OPS}alerts.yml`);
const unitTests = await Deno.readTextFile(`${OPS}alerts_test.yml`);
const promtool = requireTool("promtool", {
  testFile: "prometheus_rules_test",
  what: "the promtool check and unit tests are",
  install: "apt-get install prometheus",
});

/** The alert names of alerts.yml, in order. */
const alertNames = [...rules.matchAll(/^\s*- alert: (\w+)$/gm)].map((m) => m[1]);

/** The seed's five thresholds and the four additions, by the alert that covers each. */
const REQUIRED_ALERTS = [
  "L2UploaderReconnectsHigh", // > 5 reconnects an hour
  "L2UploaderUploadFailures", // > 10 % of uploads failed in an hour
  "L2UploaderUploadStalled", // no upload for 5 minutes while batches wait
  "L2UploaderRestarting", // > 3 restarts an hour
  "L2UploaderMemoryHigh", // resident memory > 1.5 GB
  "L2UploaderStreamStale",
  "L2UploaderSpoolFilling",
  "L2UploaderSpoolFull",
  "L2UploaderClockOffset",
  "L2UploaderDiskWritesFailing",
];

Deno.test("alerts.yml has a rule for every health threshold, each with a summary and a what-to-do description", () => {
  for (const name of REQUIRED_ALERTS) assert.ok(alertNames.includes(name), `no rule ${name}`);
  const blocks = rules.split(/^\s*- alert: /m).slice(1);
  assert.equal(blocks.length, alertNames.length);
  for (const block of blocks) {
    const name = block.split("\n")[0];
    assert.match(block, /^\s+severity: (warning|critical)$/m, `${name}: severity`);
    assert.match(block, /^\s+summary: "[^"]{20,}"$/m, `${name}: summary`);
    const description = /^\s+description: >-\n((?:\s{12}.*\n?)+)/m.exec(block)?.[1] ?? "";
    assert.ok(description.length > 100, `${name}: description too short: ${description}`);
  }
});

Deno.test("every alert has a promtool unit test that sees it fire and sees it absent", () => {
  for (const name of alertNames) {
    const checks = [
      ...unitTests.matchAll(new RegExp(`ALERTS\\{alertname="${name}"[^\\n]*`, "g")),
      ...unitTests.matchAll(new RegExp(`alertname: ${name}$`, "gm")),
    ];
    assert.ok(
      unitTests.includes(`alertname="${name}",alertstate="firing"`) ||
        unitTests.includes(`alertname: ${name}\n`),
      `${name}: no test sees it fire`,
    );
    assert.ok(
      new RegExp(`ALERTS\\{alertname="${name}"\\}', eval_time: \\d+m, exp_samples: \\[\\]`)
        .test(unitTests),
      `${name}: no test sees it absent`,
    );
    assert.ok(checks.length >= 3, `${name}: only ${checks.length} checks`);
  }
});

Deno.test({
  name: "promtool check rules accepts alerts.yml",
  ignore: !promtool,
  fn: async () => {
    const out = await runTool("promtool", ["check", "rules", "alerts.yml"], { cwd: OPS });
    assert.equal(out.code, 0, out.stdout + out.stderr);
    assert.match(out.stdout, new RegExp(`SUCCESS: ${alertNames.length} rules found`));
  },
});

Deno.test({
  name: "promtool test rules: every alert fires, stays quiet and resolves at the minute it should",
  ignore: !promtool,
  fn: async () => {
    const out = await runTool("promtool", ["test", "rules", "alerts_test.yml"], { cwd: OPS });
    assert.equal(out.code, 0, out.stdout + out.stderr);
    assert.match(out.stdout + out.stderr, /SUCCESS/);
  },
});

Deno.test({
  name: "promtool test rules fails when a rule's threshold is changed (the tests can fail)",
  ignore: !promtool,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "l2-rules-" });
    try {
      // Reconnects: > 5 becomes > 6; the test expecting 6 reconnects to warn must fail.
      const changed = rules.replace(
        "increase(l2_reconnects_total[1h])) > 5",
        "increase(l2_reconnects_total[1h])) > 6",
      );
      assert.notEqual(changed, rules);
      await Deno.writeTextFile(`${dir}/alerts.yml`, changed);
      await Deno.writeTextFile(`${dir}/alerts_test.yml`, unitTests);
      const out = await runTool("promtool", ["test", "rules", "alerts_test.yml"], { cwd: dir });
      assert.notEqual(out.code, 0);
      assert.match(out.stdout + out.stderr, /L2UploaderReconnectsHigh/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
