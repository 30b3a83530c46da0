/**
 * `verify --html FILE` (src/verify/html.ts): the audit as a page with a
 * coverage timeline per stream — recorded span, holes (explained ones with
 * the event that explains them), duplicates and breaks as marks — checked in
 * the HTML and, with Chromium, on screen. `L2_UPDATE_SCREENSHOT=1` also
 * writes the screenshot to docs/verify-html.png (shown in README).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { dataLine, eventLine, gzipLines } from "../src/archive/encode.ts";
import { planKey } from "../src/archive/keys.ts";
import { verifyFromArgs } from "../src/cli/verify.ts";
import { parseConfig } from "../src/config.ts";
import { CHROMIUM, renderPage } from "./support/chromium.ts";
import { decodePng } from "./support/png.ts";
import { tempDir } from "./support/temp.ts";

const T0 = Date.UTC(2026, 0, 2, 3, 0, 0) * 1000; // µs
const STEP = 100_000; // 100 ms

interface Line {
  readonly recvTs: number;
  readonly text: string;
}

/** A partial-book stream's data lines at 100 ms, ids rising by 3 unless `ids` says otherwise. */
function partial(stream: string, from: number, count: number, firstId: number): Line[] {
  return Array.from({ length: count }, (_, i) => {
    const recvTs = from + i * STEP;
    const data = `{"lastUpdateId":${
      firstId + 3 * i
    },"bids":[["1.0","2.0"]],"asks":[["1.1","3.0"]]}`;
    return { recvTs, text: dataLine(recvTs, stream, data) };
  });
}

const event = (recvTs: number, stream: string, name: "disconnected" | "connected"): Line => ({
  recvTs,
  text: eventLine(recvTs, stream, name, { conn: 1 }),
});

async function writeObjects(dir: string, symbol: string, objects: Line[][]): Promise<void> {
  for (const [seq, lines] of objects.entries()) {
    const key = planKey({
      prefix: "binance",
      market: "spot",
      streamType: "depth20@100ms",
      symbol,
      firstRecvTs: lines[0].recvTs,
      instanceId: "test-box",
      seq,
    });
    const path = join(dir, "archive", ...key.split("/"));
    await Deno.mkdir(join(path, ".."), { recursive: true });
    await Deno.writeFile(path, await gzipLines(lines.map((l) => l.text), 6));
  }
}

/**
 * BTC: 10 min; at 2 min the connection drops for 20 s (events say so); at
 * 5 min an object (30 s) is missing; at 8 min a message comes twice.
 * ETH: starts at 1 min, clean.
 */
async function archive(dir: string): Promise<void> {
  const btc = "btcusdt@depth20@100ms";
  const a = partial(btc, T0, 1200, 1000); // 0:00–2:00
  const down = a.at(-1)!.recvTs;
  const b = partial(btc, down + 20_000_000, 1000, 10_000); // 2:20–4:00
  const c = partial(btc, T0 + 240_000_000, 600, 20_000); // 4:00–5:00
  const lost = partial(btc, T0 + 300_000_000, 300, 30_000); // 5:00–5:30, never stored
  const d = partial(btc, T0 + 330_000_000, 1500, 40_000); // 5:30–8:00
  const e = partial(btc, T0 + 480_000_000, 1200, 50_000); // 8:00–10:00
  const dup = { ...e[10], recvTs: e[10].recvTs + 1 };
  const eWithDup = [...e.slice(0, 11), { recvTs: dup.recvTs, text: e[10].text }, ...e.slice(11)];
  assert.ok(lost.length > 0);
  await writeObjects(dir, "BTCUSDT", [
    [...a, event(down + 1000, btc, "disconnected")],
    [event(b[0].recvTs - 1000, btc, "connected"), ...b],
    c,
    d,
    eWithDup,
  ]);
  await writeObjects(dir, "ETHUSDT", [partial("ethusdt@depth20@100ms", T0 + 60_000_000, 5400, 7)]);
}

async function verifyHtml(dir: string, file: string): Promise<{ code: number; printed: string }> {
  let printed = "";
  const code = await verifyFromArgs(
    parseConfig({ DATA_DIR: dir, INSTANCE_ID: "verifier" }),
    ["--html", file],
    { print: (text) => printed += text },
  );
  return { code, printed };
}

