import assert from "node:assert/strict";
import { ConfigError, parseConfig } from "../src/config.ts";
import { exposureWarning, isLoopback } from "../src/ops/exposure.ts";
import { redactUrls, redactUrlValue } from "../src/ops/redact.ts";

/** Every option that takes a URL, with a value carrying a password. */
const URL_OPTIONS: Record<string, string> = {
  S3_ENDPOINT: "http://user:SeCrEt9@127.0.0.1:9",
  BINANCE_WS_URL: "wss://feed:Pw-ws-1@stream.example.com:9443",
  BINANCE_REST_URL: "https://rest:Pw%40rest@api.example.com",
  ALERT_WEBHOOK_URL: "https://alert:Pw-hook@hooks.example.com/T0",
};

Deno.test("redactUrls takes the user-info out of every URL in a text, and nothing else", () => {
  assert.equal(
    redactUrls("endpoint http://user:SeCrEt9@127.0.0.1:9 (region x)"),
    "endpoint http://<redacted>@127.0.0.1:9 (region x)",
  );
  // A raw '@' in the password, a user without password, two URLs, a quoted one.
  assert.equal(
    redactUrls(`a=wss://u:p@ss@h:1/x b="https://token@h2/p?q=1"`),
    `a=wss://<redacted>@h:1/x b="https://<redacted>@h2/p?q=1"`,
  );
  // An '@' after the host (path, query) is not user-info.
  assert.equal(
    redactUrls("https://h/a@b?c=d@e mail me@example.com"),
    "https://h/a@b?c=d@e mail me@example.com",
  );
});

Deno.test("every URL option's password is redacted from the option as any message quotes it", () => {
  for (const [option, value] of Object.entries(URL_OPTIONS)) {
    const password = /:\/\/[^:]*:([^@]*)@/.exec(value)![1];
    const redacted = redactUrls(`problem with ${value}: refused`);
    assert.ok(!redacted.includes(password), `${option}: ${redacted}`);
    assert.ok(redacted.includes("<redacted>@"), `${option}: ${redacted}`);
  }
});

Deno.test("a config error quoting a URL option never shows its password", () => {
  // Each value is invalid (a query string, a wrong scheme) so the error quotes it.
  const bad: Record<string, string> = {
    S3_ENDPOINT: "ftp://user:SeCrEt9@127.0.0.1:9",
    BINANCE_WS_URL: "wss://feed:Pw-ws-1@stream.example.com:9443?x=1",
    BINANCE_REST_URL: "https://rest:Pw-rest@api.example.com?x=1",
    ALERT_WEBHOOK_URL: "ftp://alert:Pw-hook@hooks.example.com/T0",
  };
  assertRejectedUnseen(bad, ["SeCrEt9", "Pw-ws-1", "Pw-rest", "Pw-hook"]);
});

/** parseConfig rejects every option of `bad`, naming each, and none of `secrets` shows. */
function assertRejectedUnseen(
  bad: Record<string, string>,
  secrets: readonly string[],
): ConfigError {
  let error: unknown;
  try {
    parseConfig({ SYMBOL: "BTCUSDT", S3_BUCKET_NAME: "b", ...bad });
  } catch (e) {
    error = e;
  }
  assert.ok(error instanceof ConfigError, String(error));
  for (const option of Object.keys(bad)) {
    assert.ok(error.message.includes(option), `${option} not reported:\n${error.message}`);
  }
  for (const secret of secrets) {
    assert.ok(!error.message.includes(secret), error.message);
    assert.ok(!JSON.stringify(error.problems).includes(secret));
  }
  return error;
}

Deno.test("METRICS_ADDR beyond loopback gets a warning naming it; loopback does not", () => {
  for (const host of ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"]) {
    assert.ok(isLoopback(host), host);
    assert.equal(exposureWarning({ hostname: host, port: 9464 }), undefined);
  }
  for (const host of ["0.0.0.0", "::", "192.168.1.5", "10.0.0.1", "example.com"]) {
    assert.ok(!isLoopback(host), host);
    const warning = exposureWarning({ hostname: host, port: 9464 });
    assert.ok(warning?.includes(`${host}:9464`) && warning.includes("no authentication"), warning);
  }
});

Deno.test("a password typed with `/`, `?` or `#` in it is not printed when its URL option is rejected", () => {
  // Unencoded, such a password breaks the URL (AWS-style secret keys hold `/`): the error quotes it.
  const bad: Record<string, string> = {
    S3_ENDPOINT: "https://minio:s3cr#tPW@host:9000",
    BINANCE_REST_URL: "https://rest:a/b?cPW@api.example.com",
    BINANCE_WS_URL: "wss://feed:p@ss/wordPW@stream.example.com:9443?x=1",
  };
  const error = assertRejectedUnseen(bad, ["s3cr#tPW", "a/b?cPW", "wordPW", "p@ss"]);
  assert.match(error.message, /https:\/\/<redacted>@host:9000/);
  assert.equal(redactUrlValue("not a url"), "not a url");
});

Deno.test("a password holding quotes, angle brackets or a backslash is redacted too", () => {
  for (const password of [`it's-secret`, `p"w`, "p<w>", "p\\w", `a'b"c<d>e\\f`]) {
    const url = `wss://alice:${password}@proxy.example:9443`;
    for (const text of [`Rotating ${url}: lifetime`, JSON.stringify({ url })]) {
      const redacted = redactUrls(text);
      assert.ok(!redacted.includes("secret") && !redacted.includes(password), redacted);
      assert.ok(redacted.includes("<redacted>@proxy.example:9443"), redacted);
    }
  }
});
