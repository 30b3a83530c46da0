/**
 * Tests for src/config.ts: docs/DESIGN.md's defaults, every variable's good and bad values, the
 * all-at-once problem report, secret redaction, .env handling and byte sizes.
 */

import assert from "node:assert/strict";
import {
  ConfigError,
  DEFAULT_URLS,
  mergeEnv,
  parseByteSize,
  parseConfig,
  parseEnvFile,
  SECRET_VARIABLES,
} from "../src/config.ts";
import type { Config } from "../src/config_types.ts";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** Parses `env` expecting failure; returns the error. */
function problemsOf(env: Record<string, string>): ConfigError {
  try {
    parseConfig(env);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${error}`);
    return error;
  }
  assert.fail(`expected a ConfigError for ${JSON.stringify(env)}`);
}

/** The variables a failed parse complained about. */
function badVariables(env: Record<string, string>): string[] {
  return problemsOf(env).problems.map((p) => p.variable);
}

Deno.test("parseConfig applies docs/DESIGN.md's defaults to an empty environment", () => {
  const expected: Config = {
    symbols: ["BTCUSDT"],
    symbolExclude: [],
    shard: { index: 0, count: 1 },
    exchangeInfoRefreshSeconds: 300,
    streamKinds: ["depth"],
    market: "spot",
    depthLevel: 20,
    updateSpeedMs: 100,
    timeUnit: "ms",
    batchSeconds: 60,
    maxMessagesPerBatch: 10000,
    prefix: "binance",
    uploadConcurrency: 4,
    uploadQueueMaxBytes: 64 * MiB,
    gzipLevel: 5,
    dataDir: "./data",
    spoolMaxBytes: 10 * GiB,
    wsUrl: "wss://stream.binance.com:9443",
    restUrl: "https://api.binance.com",
    wsRotateSeconds: 85500,
    staleAfterSeconds: 30,
    snapshotIntervalSeconds: 3600,
    snapshotLimit: 1000,
    streamsPerConnection: 200,
    suspendThresholdSeconds: 5,
    preventSleep: true,
    metrics: { hostname: "127.0.0.1", port: 9464 },
    instanceId: "collector-1",
    logLevel: "info",
    logFormat: "text",
    logMaxBytes: 50 * MiB,
    logMaxFiles: 10,
  };
  assert.deepEqual(parseConfig({}, { hostname: "collector-1" }), expected);
});

Deno.test("parseConfig takes TIME_UNIT=us for spot only (BINANCE.md, Endpoints)", () => {
  assert.equal(parseConfig({ TIME_UNIT: "us" }).timeUnit, "us");
  assert.equal(parseConfig({ TIME_UNIT: "MS" }).timeUnit, "ms");
  assert.equal(parseConfig({ MARKET: "usdm", TIME_UNIT: "ms" }).timeUnit, "ms");
  assert.equal(
    problemsOf({ MARKET: "usdm", TIME_UNIT: "us" }).message,
    `TIME_UNIT="us": expected ms for MARKET=usdm (only spot offers us)`,
  );
  assert.deepEqual(badVariables({ TIME_UNIT: "ns" }), ["TIME_UNIT"]);
});

Deno.test("parseConfig treats empty and blank values as unset", () => {
  const blank = parseConfig(
    { SYMBOL: "", MARKET: "  ", BATCH_SECONDS: "", METRICS_ADDR: "", S3_BUCKET_NAME: "" },
    { hostname: "h" },
  );
  assert.deepEqual(blank, parseConfig({}, { hostname: "h" }));
});

Deno.test("parseConfig returns a frozen object with frozen nested values", () => {
  const config = parseConfig({
    SYMBOL: "BTCUSDT,ETHUSDT",
    S3_BUCKET_NAME: "my-bucket",
  });
  assert.ok(Object.isFrozen(config));
  assert.ok(Object.isFrozen(config.symbols));
  assert.ok(Object.isFrozen(config.s3));
  assert.ok(Object.isFrozen(config.metrics));
  assert.throws(() => (config.symbols as string[]).push("XRPUSDT"), TypeError);
});

Deno.test("parseConfig normalises SYMBOL lists: trim, upper-case, drop empties, de-duplicate", () => {
  assert.deepEqual(
    parseConfig({ SYMBOL: " btcusdt, ETHUSDT ,,BTCUSDT,solusdt" }).symbols,
    ["BTCUSDT", "ETHUSDT", "SOLUSDT"],
  );
  assert.deepEqual(parseConfig({ SYMBOL: "ethusdt" }).symbols, ["ETHUSDT"]);
});

Deno.test("parseConfig allows underscores in symbols only for usdm", () => {
  assert.deepEqual(
    parseConfig({ MARKET: "usdm", SYMBOL: "ethusdt_210625,BTCUSDT" }).symbols,
    ["ETHUSDT_210625", "BTCUSDT"],
  );
  const error = problemsOf({ SYMBOL: "ETHUSDT_210625" });
  assert.deepEqual(error.problems.map((p) => p.variable), ["SYMBOL"]);
  assert.equal(
    error.message,
    `SYMBOL="ETHUSDT_210625": expected one or more comma-separated symbols of 2 to 30 letters and digits, patterns with * (such as *USDT) or ALL`,
  );
});

Deno.test("parseConfig rejects malformed SYMBOL values", () => {
  for (
    const bad of ["BTC-USDT", "B", "A".repeat(31), ",,", "BTC USDT", "BTCUSDT,ÉT.H", "**.", "BTC?"]
  ) {
    assert.deepEqual(badVariables({ SYMBOL: bad }), ["SYMBOL"], bad);
  }
});

Deno.test("parseConfig reads SYMBOL=ALL, patterns and SYMBOL_EXCLUDE case-insensitively", () => {
  const config = parseConfig({ SYMBOL: "all", SYMBOL_EXCLUDE: "btc*, *up*" });
  assert.deepEqual(config.symbols, ["*"]);
  assert.deepEqual(config.symbolExclude, ["BTC*", "*UP*"]);
  assert.deepEqual(parseConfig({ SYMBOL: "*usdt,ethbtc,Bnb*" }).symbols, [
    "*USDT",
    "ETHBTC",
    "BNB*",
  ]);
  // Spot lists symbols in other scripts (BINANCE.md, Payloads); kept in NFC.
  assert.deepEqual(parseConfig({ SYMBOL: "币安人生USDT,e\u0301thusdt" }).symbols, [
    "币安人生USDT",
    "\u00c9THUSDT",
  ]);
});

Deno.test("parseConfig reads STREAMS case-insensitively; trade is spot only", () => {
  assert.deepEqual(parseConfig({ STREAMS: "depth, TRADE,bookticker,depth" }).streamKinds, [
    "depth",
    "trade",
    "bookTicker",
  ]);
  assert.deepEqual(parseConfig({ MARKET: "usdm", STREAMS: "aggtrade" }).streamKinds, ["aggTrade"]);
  assert.deepEqual(badVariables({ MARKET: "usdm", STREAMS: "depth,trade" }), ["STREAMS"]);
  assert.deepEqual(badVariables({ STREAMS: "depth,kline" }), ["STREAMS"]);
  assert.deepEqual(badVariables({ STREAMS: "," }), ["STREAMS"]);
});

Deno.test("parseConfig reads SHARD=k/N and EXCHANGE_INFO_REFRESH_SECONDS", () => {
  assert.deepEqual(parseConfig({ SHARD: "2/3" }).shard, { index: 2, count: 3 });
  assert.equal(parseConfig({ EXCHANGE_INFO_REFRESH_SECONDS: "60" }).exchangeInfoRefreshSeconds, 60);
  for (const bad of ["3/3", "1", "-1/2", "0/0", "a/b", "0/2000"]) {
    assert.deepEqual(badVariables({ SHARD: bad }), ["SHARD"], bad);
  }
  assert.deepEqual(badVariables({ EXCHANGE_INFO_REFRESH_SECONDS: "0" }), [
    "EXCHANGE_INFO_REFRESH_SECONDS",
  ]);
});

Deno.test("parseConfig accepts MARKET case-insensitively and picks that market's URLs", () => {
  const usdm = parseConfig({ MARKET: "USDM" });
  assert.equal(usdm.market, "usdm");
  assert.equal(usdm.wsUrl, DEFAULT_URLS.usdm.ws);
  assert.equal(usdm.restUrl, DEFAULT_URLS.usdm.rest);
  assert.equal(parseConfig({ MARKET: "Spot" }).market, "spot");
  assert.deepEqual(badVariables({ MARKET: "futures" }), ["MARKET"]);
});

Deno.test("parseConfig accepts DEPTH_LEVEL 5, 10, 20 and full only", () => {
  assert.equal(parseConfig({ DEPTH_LEVEL: "5" }).depthLevel, 5);
  assert.equal(parseConfig({ DEPTH_LEVEL: "10" }).depthLevel, 10);
  assert.equal(parseConfig({ DEPTH_LEVEL: "FULL" }).depthLevel, "full");
  const error = problemsOf({ DEPTH_LEVEL: "7" });
  assert.equal(error.message, `DEPTH_LEVEL="7": expected one of 5, 10, 20, full`);
  assert.deepEqual(error.problems, [
    { variable: "DEPTH_LEVEL", value: "7", allowed: "one of 5, 10, 20, full" },
  ]);
});

Deno.test("parseConfig checks UPDATE_SPEED_MS against what the chosen market allows", () => {
  assert.equal(parseConfig({ UPDATE_SPEED_MS: "1000" }).updateSpeedMs, 1000);
  assert.equal(parseConfig({ MARKET: "usdm", UPDATE_SPEED_MS: "250" }).updateSpeedMs, 250);
  assert.equal(parseConfig({ MARKET: "usdm", UPDATE_SPEED_MS: "500" }).updateSpeedMs, 500);
  assert.equal(
    problemsOf({ UPDATE_SPEED_MS: "250" }).message,
    `UPDATE_SPEED_MS="250": expected 100 or 1000 for MARKET=spot`,
  );
  assert.equal(
    problemsOf({ MARKET: "usdm", UPDATE_SPEED_MS: "1000" }).message,
    `UPDATE_SPEED_MS="1000": expected 100, 250 or 500 for MARKET=usdm`,
  );
  assert.deepEqual(badVariables({ UPDATE_SPEED_MS: "fast" }), ["UPDATE_SPEED_MS"]);
});

Deno.test("parseConfig checks SNAPSHOT_LIMIT against what the chosen market allows", () => {
  assert.equal(parseConfig({ SNAPSHOT_LIMIT: "5000" }).snapshotLimit, 5000);
  assert.equal(parseConfig({ MARKET: "usdm", SNAPSHOT_LIMIT: "500" }).snapshotLimit, 500);
  assert.match(problemsOf({ MARKET: "usdm", SNAPSHOT_LIMIT: "5000" }).message, /MARKET=usdm/);
  assert.deepEqual(badVariables({ SNAPSHOT_LIMIT: "7" }), ["SNAPSHOT_LIMIT"]);
});

Deno.test("parseConfig enforces the bounds of every integer option", () => {
  const bounds: Array<[string, keyof Config, number, number]> = [
    ["BATCH_SECONDS", "batchSeconds", 1, 3600],
    ["MAX_MESSAGES_PER_BATCH", "maxMessagesPerBatch", 1, 1_000_000],
    ["UPLOAD_CONCURRENCY", "uploadConcurrency", 1, 64],
    ["GZIP_LEVEL", "gzipLevel", 1, 9],
    ["WS_ROTATE_SECONDS", "wsRotateSeconds", 1, 86000],
    ["STALE_AFTER_SECONDS", "staleAfterSeconds", 1, 3600],
    ["SNAPSHOT_INTERVAL_SECONDS", "snapshotIntervalSeconds", 10, 86400],
    ["STREAMS_PER_CONNECTION", "streamsPerConnection", 1, 1024],
    ["SUSPEND_THRESHOLD_SECONDS", "suspendThresholdSeconds", 2, 3600],
    ["LOG_MAX_FILES", "logMaxFiles", 1, 1000],
  ];
  for (const [variable, key, min, max] of bounds) {
    assert.equal(parseConfig({ [variable]: String(min) })[key], min, variable);
    assert.equal(parseConfig({ [variable]: ` ${max} ` })[key], max, variable);
    for (
      const bad of [String(min - 1), String(max + 1), "1.5", "-1", "ten", "1e3", "9".repeat(25)]
    ) {
      const error = problemsOf({ [variable]: bad });
      assert.deepEqual(error.problems, [
        { variable, value: bad, allowed: `an integer from ${min} to ${max}` },
      ], `${variable}=${bad}`);
    }
  }
});

Deno.test("parseConfig reads PREVENT_SLEEP as a boolean and names a bad value", () => {
  assert.equal(parseConfig({ PREVENT_SLEEP: "false" }).preventSleep, false);
  assert.equal(parseConfig({ PREVENT_SLEEP: "1" }).preventSleep, true);
  assert.deepEqual(problemsOf({ PREVENT_SLEEP: "maybe" }).problems, [
    { variable: "PREVENT_SLEEP", value: "maybe", allowed: "one of true, false, 1, 0, yes, no" },
  ]);
});

Deno.test("parseConfig reads byte sizes and requires them above zero", () => {
  const config = parseConfig({
    UPLOAD_QUEUE_MAX_BYTES: "128MiB",
    SPOOL_MAX_BYTES: "1.5GB",
    LOG_MAX_BYTES: "1048576",
  });
  assert.equal(config.uploadQueueMaxBytes, 128 * MiB);
  assert.equal(config.spoolMaxBytes, 1.5 * GiB);
  assert.equal(config.logMaxBytes, MiB);
  for (const variable of ["UPLOAD_QUEUE_MAX_BYTES", "SPOOL_MAX_BYTES", "LOG_MAX_BYTES"]) {
    for (const bad of ["0", "0MB", "lots", "-5MB", "10PB"]) {
      assert.deepEqual(badVariables({ [variable]: bad }), [variable], `${variable}=${bad}`);
    }
  }
});

Deno.test("parseConfig leaves s3 out without a bucket and fills it in with one", () => {
  assert.equal(parseConfig({}).s3, undefined);
  assert.equal("s3" in parseConfig({ S3_BUCKET_NAME: "" }), false);
  const config = parseConfig({
    S3_BUCKET_NAME: "my.bucket-1",
    S3_PREFIX: "raw/binance//",
    AWS_REGION: "eu-west-1",
    S3_ENDPOINT: "http://127.0.0.1:4568",
    S3_FORCE_PATH_STYLE: "YES",
    S3_SSE: "aws:kms",
    S3_SSE_KMS_KEY_ID: "alias/l2",
    S3_STORAGE_CLASS: "intelligent_tiering",
  });
  assert.deepEqual(config.s3, {
    bucket: "my.bucket-1",
    prefix: "raw/binance",
    region: "eu-west-1",
    endpoint: "http://127.0.0.1:4568",
    forcePathStyle: true,
    sse: "aws:kms",
    sseKmsKeyId: "alias/l2",
    storageClass: "INTELLIGENT_TIERING",
  });
  assert.equal(config.prefix, "raw/binance");
  assert.deepEqual(parseConfig({ S3_BUCKET_NAME: "abc", S3_SSE: "aes256" }).s3, {
    bucket: "abc",
    prefix: "binance",
    forcePathStyle: false,
    sse: "AES256",
  });
});

Deno.test("parseConfig accepts every S3_FORCE_PATH_STYLE spelling and no other", () => {
  for (
    const [text, value] of [["true", true], ["1", true], ["yes", true], ["False", false], [
      "0",
      false,
    ], ["no", false]] as const
  ) {
    assert.equal(
      parseConfig({ S3_BUCKET_NAME: "abc", S3_FORCE_PATH_STYLE: text }).s3?.forcePathStyle,
      value,
    );
  }
  assert.deepEqual(badVariables({ S3_FORCE_PATH_STYLE: "maybe" }), ["S3_FORCE_PATH_STYLE"]);
});

Deno.test("parseConfig rejects bucket names S3 would reject", () => {
  for (
    const bad of [
      "ab",
      "My-Bucket",
      "bucket_name",
      "-bucket",
      "bucket-",
      "a..b",
      "192.168.1.1",
      "b".repeat(64),
    ]
  ) {
    assert.deepEqual(badVariables({ S3_BUCKET_NAME: bad }), ["S3_BUCKET_NAME"], bad);
  }
  assert.equal(parseConfig({ S3_BUCKET_NAME: "b".repeat(63) }).s3?.bucket, "b".repeat(63));
});

Deno.test("parseConfig strips trailing slashes from S3_PREFIX and rejects unsafe prefixes", () => {
  assert.equal(parseConfig({ S3_PREFIX: "a/b/" }).prefix, "a/b");
  for (const bad of ["/binance", "a/../b", "..", "a//b", "./a", "/"]) {
    assert.deepEqual(badVariables({ S3_PREFIX: bad }), ["S3_PREFIX"], bad);
  }
});

Deno.test("parseConfig validates the other S3 options", () => {
  const cases: Array<[Record<string, string>, string]> = [
    [{ S3_ENDPOINT: "localhost:9000" }, "S3_ENDPOINT"],
    [{ S3_ENDPOINT: "ftp://store" }, "S3_ENDPOINT"],
    [{ S3_SSE: "DES" }, "S3_SSE"],
    [{ S3_SSE_KMS_KEY_ID: "key" }, "S3_SSE_KMS_KEY_ID"],
    [{ S3_SSE: "AES256", S3_SSE_KMS_KEY_ID: "key" }, "S3_SSE_KMS_KEY_ID"],
    [{ S3_STORAGE_CLASS: "COLD" }, "S3_STORAGE_CLASS"],
    [{ AWS_REGION: "EU WEST" }, "AWS_REGION"],
  ];
  for (const [env, variable] of cases) {
    assert.deepEqual(badVariables(env), [variable], JSON.stringify(env));
  }
  assert.equal(
    problemsOf({ S3_SSE_KMS_KEY_ID: "key" }).message,
    `S3_SSE_KMS_KEY_ID="key": expected to be unset unless S3_SSE=aws:kms`,
  );
  for (const storageClass of ["STANDARD", "GLACIER_IR", "DEEP_ARCHIVE", "EXPRESS_ONEZONE"]) {
    assert.equal(
      parseConfig({ S3_BUCKET_NAME: "abc", S3_STORAGE_CLASS: storageClass }).s3?.storageClass,
      storageClass,
    );
  }
});

Deno.test("parseConfig requires AWS key pairs to be complete when a bucket is set", () => {
  const error = problemsOf({ S3_BUCKET_NAME: "abc", AWS_ACCESS_KEY_ID: "AKIAFAKE" });
  assert.deepEqual(error.problems, [{
    variable: "AWS_SECRET_ACCESS_KEY",
    value: undefined,
    allowed:
      "to be set together with AWS_ACCESS_KEY_ID (or neither, to use the AWS credential chain)",
  }]);
  assert.ok(!error.message.includes("AKIAFAKE"));
  assert.deepEqual(
    badVariables({ S3_BUCKET_NAME: "abc", AWS_SESSION_TOKEN: "tok" }),
    ["AWS_SESSION_TOKEN"],
  );
  // Complete pairs, or AWS variables left over in a shell with no bucket, are fine.
  parseConfig({ S3_BUCKET_NAME: "abc", AWS_ACCESS_KEY_ID: "a", AWS_SECRET_ACCESS_KEY: "b" });
  parseConfig({ AWS_ACCESS_KEY_ID: "a" });
});

Deno.test("parseConfig accepts DATA_DIR as given", () => {
  assert.equal(parseConfig({ DATA_DIR: "/var/lib/l2 data" }).dataDir, "/var/lib/l2 data");
  assert.equal(parseConfig({ DATA_DIR: "./a~b" }).dataDir, "./a~b");
});

Deno.test("parseConfig refuses DATA_DIR and LOG_FILE starting with ~, which nothing expands", () => {
  const error = problemsOf({ DATA_DIR: "~/l2data", LOG_FILE: "~/Library/Logs/l2.log" });
  assert.deepEqual(error.problems.map((p) => p.variable).sort(), ["DATA_DIR", "LOG_FILE"]);
  assert.match(error.message, /not starting with ~/);
});

Deno.test("parseConfig validates the Binance URL overrides and strips trailing slashes", () => {
  const config = parseConfig({
    BINANCE_WS_URL: "ws://127.0.0.1:8080/",
    BINANCE_REST_URL: "http://127.0.0.1:8081/",
  });
  assert.equal(config.wsUrl, "ws://127.0.0.1:8080");
  assert.equal(config.restUrl, "http://127.0.0.1:8081");
  for (const bad of ["https://stream.binance.com", "stream.binance.com", "wss://x/?a=1"]) {
    assert.deepEqual(badVariables({ BINANCE_WS_URL: bad }), ["BINANCE_WS_URL"], bad);
  }
  for (const bad of ["wss://api.binance.com", "api.binance.com", "https://x/#frag"]) {
    assert.deepEqual(badVariables({ BINANCE_REST_URL: bad }), ["BINANCE_REST_URL"], bad);
  }
});

Deno.test("parseConfig reads METRICS_ADDR as host:port, [ipv6]:port or off", () => {
  assert.deepEqual(parseConfig({ METRICS_ADDR: "0.0.0.0:9100" }).metrics, {
    hostname: "0.0.0.0",
    port: 9100,
  });
  assert.deepEqual(parseConfig({ METRICS_ADDR: "[::1]:0" }).metrics, { hostname: "::1", port: 0 });
  assert.deepEqual(parseConfig({ METRICS_ADDR: "localhost:65535" }).metrics, {
    hostname: "localhost",
    port: 65535,
  });
  assert.equal(parseConfig({ METRICS_ADDR: "off" }).metrics, undefined);
  assert.equal("metrics" in parseConfig({ METRICS_ADDR: "OFF" }), false);
  for (const bad of ["9464", ":9464", "host:65536", "::1:9464", "host:port", "on"]) {
    assert.deepEqual(badVariables({ METRICS_ADDR: bad }), ["METRICS_ADDR"], bad);
  }
});

Deno.test("parseConfig accepts an http(s) ALERT_WEBHOOK_URL only", () => {
  const url = "https://hooks.example.com/services/T000/B000";
  assert.equal(parseConfig({ ALERT_WEBHOOK_URL: url }).alertWebhookUrl, url);
  assert.deepEqual(badVariables({ ALERT_WEBHOOK_URL: "hooks.example.com" }), [
    "ALERT_WEBHOOK_URL",
  ]);
});

Deno.test("parseConfig derives INSTANCE_ID from the host name and checks explicit ones", () => {
  assert.equal(
    parseConfig({}, { hostname: "Jörg's MacBook.local" }).instanceId,
    "J-rg-s-MacBook.local",
  );
  assert.equal(parseConfig({}, { hostname: "--box--" }).instanceId, "box");
  assert.equal(parseConfig({}, { hostname: "x".repeat(80) }).instanceId, "x".repeat(63));
  assert.equal(parseConfig({}, { hostname: "???" }).instanceId, "l2-uploader");
  assert.equal(parseConfig({}).instanceId, "l2-uploader");
  assert.equal(
    parseConfig({ INSTANCE_ID: "box_1.a-b" }, { hostname: "h" }).instanceId,
    "box_1.a-b",
  );
  for (const bad of ["-box", "box 1", "a/b", "x".repeat(64)]) {
    assert.deepEqual(badVariables({ INSTANCE_ID: bad }), ["INSTANCE_ID"], bad);
  }
});

Deno.test("parseConfig reads the logging options", () => {
  const config = parseConfig({
    LOG_FILE: "/var/log/l2.log",
    LOG_LEVEL: "DEBUG",
    LOG_FORMAT: "JSON",
  });
  assert.equal(config.logFile, "/var/log/l2.log");
  assert.equal(config.logLevel, "debug");
  assert.equal(config.logFormat, "json");
  assert.equal(parseConfig({ LOG_LEVEL: "warn" }).logLevel, "warning");
  assert.equal(parseConfig({ LOG_LEVEL: "Warning" }).logLevel, "warning");
  for (const level of ["trace", "info", "error", "fatal"]) {
    assert.equal(parseConfig({ LOG_LEVEL: level }).logLevel, level);
  }
  assert.deepEqual(badVariables({ LOG_LEVEL: "verbose" }), ["LOG_LEVEL"]);
  assert.deepEqual(badVariables({ LOG_FORMAT: "xml" }), ["LOG_FORMAT"]);
});

Deno.test("parseConfig reports every bad variable at once", () => {
  const error = problemsOf({
    SYMBOL: "BTC-USDT",
    MARKET: "usdm",
    DEPTH_LEVEL: "7",
    UPDATE_SPEED_MS: "1000",
    BATCH_SECONDS: "0",
    S3_BUCKET_NAME: "Bad_Bucket",
    S3_FORCE_PATH_STYLE: "maybe",
    S3_SSE_KMS_KEY_ID: "key",
    GZIP_LEVEL: "11",
    SPOOL_MAX_BYTES: "big",
    SNAPSHOT_LIMIT: "5000",
    METRICS_ADDR: "nowhere",
    LOG_LEVEL: "loud",
    LOG_MAX_FILES: "0",
  });
  const expected = [
    "SYMBOL",
    "DEPTH_LEVEL",
    "UPDATE_SPEED_MS",
    "BATCH_SECONDS",
    "S3_BUCKET_NAME",
    "S3_FORCE_PATH_STYLE",
    "S3_SSE_KMS_KEY_ID",
    "GZIP_LEVEL",
    "SPOOL_MAX_BYTES",
    "SNAPSHOT_LIMIT",
    "METRICS_ADDR",
    "LOG_LEVEL",
    "LOG_MAX_FILES",
  ];
  assert.deepEqual(error.problems.map((p) => p.variable), expected);
  const lines = error.message.split("\n");
  assert.equal(lines.length, expected.length);
  lines.forEach((line, i) => assert.ok(line.startsWith(`${expected[i]}=`), line));
  assert.ok(lines.includes(`GZIP_LEVEL="11": expected an integer from 1 to 9`));
  assert.equal(error.name, "ConfigError");
  assert.ok(Object.isFrozen(error.problems));
});

Deno.test("parseConfig never puts a secret's value in its error message", () => {
  const secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYFAKEKEY";
  const token = "xoxb-0000-super-secret-token";
  const error = problemsOf({
    S3_BUCKET_NAME: "abc",
    AWS_SECRET_ACCESS_KEY: secret,
    AWS_SESSION_TOKEN: token,
    ALERT_WEBHOOK_URL: `hooks.example.com/${token}`,
  });
  assert.ok(!error.message.includes(secret), error.message);
  assert.ok(!error.message.includes(token), error.message);
  assert.ok(!JSON.stringify(error.problems).includes(secret));
  assert.ok(!JSON.stringify(error.problems).includes(token));
  const webhook = error.problems.find((p) => p.variable === "ALERT_WEBHOOK_URL");
  assert.deepEqual(webhook, {
    variable: "ALERT_WEBHOOK_URL",
    value: "<redacted>",
    allowed: "an http:// or https:// URL",
  });
  assert.match(error.message, /^ALERT_WEBHOOK_URL=<redacted>: expected/m);
  assert.match(error.message, /^AWS_ACCESS_KEY_ID \(unset\): expected/m);
  assert.deepEqual([...SECRET_VARIABLES].sort(), [
    "ALERT_WEBHOOK_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
  ]);
});

Deno.test("mergeEnv lets the real environment win over the .env file", () => {
  const merged = mergeEnv(
    { SYMBOL: "ETHUSDT", LOG_LEVEL: "" },
    { SYMBOL: "BTCUSDT", MARKET: "usdm", LOG_LEVEL: "debug" },
  );
  assert.deepEqual(merged, { SYMBOL: "ETHUSDT", MARKET: "usdm", LOG_LEVEL: "" });
});

Deno.test("parseEnvFile reads quotes, comments and export prefixes like dotenv", () => {
  const text = [
    "# a comment line",
    "SYMBOL=btcusdt,ethusdt # trailing comment",
    `S3_PREFIX="raw data/binance"`,
    "LOG_FILE='/tmp/l2 #1.log'",
    "export MARKET=usdm",
    "EMPTY=",
    `MULTI="line one\\nline two"`,
    "",
  ].join("\n");
  assert.deepEqual(parseEnvFile(text), {
    SYMBOL: "btcusdt,ethusdt",
    S3_PREFIX: "raw data/binance",
    LOG_FILE: "/tmp/l2 #1.log",
    MARKET: "usdm",
    EMPTY: "",
    MULTI: "line one\nline two",
  });
});

Deno.test("a parsed .env file merged under the environment feeds parseConfig", () => {
  const file = parseEnvFile("SYMBOL=ethusdt\nBATCH_SECONDS=30\n");
  const config = parseConfig(mergeEnv({ BATCH_SECONDS: "15" }, file));
  assert.deepEqual(config.symbols, ["ETHUSDT"]);
  assert.equal(config.batchSeconds, 15);
});

Deno.test("parseByteSize reads plain bytes and 1024-based units", () => {
  const cases: Array<[string, number | undefined]> = [
    ["1048576", 1048576],
    ["0", 0],
    ["512KB", 512 * 1024],
    ["64MB", 64 * MiB],
    ["64MiB", 64 * MiB],
    ["64mb", 64 * MiB],
    ["64 MB", 64 * MiB],
    ["64M", 64 * MiB],
    ["50MB", 50 * MiB],
    ["10GB", 10 * GiB],
    ["1.5GB", 1.5 * GiB],
    ["2TiB", 2 * 1024 * GiB],
    ["100B", 100],
    [" 1KB ", 1024],
    ["1.5", undefined],
    ["-1MB", undefined],
    ["1e6", undefined],
    ["MB", undefined],
    ["", undefined],
    ["64 megabytes", undefined],
    ["64Mi", undefined],
    ["10PB", undefined],
    ["99999999999TB", undefined],
  ];
  for (const [text, bytes] of cases) {
    assert.equal(parseByteSize(text), bytes, JSON.stringify(text));
  }
});

Deno.test("parseConfig refuses a SYMBOL_EXCLUDE that leaves nothing of what SYMBOL names", () => {
  assert.deepEqual(badVariables({ SYMBOL: "BTCUSDT", SYMBOL_EXCLUDE: "btcusdt" }), [
    "SYMBOL_EXCLUDE",
  ]);
  assert.deepEqual(badVariables({ SYMBOL: "BTCUSDT,ETHUSDT", SYMBOL_EXCLUDE: "*USDT" }), [
    "SYMBOL_EXCLUDE",
  ]);
  // A pattern the exclusion repeats, or ALL excluded: nothing could ever be recorded.
  assert.deepEqual(badVariables({ SYMBOL: "ALL", SYMBOL_EXCLUDE: "all" }), ["SYMBOL_EXCLUDE"]);
  assert.deepEqual(badVariables({ SYMBOL: "*USDT", SYMBOL_EXCLUDE: "*usdt" }), ["SYMBOL_EXCLUDE"]);
  assert.deepEqual(badVariables({ SYMBOL: "BTC*,ETHUSDT", SYMBOL_EXCLUDE: "ALL" }), [
    "SYMBOL_EXCLUDE",
  ]);
  // Reported with the other problems, not after them.
  assert.deepEqual(
    badVariables({ SYMBOL: "BTCUSDT", SYMBOL_EXCLUDE: "BTC*", BATCH_SECONDS: "soon" }).sort(),
    ["BATCH_SECONDS", "SYMBOL_EXCLUDE"],
  );
  // One left, or a pattern that may match more later: fine.
  assert.deepEqual(
    parseConfig({ SYMBOL: "BTCUSDT,ETHUSDT", SYMBOL_EXCLUDE: "ETH*" }).symbols,
    ["BTCUSDT", "ETHUSDT"],
  );
  assert.deepEqual(parseConfig({ SYMBOL: "*USDT", SYMBOL_EXCLUDE: "BTC*" }).symbols, ["*USDT"]);
});
