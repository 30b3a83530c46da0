/**
 * A real Prometheus (Debian's `prometheus` binary) on 127.0.0.1 scrapes a
 * running collector (fake exchange, s3rver) every second and evaluates
 * ops/prometheus/alerts.yml every second. S3 is stopped: the upload-failure
 * alert must fire; S3 returns: it must resolve. Asked through Prometheus's
 * HTTP API, as Grafana and Alertmanager would.
 *
 * Test setting: the rules are loaded from a copy with every duration
 * divided by 240 (`scaleRuleDurations`: the hour of the failure ratio
 * becomes 15 s), so the test takes seconds, not an hour.
 */

import assert from "node:assert/strict";
import { Metrics } from "../src/ops/metrics.ts";
import { spawnCollector } from "./support/collector.ts";
import { FakeExchange, partialDepthFeed } from "./support/fake_exchange.ts";
import { dashboardExpressions, metricNames, scaleRuleDurations } from "./support/promql.ts";
import { TestS3 } from "./support/s3.ts";
import { tempDir } from "./support/temp.ts";
import { requireTool } from "./support/tools.ts";
import { waitFor } from "./support/wait.ts";
import { freePort } from "./support/net_guard.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const TIME_SCALE = 240;
const ALERT = "L2UploaderUploadFailures";
const STREAMS = ["btcusdt@depth20@100ms", "ethusdt@depth20@100ms"];

const prometheus = requireTool("prometheus", {
  testFile: "prometheus_e2e_test",
  what: "the end-to-end test with a real Prometheus is",
  install: "apt-get install prometheus",
});

Deno.test("scaleRuleDurations shortens for: and ranges, keeping a floor", () => {
  assert.equal(
    scaleRuleDurations(
      "        expr: increase(x[1h]) > 0 and rate(y[5m]) > 1\n        for: 10m\n",
      240,
    ),
    "        expr: increase(x[15s]) > 0 and rate(y[2s]) > 1\n        for: 3s\n",
  );
});

interface PromAlert {
  labels: Record<string, string>;
  state: "pending" | "firing";
}

async function api<T>(base: string, path: string): Promise<T> {
  const response = await fetch(`${base}${path}`);
  const body = await response.json();
  assert.equal(body.status, "success", `${path}: ${JSON.stringify(body)}`);
  return body.data as T;
}

