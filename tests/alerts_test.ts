/**
 * Alerts (src/ops/alerts.ts) against a real webhook receiver on loopback:
 * what is posted, when (level changes, recovery, rate limit, critical at
 * once), and that delivery failures are logged without the secret URL and
 * never thrown. The clock is injected; nothing waits for real minutes.
 */

import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { AlertNotifier, describeError, watchHealth } from "../src/ops/alerts.ts";
import type { Health, HealthLevel } from "../src/ops/health.ts";

const T = Date.UTC(2024, 7, 8, 12, 0, 0);
const MIN = 60_000;

function health(status: HealthLevel): Health {
  const problem = status === "critical"
    ? { name: "spool", status, message: "spool is full" }
    : { name: "reconnects", status, message: "7 reconnects in the last hour (more than 5)" };
  return {
    status,
    checks: [
      { name: "memory", status: "ok", message: "resident memory 80 MiB" },
      ...(status === "ok" ? [] : [problem]),
    ],
  };
}

interface Receiver extends AsyncDisposable {
  readonly url: string;
  readonly bodies: { text?: string; content?: string }[];
  /** HTTP status the receiver answers with. */
  status: number;
}

/** A webhook receiver on 127.0.0.1 with a random port. */
function receiver(): Receiver {
  const stop = new AbortController();
  const bodies: Receiver["bodies"] = [];
  const self = {
    bodies,
    status: 200,
    url: "",
    async [Symbol.asyncDispose]() {
      stop.abort();
      await server.finished;
    },
  };
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: stop.signal, onListen: () => {} },
    async (req) => {
      assert.equal(req.method, "POST");
      assert.equal(req.headers.get("content-type"), "application/json");
      bodies.push(await req.json());
      return new Response("ok", { status: self.status });
    },
  );
  self.url = `http://127.0.0.1:${server.addr.port}/hooks/T0P-SECRET-TOKEN`;
  return self;
}

/** Collects the log records of category ["l2"] while `body` runs. */
async function capturingLogs(body: (records: LogRecord[]) => Promise<void>): Promise<void> {
  const records: LogRecord[] = [];
  await configure({
    reset: true,
    sinks: { memory: (record) => records.push(record) },
    loggers: [
      { category: ["l2"], lowestLevel: "debug", sinks: ["memory"] },
      { category: ["logtape", "meta"], lowestLevel: "error", sinks: [] },
    ],
  });
  try {
    await body(records);
  } finally {
    await reset();
  }
}

/** Everything a record could reveal, errors and causes included. */
function revealed(records: readonly LogRecord[]): string {
  return JSON.stringify(
    records.map((r) => ({ message: r.message, properties: r.properties })),
    (_key, value) =>
      value instanceof Error
        ? { message: value.message, stack: value.stack, cause: String(value.cause) }
        : value,
  );
}

Deno.test("a change of level posts text and content to the webhook, and so does the recovery", async () => {
  await using hook = receiver();
  const notifier = new AlertNotifier({ url: hook.url, instanceId: "box-1" });
  assert.equal(await notifier.onHealth(health("ok"), T), "unchanged");
  assert.equal(await notifier.onHealth(health("warning"), T), "sent");
  assert.equal(await notifier.onHealth(health("warning"), T + MIN), "unchanged");
  assert.equal(await notifier.onHealth(health("ok"), T + 6 * MIN), "sent");
  assert.equal(hook.bodies.length, 2);
  const [warning, recovered] = hook.bodies;
  assert.equal(warning.text, warning.content);
  assert.equal(
    warning.text,
    "l2-uploader box-1: health WARNING (was ok)\n" +
      "• warning reconnects: 7 reconnects in the last hour (more than 5)",
  );
  assert.equal(recovered.text, recovered.content);
  assert.equal(recovered.text, "l2-uploader box-1: recovered, health is ok again (was warning)");
});

Deno.test("a change within 5 minutes of the last post waits, and goes out later if it still holds", async () => {
  await using hook = receiver();
  const notifier = new AlertNotifier({ url: hook.url });
  assert.equal(await notifier.onHealth(health("warning"), T), "sent");
  assert.equal(await notifier.onHealth(health("ok"), T + MIN), "held");
  assert.equal(await notifier.onHealth(health("ok"), T + 5 * MIN - 1), "held");
  assert.equal(await notifier.onHealth(health("ok"), T + 5 * MIN), "sent");
  // Flapping back and forth within the interval, ending where it was: nothing to say.
  assert.equal(await notifier.onHealth(health("warning"), T + 6 * MIN), "held");
  assert.equal(await notifier.onHealth(health("ok"), T + 7 * MIN), "unchanged");
  assert.equal(hook.bodies.length, 2);
});

Deno.test("a change to critical goes out at once, whatever the rate limit", async () => {
  await using hook = receiver();
  const notifier = new AlertNotifier({ url: hook.url, minIntervalMs: 5 * MIN });
  assert.equal(await notifier.onHealth(health("warning"), T), "sent");
  assert.equal(await notifier.onHealth(health("critical"), T + 1000), "sent");
  assert.equal(await notifier.onHealth(health("ok"), T + 2000), "held");
  assert.equal(await notifier.onHealth(health("critical"), T + 3000), "unchanged");
  assert.equal(hook.bodies.length, 2);
  assert.match(hook.bodies[1].text ?? "", /^l2-uploader: health CRITICAL \(was warning\)\n/);
  assert.match(hook.bodies[1].text ?? "", /• critical spool: spool is full/);
});

