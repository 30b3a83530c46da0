/**
 * `verify` reads archives written before the key partition was renamed from
 * `stream=` to `channel=`, alone or mixed with new objects. The old keys here
 * are written by hand, as the old collector wrote them, not by planKey.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { dataLine, gzipLines } from "../src/archive/encode.ts";
import { parseKey, planKey } from "../src/archive/keys.ts";
import { parseFrame } from "../src/binance/frames.ts";
import { verifyFromArgs } from "../src/cli/verify.ts";
import { parseConfig } from "../src/config.ts";
import type { Report } from "../src/verify/audit.ts";
import { tempDir } from "./support/temp.ts";

async function fixtureLines(name: string): Promise<Array<{ recvTs: number; text: string }>> {
  const bytes = await Deno.readFile(new URL(`./fixtures/${name}`, import.meta.url));
  return new TextDecoder().decode(gunzipSync(bytes)).split("\n").filter((l) => l !== "").map(
    (raw, i) => {
      const frame = parseFrame(raw);
      if (frame.kind !== "data") throw new Error(`fixture line ${i + 1} is not data`);
      const recvTs = (JSON.parse(frame.dataText).E + 3) * 1000 + (i % 1000);
      return { recvTs, text: dataLine(recvTs, frame.stream, frame.dataText) };
    },
  );
}

/** The old layout, spelled out: `.../market=spot/stream=depth@100ms/symbol=...`. */
function oldKey(symbol: string, firstRecvTs: number, seq: number): string {
  const iso = new Date(Math.floor(firstRecvTs / 1000)).toISOString();
  return `binance/exchange=binance/market=spot/stream=depth@100ms/symbol=${symbol}/` +
    `date=${iso.slice(0, 10)}/hour=${iso.slice(11, 13)}/` +
    `${firstRecvTs}_old-box_${String(seq).padStart(6, "0")}.ndjson.gz`;
}

async function write(dataDir: string, key: string, lines: readonly { text: string }[]) {
  const path = join(dataDir, "archive", ...key.split("/"));
  await Deno.mkdir(join(path, ".."), { recursive: true });
  await Deno.writeFile(path, await gzipLines(lines.map((l) => l.text), 1));
}

async function verifyJson(dataDir: string): Promise<{ code: number; report: Report }> {
  let printed = "";
  const code = await verifyFromArgs(
    parseConfig({ DATA_DIR: dataDir, INSTANCE_ID: "verifier" }),
    ["--json"],
    { print: (text) => printed += text },
  );
  return { code, report: JSON.parse(printed) };
}

Deno.test("new keys use the channel= partition; parseKey reads old stream= keys too", () => {
  const parts = {
    prefix: "binance",
    market: "spot",
    streamType: "depth@100ms",
    symbol: "BTCUSDT",
    firstRecvTs: 1_723_161_255_211_000,
    instanceId: "old-box",
    seq: 3,
  };
  const key = planKey(parts);
  assert.match(key, /\/market=spot\/channel=depth@100ms\/symbol=BTCUSDT\//);
  assert.ok(!key.includes("stream="));
  const old = oldKey("BTCUSDT", parts.firstRecvTs, 3);
  assert.deepEqual(parseKey(old), { ...parts, partition: "stream" });
  assert.equal(planKey(parseKey(old)!), old);
  assert.equal(parseKey(old.replace("/stream=", "/streams=")), undefined);
});

Deno.test("verify reads an old stream= archive, and one that mixes both layouts, as one stream", async () => {
  await using tmp = await tempDir();
  const btc = await fixtureLines("spot_diff_btcusdt_2024-08-08.ndjson.gz");
  const eth = await fixtureLines("spot_diff_ethusdt_2024-08-08.ndjson.gz");
  // Old layout only: BTCUSDT in objects of 1,000 lines.
  for (let i = 0, seq = 0; i < btc.length; i += 1000, seq++) {
    const lines = btc.slice(i, i + 1000);
    await write(tmp.path, oldKey("BTCUSDT", lines[0].recvTs, seq), lines);
  }
  const old = await verifyJson(tmp.path);
  assert.equal(old.code, 0, JSON.stringify(old.report.problems));
  assert.deepEqual(old.report.streams.map((s) => [s.stream, s.messages]), [
    ["btcusdt@depth@100ms", btc.length],
  ]);

  // ETHUSDT: the first half written by the old collector, the rest by the new one.
  const half = 3000;
  for (let i = 0, seq = 0; i < half; i += 1000, seq++) {
    const lines = eth.slice(i, i + 1000);
    await write(tmp.path, oldKey("ETHUSDT", lines[0].recvTs, seq), lines);
  }
  for (let i = half, seq = 0; i < eth.length; i += 1000, seq++) {
    const lines = eth.slice(i, i + 1000);
    const key = planKey({
      prefix: "binance",
      market: "spot",
      streamType: "depth@100ms",
      symbol: "ETHUSDT",
      firstRecvTs: lines[0].recvTs,
      instanceId: "new-box",
      seq,
    });
    await write(tmp.path, key, lines);
  }
  const mixed = await verifyJson(tmp.path);
  assert.equal(mixed.code, 0, JSON.stringify(mixed.report.problems));
  assert.deepEqual(mixed.report.streams.map((s) => [s.stream, s.messages, s.objects]), [
    ["btcusdt@depth@100ms", btc.length, 7],
    ["ethusdt@depth@100ms", eth.length, 7],
  ]);
  assert.equal(mixed.report.streams[1].breaks, 0);

  // A missing old object in the mixed stream is still found.
  await Deno.remove(
    join(tmp.path, "archive", ...oldKey("ETHUSDT", eth[1000].recvTs, 1).split("/")),
  );
  const holed = await verifyJson(tmp.path);
  assert.equal(holed.code, 1);
  assert.ok(holed.report.problems.some((p) => p.kind === "break" && !p.explained));
});
