/**
 * ops/grafana/l2-uploader.json and ops/prometheus/alerts.yml against the
 * metrics the collector really exports (read from a live Metrics registry,
 * not a list copied here): the dashboard has the fields Grafana's import
 * needs, every PromQL expression parses (promtool) and names only exported
 * metrics.
 */

import assert from "node:assert/strict";
import { OPTION_NAMES } from "../src/config.ts";
import { LABELS } from "../src/ops/launchd.ts";
import { Metrics } from "../src/ops/metrics.ts";
import { dashboardExpressions, metricNames, ruleExpressions } from "./support/promql.ts";
import { requireTool, runTool } from "./support/tools.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const dashboard = JSON.parse(await Deno.readTextFile(`${ROOT}ops/grafana/l2-uploader.json`));
const rules = await Deno.readTextFile(`${ROOT}ops/prometheus/alerts.yml`);

/** Series Prometheus itself makes: the scrape's `up` and the alerts' `ALERTS`. */
const PROMETHEUS_SERIES = new Set(["up", "ALERTS"]);
/** Every series name the registry exposes (histograms as their _bucket, _sum, _count). */
async function exportedNames(): Promise<Set<string>> {
  const metrics = new Metrics();
  const names = new Set<string>();
  for (const m of await metrics.registry.getMetricsAsJSON()) {
    if (String(m.type) === "histogram") {
      for (const suffix of ["_bucket", "_sum", "_count"]) names.add(m.name + suffix);
    } else {
      names.add(m.name);
    }
  }
  return names;
}

function unknownNames(expressions: string[], exported: Set<string>): Map<string, string> {
  const unknown = new Map<string, string>();
  for (const expr of expressions) {
    for (const name of metricNames(expr)) {
      if (!exported.has(name) && !PROMETHEUS_SERIES.has(name)) unknown.set(name, expr);
    }
  }
  return unknown;
}

Deno.test("metricNames finds selected metrics and skips functions, labels, keywords and ranges", () => {
  assert.deepEqual(
    [...metricNames(
      'sum by (instance) (increase(l2_upload_failures_total{job="x"}[1h])) / ' +
        "sum without (cause) (rate(l2_upload_attempts_total[5m] offset 1m)) > 0.1 " +
        "unless on (instance) up == bool 1e3",
    )].sort(),
    ["l2_upload_attempts_total", "l2_upload_failures_total", "up"],
  );
  assert.deepEqual(
    [...metricNames('label_replace(rate(foo_total[1m]), "type", "$1", "stream", "[^@]+@(.*)")')],
    ["foo_total"],
  );
});

Deno.test("the dashboard has what Grafana's import needs: title, uid, panels with targets and positions", () => {
  assert.equal(typeof dashboard.title, "string");
  assert.match(dashboard.uid, /^[a-zA-Z0-9_-]{1,40}$/);
  assert.equal(typeof dashboard.schemaVersion, "number");
  assert.ok(Array.isArray(dashboard.panels) && dashboard.panels.length >= 10);
  const ids = new Set<number>();
  for (const panel of dashboard.panels) {
    assert.equal(typeof panel.id, "number");
    assert.ok(!ids.has(panel.id), `duplicate panel id ${panel.id}`);
    ids.add(panel.id);
    assert.equal(typeof panel.title, "string");
    const { x, y, w, h } = panel.gridPos;
    assert.ok(x >= 0 && w > 0 && x + w <= 24 && y >= 0 && h > 0, `${panel.title}: gridPos`);
    if (panel.type === "row") continue;
    assert.ok(["timeseries", "stat"].includes(panel.type), `${panel.title}: ${panel.type}`);
    assert.ok(panel.targets.length > 0, `${panel.title}: no target`);
    for (const target of panel.targets) {
      assert.match(target.refId, /^[A-Z]$/);
      assert.equal(target.datasource.uid, "${datasource}");
      assert.ok(target.expr.length > 0);
    }
  }
  // The datasource is chosen at import; instances come from the collector's own metric.
  const variables = dashboard.templating.list.map((v: { name: string }) => v.name);
  assert.deepEqual(variables, ["datasource", "job", "instance"]);
});