Deno.test("a webhook answering HTTP 500 is logged, not thrown, and retried after the interval", async () => {
  await using hook = receiver();
  hook.status = 500;
  await capturingLogs(async (records) => {
    const notifier = new AlertNotifier({ url: hook.url });
    assert.equal(await notifier.onHealth(health("warning"), T), "failed");
    assert.equal(await notifier.onHealth(health("warning"), T + MIN), "held");
    hook.status = 200;
    assert.equal(await notifier.onHealth(health("warning"), T + 5 * MIN), "sent");
    const warnings = records.filter((r) => r.level === "warning");
    assert.equal(warnings.length, 1);
    assert.deepEqual(warnings[0].category, ["l2", "alerts"]);
    assert.equal(warnings[0].properties.status, 500);
    assert.ok(!revealed(records).includes("T0P-SECRET-TOKEN"));
  });
  assert.equal(hook.bodies.length, 2);
});

Deno.test("an unreachable webhook is logged without its URL", async () => {
  const hook = receiver();
  const url = hook.url;
  await hook[Symbol.asyncDispose](); // nothing listens on that port now
  await capturingLogs(async (records) => {
    const notifier = new AlertNotifier({ url });
    assert.equal(await notifier.onHealth(health("critical"), T), "failed");
    const [failure] = records.filter((r) => r.level === "warning");
    assert.match(String(failure.properties.reason), /Connection refused/);
    const text = revealed(records);
    assert.ok(!text.includes("T0P-SECRET-TOKEN"), text);
    assert.ok(!text.includes(new URL(url).host), text);
  });
});

Deno.test("a webhook that does not answer in time is given up and logged", async () => {
  const hanging: typeof fetch = (_input, init) =>
    new Promise((_resolve, reject) => {
      init?.signal?.addEventListener("abort", () => reject(new DOMException("aborted")));
    });
  await capturingLogs(async (records) => {
    const notifier = new AlertNotifier({
      url: "https://hooks.example/T0P-SECRET",
      fetch: hanging,
      timeoutMs: 20,
    });
    assert.equal(await notifier.onHealth(health("warning"), T), "failed");
    assert.equal(records[0].properties.reason, "no answer within 20 ms");
  });
});

Deno.test("error descriptions cut out every URL, in causes too", () => {
  const error = new TypeError("fetch failed", {
    cause: new Error(
      "error sending request for url (https://hooks.slack.com/services/T/B/X): boom",
    ),
  });
  assert.equal(
    describeError(error),
    "TypeError: fetch failed; caused by Error: error sending request for url (<url>): boom",
  );
});

Deno.test("the health loop logs each change of level and hands every evaluation to the notifier", async () => {
  const levels: HealthLevel[] = ["ok", "warning", "warning", "critical", "ok"];
  const posted: string[] = [];
  const fakeFetch: typeof fetch = (_input, init) => {
    posted.push(JSON.parse(String(init?.body)).text);
    return Promise.resolve(new Response(null, { status: 204 }));
  };
  const stop = new AbortController();
  let clock = T;
  let calls = 0;
  // Checked after the loop: a throw inside `evaluate` is caught by watchHealth
  // (it survives failing evaluations), so an assertion there could never fail the test.
  const askedAt: number[] = [];
  const clockAt: number[] = [];
  await capturingLogs(async (records) => {
    await watchHealth({
      evaluate: (now) => {
        askedAt.push(now);
        clockAt.push(clock);
        const level = levels[calls++];
        if (calls === levels.length) stop.abort();
        clock += 10_000;
        return Promise.resolve(health(level));
      },
      notifier: new AlertNotifier({ url: "https://hooks.example/x", fetch: fakeFetch }),
      signal: stop.signal,
      intervalMs: 1,
      now: () => clock,
    });
    const changes = records.filter((r) => r.message.join("").startsWith("Health is"));
    assert.deepEqual(changes.map((r) => r.level), ["warning", "error", "info"]);
  });
  assert.equal(calls, 5);
  assert.deepEqual(askedAt, clockAt, "each evaluation is asked at the injected clock's time");
  // warning sent; critical at once; the recovery 10 s later is held by the rate limit.
  assert.equal(posted.length, 2);
  assert.match(posted[1], /CRITICAL \(was warning\)/);
});

Deno.test("the health loop survives a failing evaluation", async () => {
  const stop = new AbortController();
  let calls = 0;
  await capturingLogs(async (records) => {
    await watchHealth({
      evaluate: () => {
        if (++calls === 2) stop.abort();
        return Promise.reject(new Error("metrics unreadable"));
      },
      signal: stop.signal,
      intervalMs: 1,
    });
    assert.equal(records.filter((r) => r.level === "error").length, 2);
  });
  assert.equal(calls, 2);
});
