/**
 * The suite needs no network but loopback (README "Tests"): the guards in
 * tests/support/net_guard.ts hold.
 */

import assert from "node:assert/strict";
import { collectorEnvProblems, commandOf, isLoopbackHost } from "./support/net_guard.ts";
import { runCollector } from "./support/collector.ts";

Deno.test("the test process may reach loopback hosts and no other", async () => {
  for (const host of ["127.0.0.1", "localhost"]) {
    const { state } = await Deno.permissions.query({ name: "net", host });
    assert.equal(state, "granted", host);
  }
  for (
    const host of ["api.binance.com", "stream.binance.com:9443", "s3.amazonaws.com", "10.0.0.1"]
  ) {
    const { state } = await Deno.permissions.query({ name: "net", host });
    assert.notEqual(state, "granted", `${host} must not be reachable from a test`);
  }
});

Deno.test("loopback hosts are told from others", () => {
  for (const host of ["127.0.0.1", "127.3.2.1", "localhost", "[::1]", "::1", "0.0.0.0"]) {
    assert.ok(isLoopbackHost(host), host);
  }
  for (const host of ["api.binance.com", "10.0.0.1", "128.0.0.1", "127.example.com", "::2"]) {
    assert.ok(!isLoopbackHost(host), host);
  }
});

Deno.test("a collector environment that would call the real exchange or S3 is refused", () => {
  const fake = { BINANCE_WS_URL: "ws://127.0.0.1:1", BINANCE_REST_URL: "http://127.0.0.1:1" };
  assert.deepEqual(collectorEnvProblems(fake, []), []);
  assert.equal(collectorEnvProblems({}, []).length, 2, "both Binance URLs unset");
  assert.match(
    collectorEnvProblems({ BINANCE_WS_URL: fake.BINANCE_WS_URL }, ["check"]).join(),
    /BINANCE_REST_URL is unset/,
  );
  assert.match(
    collectorEnvProblems({ ...fake, BINANCE_REST_URL: "https://api.binance.com" }, []).join(),
    /not a loopback host/,
  );
  assert.match(
    collectorEnvProblems({ ...fake, S3_BUCKET_NAME: "b" }, []).join(),
    /without S3_ENDPOINT/,
  );
  assert.match(
    collectorEnvProblems({ ...fake, ALERT_WEBHOOK_URL: "https://hooks.example.com/x" }, []).join(),
    /ALERT_WEBHOOK_URL/,
  );
  assert.deepEqual(collectorEnvProblems({}, ["status"]), [], "status only asks METRICS_ADDR");
  assert.deepEqual(collectorEnvProblems({}, ["--version"]), []);
  assert.equal(
    collectorEnvProblems({}, [], fake).length,
    0,
    "URLs from an env file count",
  );
  assert.equal(commandOf(["--env-file", "x.env", "check"]), "check");
  assert.equal(commandOf(["--env-file", "x.env"]), "run");
});

Deno.test("starting a collector that would leave the machine fails the test at once", async () => {
  await assert.rejects(runCollector({ METRICS_ADDR: "off" }), /would leave the machine/);
});