Deno.test("verify --html writes a timeline: recorded, holes with their cause, duplicates, and the tables", async () => {
  await using tmp = await tempDir();
  await archive(tmp.path);
  const file = join(tmp.path, "audit.html");
  const { code, printed } = await verifyHtml(tmp.path, file);
  assert.equal(code, 1, printed); // the missing object is an unexplained hole
  assert.match(printed, /btcusdt@depth20@100ms/); // the text report still goes to stdout
  const html = await Deno.readTextFile(file);

  // One row per stream, in the report's order, each with its recorded span.
  const labels = [...html.matchAll(/text-anchor="end">([a-z]+usdt@depth20@100ms)<\/text>/g)];
  assert.deepEqual(labels.map((m) => m[1]), ["btcusdt@depth20@100ms", "ethusdt@depth20@100ms"]);
  assert.equal([...html.matchAll(/fill="#2da44e"><title>recorded /g)].length, 2);
  // ETH starts a minute late: its recorded bar starts a tenth of the way along.
  const eth = /<rect x="([\d.]+)"[^>]*fill="#2da44e"><title>recorded 2026-01-02T03:01:00/.exec(
    html,
  );
  assert.ok(eth, "no ETH bar starting at 03:01");
  const fraction = (Number(eth[1]) - 220) / (900 - 220 - 10);
  assert.ok(Math.abs(fraction - 0.1) < 0.01, `ETH starts at ${fraction}`);

  // The drop: an explained hole, with its cause. The lost object: an unexplained hole.
  assert.match(
    html,
    /fill="#d4a72c"><title>explained hole \(disconnected\): no line for 20 s/,
  );
  assert.match(html, /fill="#cf222e"><title>hole: no line for 30\.\d+ s/);
  // The duplicate: a mark.
  assert.match(html, /stroke="#8250df" stroke-width="2"><title>duplicate at 2026-01-02T03:08:01/);
  // Tables: the stream counts and the problem list, with the cause.
  assert.match(html, /<td>btcusdt@depth20@100ms<\/td><td class="num">5<\/td>/);
  assert.match(html, /<td>yes \(disconnected\)<\/td>/);
  assert.match(html, /class="verdict bad"/);
  assert.doesNotMatch(html, /<script|https?:\/\//);
});

Deno.test("verify --html into a directory that does not exist is a usage error naming the file", async () => {
  await using tmp = await tempDir();
  await archive(tmp.path);
  let errors = "";
  const code = await verifyFromArgs(
    parseConfig({ DATA_DIR: tmp.path, INSTANCE_ID: "verifier" }),
    ["--html", join(tmp.path, "no-such-dir", "audit.html")],
    { print: () => {}, printError: (text) => errors += text },
  );
  assert.equal(code, 2);
  assert.match(errors, /cannot write --html .*no-such-dir\/audit\.html/);
});

Deno.test({
  name: "the audit page renders in headless Chromium without console errors, holes in colour",
  ignore: !CHROMIUM,
  async fn() {
    await using tmp = await tempDir();
    await archive(tmp.path);
    const file = join(tmp.path, "audit.html");
    await verifyHtml(tmp.path, file);
    const rendered = await renderPage(`file://${file}`, { width: 1100, height: 700 });
    assert.deepEqual(rendered.console, []);
    const image = decodePng(rendered.screenshot);
    const count = ([r, g, b]: number[]) => {
      let n = 0;
      for (let i = 0; i < image.rgb.length; i += 3) {
        if (image.rgb[i] === r && image.rgb[i + 1] === g && image.rgb[i + 2] === b) n++;
      }
      return n;
    };
    assert.ok(count([0x2d, 0xa4, 0x4e]) > 5_000, "no recorded (green) bars");
    assert.ok(count([0xd4, 0xa7, 0x2c]) > 50, "no explained (amber) hole");
    assert.ok(count([0xcf, 0x22, 0x2e]) > 50, "no unexplained (red) hole");
    if (Deno.env.get("L2_UPDATE_SCREENSHOT")) {
      await Deno.writeFile(
        new URL("../docs/verify-html.png", import.meta.url),
        rendered.screenshot,
      );
    }
  },
});