Deno.test({
  name: "real Prometheus: stopping S3 fires the upload-failure alert, its return resolves it",
  ignore: !prometheus,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await FakeExchange.start();
    STREAMS.forEach((s, i) =>
      exchange.setFeed(s, partialDepthFeed({ rate: 20, startId: 1_000_000 * (i + 1) }))
    );
    await using s3 = await TestS3.start();
    await using data = await tempDir();
    await using promDir = await tempDir();
    const metricsPort = freePort();
    await using collector = spawnCollector({
      ...s3.env(),
      SYMBOL: "BTCUSDT,ETHUSDT",
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: data.path,
      BATCH_SECONDS: "1",
      METRICS_ADDR: `127.0.0.1:${metricsPort}`,
      INSTANCE_ID: "prom-e2e",
    });

    const rules = await Deno.readTextFile(`${ROOT}ops/prometheus/alerts.yml`);
    await Deno.writeTextFile(`${promDir.path}/alerts.yml`, scaleRuleDurations(rules, TIME_SCALE));
    await Deno.writeTextFile(
      `${promDir.path}/prometheus.yml`,
      [
        "global:",
        "  scrape_interval: 1s",
        "  evaluation_interval: 1s",
        "rule_files: [alerts.yml]",
        "scrape_configs:",
        "  - job_name: l2-uploader",
        `    static_configs: [{targets: ["127.0.0.1:${metricsPort}"]}]`,
        "",
      ].join("\n"),
    );
    const promPort = freePort();
    const base = `http://127.0.0.1:${promPort}`;
    const server = new Deno.Command(prometheus!, {
      args: [
        `--config.file=${promDir.path}/prometheus.yml`,
        `--storage.tsdb.path=${promDir.path}/data`,
        `--web.listen-address=127.0.0.1:${promPort}`,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    let promLog = "";
    const logged = (async () => {
      for await (const chunk of server.stderr.pipeThrough(new TextDecoderStream())) {
        promLog += chunk;
      }
    })();
    try {
      await waitFor(
        async () => {
          try {
            const response = await fetch(`${base}/-/ready`);
            await response.body?.cancel();
            return response.ok;
          } catch {
            return false; // not listening yet
          }
        },
        20_000,
        "Prometheus to be ready",
        200,
      );
      const alerts = async () =>
        (await api<{ alerts: PromAlert[] }>(base, "/api/v1/alerts")).alerts;
      const alertState = async (name: string) =>
        (await alerts()).find((a) => a.labels.alertname === name)?.state;
      const uploadsStored = async () => {
        const result = await api<{ result: { value: [number, string] }[] }>(
          base,
          `/api/v1/query?query=${encodeURIComponent("sum(l2_batches_stored_total)")}`,
        );
        return Number(result.result[0]?.value[1] ?? 0);
      };

      // Healthy: scraped, batches stored, the alert quiet.
      await waitFor(
        async () => await uploadsStored() >= 3,
        30_000,
        "uploads seen by Prometheus",
        500,
      );
      const rulesLoaded = await api<{ groups: { rules: unknown[] }[] }>(base, "/api/v1/rules");
      assert.equal(rulesLoaded.groups[0].rules.length, [...rules.matchAll(/- alert: /g)].length);
      assert.equal(await alertState(ALERT), undefined);

      // Every metric the dashboard names is in what Prometheus scraped.
      const scraped = new Set(await api<string[]>(base, "/api/v1/label/__name__/values"));
      const registry = new Set(
        (await new Metrics().registry.getMetricsAsJSON()).map((m) => m.name),
      );
      for (
        const expr of dashboardExpressions(JSON.parse(
          await Deno.readTextFile(`${ROOT}ops/grafana/l2-uploader.json`),
        ))
      ) {
        for (const name of metricNames(expr)) {
          const family = name.replace(/_(bucket|sum|count)$/, "");
          assert.ok(registry.has(name) || registry.has(family), `${name} is not exported`);
          assert.ok(scraped.has(name), `${name} not scraped (${expr})`);
        }
      }

      // S3 down: attempts fail, the failure share passes 10 %, the alert fires.
      await s3.stop();
      const stoppedAt = Date.now();
      await waitFor(
        async () => await alertState(ALERT) === "firing",
        30_000,
        `${ALERT} to fire`,
        500,
      );
      const firedAfter = Date.now() - stoppedAt;
      const firing = (await alerts()).find((a) => a.labels.alertname === ALERT)!;
      assert.equal(firing.labels.severity, "warning");
      assert.equal(firing.labels.instance, `127.0.0.1:${metricsPort}`);
      assert.notEqual(await alertState("L2UploaderDown"), "firing");

      // S3 back: stores succeed, the failed attempts leave the (scaled) hour, it resolves.
      await s3.resume();
      const resumedAt = Date.now();
      await waitFor(
        async () => await alertState(ALERT) === undefined,
        45_000,
        `${ALERT} to resolve`,
        500,
      );
      const resolvedAfter = Date.now() - resumedAt;
      // Not before the failures left the 15 s window: it resolves because they aged out.
      assert.ok(resolvedAfter >= 5_000, `resolved after only ${resolvedAfter} ms`);
      assert.ok(firedAfter < 30_000);
    } catch (error) {
      throw new Error(`${(error as Error).message}\nprometheus log:\n${promLog.slice(-3000)}`, {
        cause: error,
      });
    } finally {
      server.kill("SIGTERM");
      await server.status;
      await logged;
      collector.kill("SIGTERM");
      await collector.status;
    }
  },
});
