/**
 * The status page at `/` on METRICS_ADDR (src/ops/page.ts, src/ops/activity.ts):
 * the in-memory history behind it, what it shows (health with the reason,
 * streams, events, spool, queue, last upload, chart), that it is
 * self-contained, and that headless Chromium renders it to a non-blank
 * screenshot with no console error.
 *
 * `L2_UPDATE_SCREENSHOT=1 deno test -A tests/status_page_test.ts` also
 * writes the screenshot to docs/status-page.png (shown in README).
 */

import assert from "node:assert/strict";
import { Activity } from "../src/ops/activity.ts";
import { HealthTracker } from "../src/ops/health.ts";
import { EMPTY_TELEMETRY_STATE, type TelemetryState } from "../src/ops/events.ts";
import { handler, type OpsDeps, serveOps } from "../src/ops/http.ts";
import { Metrics } from "../src/ops/metrics.ts";
import { esc } from "../src/ops/page.ts";
import { CHROMIUM, renderPage } from "./support/chromium.ts";
import { decodePng, imageStats } from "./support/png.ts";

const NOW = Date.UTC(2024, 7, 8, 13, 0, 0);
const STREAMS = ["btcusdt@depth@100ms", "ethusdt@depth@100ms", "solusdt@depth@100ms"];

Deno.test("Activity keeps one chart point per 10 s for an hour, as messages/s", () => {
  const activity = new Activity();
  let total = 0;
  for (let t = 0; t <= 2 * 3_600_000; t += 5_000) {
    total += 50; // 10 messages/s
    activity.sample(t, new Map([["a", total]]));
  }
  const series = activity.series();
  assert.equal(series.length, 360);
  assert.equal(series[series.length - 1].at, 2 * 3_600_000);
  assert.ok(series[0].at > 3_600_000);
  // Offered every 5 s, taken every 10 s: 100 messages per point.
  for (const p of series) assert.equal(p.perSecond, 10);
});

Deno.test("Activity gives each stream's rate over about the last minute", () => {
  const activity = new Activity();
  assert.deepEqual(activity.streamRates(), new Map());
  for (let t = 0; t <= 120_000; t += 10_000) {
    // a: 20/s throughout; b: silent for the first minute, then 5/s.
    activity.sample(t, new Map([["a", 2 * t / 100], ["b", Math.max(0, t - 60_000) / 200]]));
  }
  const rates = activity.streamRates();
  assert.equal(rates.get("a"), 20);
  assert.equal(rates.get("b"), 5);
});

Deno.test("Activity keeps the latest events, newest first", () => {
  const activity = new Activity({ maxEvents: 3 });
  for (let i = 1; i <= 5; i++) {
    activity.event({ at: i, kind: "disconnect", subject: `conn ${i}`, detail: "stale" });
  }
  assert.deepEqual(activity.events().map((e) => e.subject), ["conn 5", "conn 4", "conn 3"]);
});

/** A collector an hour into its run: busy streams, one dip, a gap, a spool filling. */
function scene(options: { spoolFull?: boolean } = {}): OpsDeps {
  const metrics = new Metrics();
  const activity = new Activity();
  const started = NOW - 3_700_000;
  const totals = new Map(STREAMS.map((s) => [s, 0]));
  // Counters run to NOW; the page's own request takes the last point.
  for (let t = started; t <= NOW; t += 10_000) {
    const minute = (t - started) / 60_000;
    const dip = minute > 31 && minute < 33 ? 0.1 : 1;
    STREAMS.forEach((s, i) => {
      const perSecond = (10 - 3 * i) * dip * (1 + 0.2 * Math.sin(minute / 4 + i));
      totals.set(s, totals.get(s)! + Math.round(perSecond * 10));
    });
    if (t < NOW) activity.sample(t, totals);
  }
  for (const [stream, n] of totals) metrics.countMessage(stream, n);
  // What the named events (src/ops/events.ts) would have left.
  const state: TelemetryState = {
    ...EMPTY_TELEMETRY_STATE,
    batchesStored: 180,
    uploadAttempts: 186,
    uploadFailures: 6,
    spoolBytes: options.spoolFull ? 990 * 1024 ** 2 : 48 * 1024 ** 2,
    spoolBatches: 12,
    uploadQueueBytes: 3 * 1024 ** 2,
    webSockets: 1,
    reconnects: 1,
  };
  activity.event({
    at: NOW - 1_950_000,
    kind: "disconnect",
    subject: "conn 1",
    detail: "stale, code 1006; reconnecting in 0 ms",
  });
  activity.event({
    at: NOW - 1_940_000,
    kind: "gap",
    subject: "ethusdt@depth@100ms",
    detail: "expected update id 4001, received <4010>",
  });
  const tracker = new HealthTracker(started);
  return {
    metrics,
    telemetry: { state },
    tracker,
    activity,
    version: "0.1.0",
    instanceId: "mac-mini",
    now: () => NOW,
    residentBytes: () => 180 * 1024 ** 2,
    messageAges: () => new Map(STREAMS.map((s, i) => [s, i === 2 ? 42 : 0.1 * (i + 1)])),
    openBatches: () => ({ bytes: 2 * 1024 ** 2, textBytes: 9 * 1024 ** 2 }),
    backlog: () => 13,
    spoolMaxBytes: 1024 ** 3,
    restartsLastHour: () => 0,
  };
}

async function page(deps: OpsDeps): Promise<Response> {
  return await handler(deps)(new Request("http://ops.test/"));
}