Deno.test("the dashboard shows what the issue lists", () => {
  const all = dashboardExpressions(dashboard).join("\n");
  for (
    const name of [
      "l2_messages_received_total", // messages/s per stream type
      "l2_reconnects_total",
      "l2_sequence_gaps_total",
      "l2_upload_duration_seconds_bucket", // upload latency
      "l2_upload_failures_total",
      "l2_spool_bytes",
      "l2_upload_queue_bytes",
      "process_resident_memory_bytes",
      "l2_clock_offset_seconds",
      "l2_exchange_lag_seconds_bucket",
    ]
  ) assert.ok(all.includes(name), name);
});

Deno.test("every metric the dashboard names is one the collector exports", async () => {
  const expressions = dashboardExpressions(dashboard);
  assert.ok(expressions.length >= 20, `${expressions.length} expressions`);
  const unknown = unknownNames(expressions, await exportedNames());
  assert.deepEqual(Object.fromEntries(unknown), {});
});

Deno.test("every metric the alert rules name is one the collector exports", async () => {
  const expressions = ruleExpressions(rules);
  assert.equal(expressions.length, [...rules.matchAll(/- alert: /g)].length);
  const unknown = unknownNames(expressions, await exportedNames());
  assert.deepEqual(Object.fromEntries(unknown), {});
});

Deno.test("a misspelt metric is caught", async () => {
  const unknown = unknownNames(["rate(l2_mesages_received_total[1m])"], await exportedNames());
  assert.deepEqual([...unknown.keys()], ["l2_mesages_received_total"]);
});

const promtool = requireTool("promtool", {
  testFile: "dashboard_test",
  what: "the PromQL syntax check of the dashboard is",
  install: "apt-get install prometheus",
});

Deno.test({
  name: "every dashboard expression parses (promtool, as recording rules)",
  ignore: !promtool,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "l2-dashboard-" });
    try {
      const expressions = dashboardExpressions(dashboard).map((e) =>
        e.replaceAll("$instance", ".*").replaceAll("$job", "l2-uploader")
      );
      const file = "groups:\n  - name: dashboard\n    rules:\n" +
        expressions.map((e, i) =>
          `      - record: dashboard:expr_${i}\n        expr: ${JSON.stringify(e)}\n`
        )
          .join("");
      await Deno.writeTextFile(`${dir}/dashboard.yml`, file);
      const out = await runTool("promtool", ["check", "rules", "dashboard.yml"], { cwd: dir });
      assert.equal(out.code, 0, out.stdout + out.stderr);
      assert.match(out.stdout, new RegExp(`SUCCESS: ${expressions.length} rules found`));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("the alerts' runbook texts name the launchd labels and options that exist", () => {
  const labels = [...rules.matchAll(/com\.l2[\w.]*/g)].map((m) => m[0]);
  assert.ok(labels.length > 0, "the scrape alert tells how to look at the job");
  for (const label of labels) {
    assert.ok(Object.values(LABELS).includes(label), `${label} is not a label install uses`);
  }
  const words = new Set([...rules.matchAll(/\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b/g)].map((m) => m[0]));
  for (const word of words) {
    assert.ok(OPTION_NAMES.includes(word), `${word} is not an option`);
  }
});

Deno.test("every reconnect cause has a series from the start, so increase() sees the first ones", async () => {
  const metrics = new Metrics();
  const text = await metrics.registry.metrics();
  for (
    const cause of ["server", "error", "stale", "open-timeout", "subscribe-failed", "suspended"]
  ) {
    assert.match(text, new RegExp(`l2_reconnects_total\\{cause="${cause}"\\} 0`), cause);
  }
});