Deno.test("/ shows health with its reason, streams with rate and age, events, spool, queue, last upload", async () => {
  const deps = scene({ spoolFull: true });
  deps.tracker.observe(
    {
      messages: 0,
      bytes: 0,
      reconnects: 0,
      uploadAttempts: 0,
      uploadFailures: 0,
      batchesStored: 180,
      droppedMessages: 0,
      backlog: 0,
    },
    NOW - 95_000,
  );
  const response = await page(deps);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), "text/html; charset=utf-8");
  const html = await response.text();
  assert.match(html, /<section class="health critical" id="health">/);
  assert.match(html, /spool: spool is full: batches the sink cannot take will be dropped/);
  for (const stream of STREAMS) assert.ok(html.includes(`<td>${stream}</td>`), stream);
  assert.match(html, /<td class="num">42\.0 s ago<\/td>/); // the quiet stream's age
  assert.match(html, /<tr class="warning"><td>solusdt@depth@100ms/); // older than 30 s
  assert.match(html, /expected update id 4001, received &#60;4010&#62;/); // escaped
  assert.match(html, /stale, code 1006/);
  assert.match(html, /990\.0 MiB/); // spool
  assert.match(html, /of 1\.0 GiB/);
  assert.match(html, /3\.0 MiB/); // queue
  assert.match(html, /1 min 35 s ago/); // last upload
  assert.match(html, /13 batches waiting/);
  assert.match(html, /<svg class="chart"[^>]*><line/);
  assert.match(html, /<polyline points="(\d+\.\d,\d+\.\d ){300,}/);
});

Deno.test("/ says all is well when it is, and what starts empty is said to be empty", async () => {
  const metrics = new Metrics();
  const deps: OpsDeps = {
    metrics,
    tracker: new HealthTracker(NOW - 5_000),
    version: "0.1.0",
    now: () => NOW,
    residentBytes: () => 100 * 1024 ** 2,
  };
  const html = await (await page(deps)).text();
  assert.match(html, /<section class="health ok" id="health">/);
  assert.match(html, /All 7 checks pass\./);
  assert.match(html, /No stream has delivered a message yet\./);
  assert.match(html, /The chart starts after the first minute/);
  assert.match(html, /None since the start\./);
  assert.match(html, /none yet/);
  assert.match(html, /no spool \(local sink\)/);
});

Deno.test("/ is self-contained: no script, no external stylesheet, image or font", async () => {
  const html = await (await page(scene())).text();
  assert.doesNotMatch(html, /<script|<link rel="stylesheet"|<img|@import|url\(|https?:\/\//i);
  assert.match(html, /<style>/);
  assert.equal(esc(`<a href="x">'&`), "&#60;a href=&#34;x&#34;&#62;&#39;&#38;");
});

Deno.test("/ refuses POST like the other routes", async () => {
  const response = await handler(scene())(new Request("http://ops.test/", { method: "POST" }));
  assert.equal(response.status, 405);
  await response.body?.cancel();
});

if (!CHROMIUM) {
  // deno-lint-ignore no-console
  console.warn(
    "status_page_test: chromium is not on PATH, so the headless rendering tests are ignored " +
      "(apt-get install chromium to run them)",
  );
}

/** Serves `handle` on 127.0.0.1 for the length of `body`. */
async function serving(
  handle: (req: Request) => Promise<Response>,
  body: (url: string) => Promise<void>,
): Promise<void> {
  const stop = new AbortController();
  const server = serveOps({ hostname: "127.0.0.1", port: 0 }, handle, stop.signal);
  try {
    await body(`http://127.0.0.1:${server.addr.port}/`);
  } finally {
    stop.abort();
    await server.finished;
  }
}

Deno.test({
  name:
    "headless Chromium renders the page: a non-blank screenshot with the chart, no console error",
  ignore: !CHROMIUM,
  sanitizeResources: false,
  fn: async () => {
    await serving(handler(scene()), async (url) => {
      const rendered = await renderPage(url, { height: 1000 });
      assert.deepEqual(rendered.console, []);
      const image = decodePng(rendered.screenshot);
      assert.equal(image.width, 1100);
      const stats = imageStats(image);
      assert.ok(stats.colours > 100, `${stats.colours} colours`);
      assert.ok(stats.nonBackground > 0.3, `only ${stats.nonBackground} of the pixels drawn`);
      // The health banner (ok green) and the chart line (blue) are on screen.
      assert.ok(countColour(image.rgb, [0x1a, 0x7f, 0x37]) > 5_000, "no green health banner");
      assert.ok(countColour(image.rgb, [0x09, 0x69, 0xda]) > 300, "no chart line");
      if (Deno.env.get("L2_UPDATE_SCREENSHOT")) {
        await Deno.writeFile(
          new URL("../docs/status-page.png", import.meta.url),
          rendered.screenshot,
        );
      }
    });
  },
});

Deno.test({
  name: "the Chromium check can fail: a script error is reported and a blank page looks blank",
  ignore: !CHROMIUM,
  sanitizeResources: false,
  fn: async () => {
    const broken = () =>
      Promise.resolve(
        new Response(
          "<!doctype html><title>x</title><body><script>console.error('boom'); missing();</script>",
          { headers: { "content-type": "text/html" } },
        ),
      );
    await serving(broken, async (url) => {
      const rendered = await renderPage(url);
      assert.equal(rendered.console.length, 2, rendered.console.join("\n"));
      assert.match(rendered.console[0], /"boom"/);
      assert.match(rendered.console[1], /Uncaught ReferenceError: missing is not defined/);
      assert.ok(imageStats(decodePng(rendered.screenshot)).nonBackground < 0.001);
    });
  },
});

function countColour(rgb: Uint8Array, [r, g, b]: number[]): number {
  let n = 0;
  for (let i = 0; i < rgb.length; i += 3) {
    if (rgb[i] === r && rgb[i + 1] === g && rgb[i + 2] === b) n++;
  }
  return n;
}
