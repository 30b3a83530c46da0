import assert from "node:assert/strict";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { PutObjectCommand } from "@aws-sdk/client-s3";
import { lineFactsOf } from "../src/archive/decode.ts";
import { dataLine, eventLine, gzipLines } from "../src/archive/encode.ts";
import { planKey } from "../src/archive/keys.ts";
import { metaToRecord, type ObjectMeta } from "../src/archive/meta.ts";
import { bookFromArgs } from "../src/cli/book.ts";
import { parseFrame } from "../src/binance/frames.ts";
import {
  formatReport,
  parseTime,
  selectKeys,
  settledUntil,
  verifyFromArgs,
  type VerifyIo,
} from "../src/cli/verify.ts";
import { parseConfig } from "../src/config.ts";
import type { Config } from "../src/config_types.ts";
import { type ArchiveReader, localArchiveReader } from "../src/verify/archive.ts";
import {
  Auditor,
  defaultMaxHoleMs,
  isoMicros,
  type Problem,
  type Report,
} from "../src/verify/audit.ts";
import { s3ArchiveReader } from "../src/verify/s3_reader.ts";
import { TEST_BUCKET, TestS3 } from "./support/s3.ts";
import { tempDir } from "./support/temp.ts";

// ---------------------------------------------------------------------------
// Building archives the way the recorder does: real lines, keys and gzip.

interface Line {
  readonly recvTs: number;
  readonly text: string;
}

interface ObjectSpec {
  readonly market: string;
  readonly streamType: string;
  readonly symbol: string;
  readonly lines: readonly Line[];
  readonly seq: number;
  readonly instanceId?: string;
}

/** The fixture's messages as data lines, received 3 ms after Binance's event time. */
async function fixtureLines(name: string): Promise<Line[]> {
  const bytes = await Deno.readFile(new URL(`./fixtures/${name}`, import.meta.url));
  const text = new TextDecoder().decode(gunzipSync(bytes));
  return text.split("\n").filter((l) => l !== "").map((raw, i) => {
    const frame = parseFrame(raw);
    if (frame.kind !== "data") throw new Error(`fixture line ${i + 1} is not data`);
    const recvTs = (JSON.parse(frame.dataText).E + 3) * 1000 + (i % 1000);
    return { recvTs, text: dataLine(recvTs, frame.stream, frame.dataText) };
  });
}

/** Splits one stream's lines into objects of `perObject` lines. */
function batches(
  lines: readonly Line[],
  stream: { market: string; streamType: string; symbol: string },
  perObject: number,
): ObjectSpec[] {
  const out: ObjectSpec[] = [];
  for (let i = 0; i < lines.length; i += perObject) {
    out.push({ ...stream, lines: lines.slice(i, i + perObject), seq: out.length });
  }
  return out;
}

function keyOf(spec: ObjectSpec, prefix = "binance"): string {
  return planKey({
    prefix,
    market: spec.market,
    streamType: spec.streamType,
    symbol: spec.symbol,
    firstRecvTs: spec.lines[0].recvTs,
    instanceId: spec.instanceId ?? "test-box",
    seq: spec.seq,
  });
}

/** Writes the objects (and, like the local sink, a `.meta.json` sidecar) under `<dataDir>/archive`. */
async function writeArchive(dataDir: string, specs: readonly ObjectSpec[]): Promise<string[]> {
  const keys: string[] = [];
  for (const spec of specs) {
    const key = keyOf(spec);
    await writeObject(dataDir, key, await gzipLines(spec.lines.map((l) => l.text), 6));
    await writeSidecar(dataDir, key, metaToRecord(metaOf(spec.lines)));
    keys.push(key);
  }
  return keys;
}

/** The metadata the collector stores with these lines (README, "What lands in the archive"). */
function metaOf(lines: readonly Line[]): ObjectMeta {
  // A damaged line (some tests write one by hand) counts as nothing.
  const facts = lines.flatMap((l) => {
    try {
      return [lineFactsOf(l.text)];
    } catch {
      return [];
    }
  });
  const messages = facts.filter((f) => f.isData && !f.isSnapshot);
  return {
    messages: messages.length,
    snapshots: facts.filter((f) => f.isSnapshot).length,
    events: facts.filter((f) => !f.isData).length,
    firstRecvTs: facts[0].recvTs,
    lastRecvTs: Math.max(...facts.map((f) => f.recvTs)),
    firstUpdateId: messages.find((f) => f.firstUpdateId !== undefined)?.firstUpdateId,
    lastUpdateId: messages.findLast((f) => f.lastUpdateId !== undefined)?.lastUpdateId,
  };
}

async function writeSidecar(dataDir: string, key: string, fields: unknown): Promise<void> {
  await Deno.writeTextFile(archivePath(dataDir, key) + ".meta.json", JSON.stringify(fields) + "\n");
}

async function writeObject(dataDir: string, key: string, bytes: Uint8Array): Promise<void> {
  const path = archivePath(dataDir, key);
  await Deno.mkdir(join(path, ".."), { recursive: true });
  await Deno.writeFile(path, bytes);
}

const archivePath = (dataDir: string, key: string) => join(dataDir, "archive", ...key.split("/"));

const SPOT_BTC = { market: "spot", streamType: "depth@100ms", symbol: "BTCUSDT" };
const SPOT_ETH = { market: "spot", streamType: "depth@100ms", symbol: "ETHUSDT" };
const BTC_STREAM = "btcusdt@depth@100ms";

function configFor(dataDir: string, extra: Record<string, string> = {}): Config {
  return parseConfig({ DATA_DIR: dataDir, INSTANCE_ID: "verifier", ...extra });
}

/** Runs `verify` with `--json` plus `args`, returning the exit code and the parsed report. */
async function verifyJson(
  config: Config,
  args: string[] = [],
  io: Pick<VerifyIo, "reader"> = {},
): Promise<{ code: number; report: Report & { exitCode: number; location: string } }> {
  let printed = "";
  const code = await verifyFromArgs(config, ["--json", ...args], {
    print: (text) => printed += text,
    ...io,
  });
  return { code, report: JSON.parse(printed) };
}

const unexplained = (report: Report, kind?: Problem["kind"]) =>
  report.problems.filter((p) => !p.explained && (kind === undefined || p.kind === kind));

function event(recvTs: number, stream: string, name: Parameters<typeof eventLine>[2]): Line {
  return { recvTs, text: eventLine(recvTs, stream, name, { conn: 1 }) };
}

// ---------------------------------------------------------------------------

/**
 * The real BTCUSDT diffs up to `count`, with the REST snapshot of the same
 * capture stored just before the tenth diff (received 5 µs earlier).
 */
async function btcWithSnapshot(count: number): Promise<{ btc: Line[]; lines: Line[] }> {
  const btc = await fixtureLines("spot_diff_btcusdt_2024-08-08.ndjson.gz");
  const snapshotText = (await Deno.readTextFile(
    new URL("./fixtures/spot_snapshot_btcusdt_2024-08-08.ndjson", import.meta.url),
  )).trim();
  const ts = btc[10].recvTs - 5;
  const lines = [
    ...btc.slice(0, 10),
    { recvTs: ts, text: dataLine(ts, "btcusdt@depthSnapshot", snapshotText) },
    ...btc.slice(10, count),
  ];
  return { btc, lines };
}

Deno.test("verify passes a clean archive of two diff streams and counts every message", async () => {
  await using tmp = await tempDir();
  const btc = await fixtureLines("spot_diff_btcusdt_2024-08-08.ndjson.gz");
  const eth = await fixtureLines("spot_diff_ethusdt_2024-08-08.ndjson.gz");
  await writeArchive(tmp.path, [...batches(btc, SPOT_BTC, 600), ...batches(eth, SPOT_ETH, 600)]);

  const { code, report } = await verifyJson(configFor(tmp.path));

  assert.equal(code, 0);
  assert.deepEqual(report.problems, []);
  assert.equal(report.ok, true);
  assert.deepEqual(report.streams.map((s) => s.stream), [BTC_STREAM, "ethusdt@depth@100ms"]);
  const s = report.streams[0];
  assert.equal(s.objects, 11);
  assert.equal(s.messages, btc.length);
  assert.equal(s.duplicates + s.breaks + s.holes + s.unreadableObjects + s.malformedLines, 0);
  assert.equal(s.firstRecvTs, btc[0].recvTs);
  assert.equal(s.lastRecvTs, btc.at(-1)!.recvTs);
  assert.equal(s.maxHoleMs, 1000);
  assert.equal(s.coveragePercent, 100);
});

Deno.test("verify prints a table for people and exits 0 on a clean archive", async () => {
  await using tmp = await tempDir();
  const btc = await fixtureLines("spot_diff_btcusdt_2024-08-08.ndjson.gz");
  await writeArchive(tmp.path, batches(btc, SPOT_BTC, 2000));
  let out = "";
  const code = await verifyFromArgs(configFor(tmp.path), [], { print: (t) => out += t });
  assert.equal(code, 0);
  assert.match(out, /^stream\s+objects\s+messages/m);
  assert.match(out, new RegExp(`spot/${BTC_STREAM}\\s+4\\s+${btc.length}\\s+0\\s+0\\s+0/0\\s+0/0`));
  assert.match(out, /100\.00%/);
  assert.match(out, /^OK: /m);
});

Deno.test("a missing object in the middle is an unexplained break and hole naming stream and time", async () => {
  await using tmp = await tempDir();
  const btc = await fixtureLines("spot_diff_btcusdt_2024-08-08.ndjson.gz");
  const specs = batches(btc, SPOT_BTC, 600);
  const keys = await writeArchive(tmp.path, specs);
  await Deno.remove(archivePath(tmp.path, keys[5]));

  const { code, report } = await verifyJson(configFor(tmp.path));

  assert.equal(code, 1);
  assert.equal(report.ok, false);
  const [brk] = unexplained(report, "break");
  assert.equal(brk.stream, BTC_STREAM);
  assert.equal(brk.key, keys[6]);
  assert.equal(brk.line, 1);
  assert.equal(brk.recvTs, specs[6].lines[0].recvTs);
  assert.equal(brk.time, isoMicros(specs[6].lines[0].recvTs));
  assert.match(brk.time!, /^2024-08-09T00:\d{2}:\d{2}\.\d{6}Z$/);
  assert.match(brk.detail, new RegExp(`previous message .*${keys[4].replaceAll(".", "\\.")}:600`));
  const [hole] = unexplained(report, "hole");
  assert.equal(hole.stream, BTC_STREAM);
  assert.equal(hole.recvTs, specs[4].lines.at(-1)!.recvTs);
  const s = report.streams[0];
  assert.equal(s.objects, 10);
  assert.equal(s.unexplainedBreaks, 1);
  assert.equal(s.unexplainedHoles, 1);
  assert.ok(s.coveragePercent < 92 && s.coveragePercent > 85, `coverage ${s.coveragePercent}`);
});

Deno.test("a gap with disconnected/connected events around it is explained and exits 0", async () => {
  await using tmp = await tempDir();
  const btc = await fixtureLines("spot_diff_btcusdt_2024-08-08.ndjson.gz");
  // 100 messages (10 s) lost while the connection was down, with the events that say so.
  const before = btc.slice(0, 1000);
  const after = btc.slice(1100);
  const lines = [
    ...before,
    event(before.at(-1)!.recvTs + 1000, BTC_STREAM, "disconnected"),
    event(after[0].recvTs - 1000, BTC_STREAM, "connected"),
    ...after,
  ];
  await writeArchive(tmp.path, batches(lines, SPOT_BTC, 600));

  const { code, report } = await verifyJson(configFor(tmp.path));

  assert.equal(code, 0, JSON.stringify(report.problems));
  const kinds = report.problems.map((p) => [p.kind, p.explained]);
  assert.deepEqual(kinds, [["hole", true], ["break", true]]);
  const s = report.streams[0];
  assert.deepEqual([s.breaks, s.unexplainedBreaks, s.holes, s.unexplainedHoles], [1, 0, 1, 0]);
  assert.deepEqual(s.events, { disconnected: 1, connected: 1 });
  assert.ok(s.holeMs > 9000 && s.unexplainedHoleMs === 0);
  // Explained or not, the 10 s hole is time the record does not cover.
  const span = (s.lastRecvTs! - s.firstRecvTs!) / 1000;
  const expected = Math.round(((span - s.holeMs) / span) * 10_000) / 100;
  assert.ok(Math.abs(s.coveragePercent - expected) <= 0.01, `${s.coveragePercent} ${expected}`);
  assert.ok(s.coveragePercent < 99, String(s.coveragePercent));
});

Deno.test("a gap event line just before the next message explains the break", async () => {
  await using tmp = await tempDir();
  const btc = await fixtureLines("spot_diff_btcusdt_2024-08-08.ndjson.gz");
  const lines = [
    ...btc.slice(0, 300),
    event(btc[302].recvTs - 10, BTC_STREAM, "gap"),
    ...btc.slice(302, 1000),
  ];
  await writeArchive(tmp.path, batches(lines, SPOT_BTC, 600));
  const { code, report } = await verifyJson(configFor(tmp.path));
  assert.equal(code, 0);
  assert.deepEqual(report.problems.map((p) => [p.kind, p.explained]), [["break", true]]);
});

Deno.test("a restart after a crash (recovered, then connected) explains the break and hole", async () => {
  await using tmp = await tempDir();
  const btc = await fixtureLines("spot_diff_btcusdt_2024-08-08.ndjson.gz");
  const run1 = [...btc.slice(0, 700), event(btc[699].recvTs, BTC_STREAM, "recovered")];
  const run2 = [event(btc[1000].recvTs - 500, BTC_STREAM, "connected"), ...btc.slice(1000, 1500)];
  await writeArchive(tmp.path, [
    ...batches(run1, SPOT_BTC, 600),
    // The second run numbers its batches from 0 again, under another time.
    ...batches(run2, SPOT_BTC, 600),
  ]);
  const { code, report } = await verifyJson(configFor(tmp.path));
  assert.equal(code, 0, JSON.stringify(report.problems));
  assert.deepEqual(report.problems.map((p) => [p.kind, p.explained]), [
    ["hole", true],
    ["break", true],
  ]);
});

Deno.test("a truncated object is reported by key and the audit goes on with the others", async () => {
  await using tmp = await tempDir();
  const btc = await fixtureLines("spot_diff_btcusdt_2024-08-08.ndjson.gz");
  const eth = await fixtureLines("spot_diff_ethusdt_2024-08-08.ndjson.gz");
  const keys = await writeArchive(tmp.path, batches(btc, SPOT_BTC, 600));
  await writeArchive(tmp.path, batches(eth, SPOT_ETH, 600));
  const path = archivePath(tmp.path, keys[3]);
  await Deno.writeFile(path, (await Deno.readFile(path)).subarray(0, 100));

  const { code, report } = await verifyJson(configFor(tmp.path));

  assert.equal(code, 1);
  const [bad] = unexplained(report, "unreadable");
  assert.equal(bad.key, keys[3]);
  assert.equal(bad.stream, BTC_STREAM);
  assert.match(bad.detail, /^cut short, or its gzip checksum does not match its text/);
  const [btcStats, ethStats] = report.streams;
  assert.equal(btcStats.unreadableObjects, 1);
  assert.equal(btcStats.objects, 11);
  // Every other object was read: all but the 600 lines of the cut one (at most a line survives).
  assert.ok(btcStats.messages >= btc.length - 600 && btcStats.messages <= btc.length - 599);
  assert.match(unexplained(report, "break")[0].detail, /follows unreadable object/);
  assert.equal(ethStats.messages, eth.length);
  assert.equal(ethStats.unreadableObjects + ethStats.breaks, 0);
});

Deno.test("a file that is not gzip at all is unreadable too", async () => {
  await using tmp = await tempDir();
  const btc = await fixtureLines("spot_diff_btcusdt_2024-08-08.ndjson.gz");
  const keys = await writeArchive(tmp.path, batches(btc.slice(0, 1200), SPOT_BTC, 600));
  await Deno.writeTextFile(archivePath(tmp.path, keys[1]), "this is not gzip\n");
  const { code, report } = await verifyJson(configFor(tmp.path));
  assert.equal(code, 1);
  assert.deepEqual(unexplained(report).map((p) => [p.kind, p.key]), [["unreadable", keys[1]]]);
  assert.match(unexplained(report)[0].detail, /^the object is not gzip/);
});

Deno.test("an unreadable object's problem says what is wrong with it: empty, or bytes after its gzip member", async () => {
  await using tmp = await tempDir();
  const btc = await fixtureLines("spot_diff_btcusdt_2024-08-08.ndjson.gz");
  const keys = await writeArchive(tmp.path, batches(btc.slice(0, 1800), SPOT_BTC, 600));
  await Deno.writeFile(archivePath(tmp.path, keys[0]), new Uint8Array(0));
  const second = archivePath(tmp.path, keys[1]);
  const member = await Deno.readFile(second);
  await Deno.writeFile(second, new Uint8Array([...member, ...member]));
  const { code, report } = await verifyJson(configFor(tmp.path));
  assert.equal(code, 1);
  const details = new Map(unexplained(report, "unreadable").map((p) => [p.key, p.detail]));
  assert.match(details.get(keys[0]) ?? "", /^the object is empty \(0 bytes\)/);
  assert.match(details.get(keys[1]) ?? "", /^bytes follow the end of its gzip member/);
});

Deno.test("a malformed line is reported with its object key and line number", async () => {
  await using tmp = await tempDir();
  const btc = await fixtureLines("spot_diff_btcusdt_2024-08-08.ndjson.gz");
  const specs = batches(btc.slice(0, 1200), SPOT_BTC, 600);
  const broken = [...specs[1].lines];
  broken.splice(4, 0, { recvTs: broken[3].recvTs, text: '{"recv_ts":1,"stream":' });
  broken.splice(9, 0, { recvTs: broken[8].recvTs, text: '{"recv_ts":"x","stream":"a"}' });
  const keys = await writeArchive(tmp.path, [specs[0], { ...specs[1], lines: broken }]);

  const { code, report } = await verifyJson(configFor(tmp.path));

  assert.equal(code, 1);
  const found = unexplained(report, "malformed").map((p) => [p.key, p.line, p.stream]);
  assert.deepEqual(found, [[keys[1], 5, BTC_STREAM], [keys[1], 10, BTC_STREAM]]);
  assert.equal(report.streams[0].malformedLines, 2);
  assert.equal(report.streams[0].messages, 1200);
  assert.equal(report.streams[0].breaks, 0);
});

Deno.test("an object stored twice under another key shows as duplicates", async () => {
  await using tmp = await tempDir();
  const btc = await fixtureLines("spot_diff_btcusdt_2024-08-08.ndjson.gz");
  const specs = batches(btc.slice(0, 1800), SPOT_BTC, 600);
  await writeArchive(tmp.path, [...specs, { ...specs[1], instanceId: "other-box", seq: 9 }]);

  const { code, report } = await verifyJson(configFor(tmp.path));

  assert.equal(code, 1);
  const s = report.streams[0];
  assert.equal(s.duplicates, 600);
  assert.equal(s.messages, 2400);
  assert.equal(s.breaks + s.holes, 0);
  const dups = unexplained(report, "duplicate");
  assert.equal(dups.length, 1);
  // The copy read second is the duplicate (same time: ordered by instance, then seq).
  assert.match(dups[0].key!, /_test-box_000001\.ndjson\.gz$/);
  assert.match(dups[0].detail, /^600 message\(s\) stored again/);
});

Deno.test("each object's sidecar is checked against its lines: a mismatch fails, a missing one is listed", async () => {
  await using tmp = await tempDir();
  const { lines } = await btcWithSnapshot(2400);
  const specs = batches(lines, SPOT_BTC, 600);
  const keys = await writeArchive(tmp.path, specs);
  const clean = await verifyJson(configFor(tmp.path));
  assert.equal(clean.code, 0, JSON.stringify(clean.report.problems));
  assert.deepEqual(clean.report.problems, []);

  // Written before snapshots were counted apart (README): `messages` includes them. Valid.
  const { snapshots: _, ...old } = metaOf(specs[0].lines);
  await writeSidecar(tmp.path, keys[0], metaToRecord({ ...old, messages: old.messages + 1 }));
  // One line fewer and a later end than the lines say; a sidecar that is not JSON; none at all.
  const meta1 = metaOf(specs[1].lines);
  await writeSidecar(tmp.path, keys[1], {
    ...metaToRecord(meta1),
    messages: String(meta1.messages - 1),
    "last-recv-ts": String(meta1.lastRecvTs + 1),
  });
  await Deno.writeTextFile(archivePath(tmp.path, keys[2]) + ".meta.json", '{"messages": ');
  await Deno.remove(archivePath(tmp.path, keys[3]) + ".meta.json");

  const { code, report } = await verifyJson(configFor(tmp.path));
  assert.equal(code, 1);
  const meta = unexplained(report, "meta");
  assert.deepEqual(meta.map((p) => p.key), [keys[1], keys[2]]);
  assert.match(meta[0].detail, /messages 599 .*600/);
  assert.match(meta[0].detail, /last-recv-ts/);
  assert.doesNotMatch(meta[0].detail, /events|first-recv-ts|update-id/);
  assert.match(meta[1].detail, /not JSON/);
  assert.equal(report.problems.length, 2, JSON.stringify(report.problems));
  const s = report.streams[0];
  assert.deepEqual([s.metaMismatches, s.objectsWithoutMeta], [2, 1]);
  let printed = "";
  await verifyFromArgs(configFor(tmp.path), [], { print: (text) => printed += text });
  assert.match(printed, /1 object\(s\) without metadata .*_000003\.ndjson\.gz/);

  // Without metadata alone the archive still passes: its lines are whole.
  await writeSidecar(tmp.path, keys[1], metaToRecord(meta1));
  await writeSidecar(tmp.path, keys[2], metaToRecord(metaOf(specs[2].lines)));
  assert.equal((await verifyJson(configFor(tmp.path))).code, 0);
});

Deno.test("keys outside the layout are reported; sidecars and temporary files are not", async () => {
  await using tmp = await tempDir();
  const btc = await fixtureLines("spot_diff_btcusdt_2024-08-08.ndjson.gz");
  const [key] = await writeArchive(tmp.path, batches(btc.slice(0, 500), SPOT_BTC, 600));
  const dir = key.slice(0, key.lastIndexOf("/"));
  const junk = await gzipLines([btc[0].text], 1);
  const bad = [
    `${dir}/garbage.ndjson.gz`,
    key.replace("hour=", "hour=0"), // the partition disagrees with the time
    "binance/exchange=binance/market=spot/stray.ndjson.gz",
    "binance/exchange=binance/market=spot/notstream/x.ndjson.gz",
  ];
  for (const k of bad) await writeObject(tmp.path, k, junk);
  await writeObject(tmp.path, `${key}.tmp-1a2b3c4d`, junk);
  await writeObject(tmp.path, "binance/_l2-uploader-check/probe.ndjson.gz", junk);

  const { code, report } = await verifyJson(configFor(tmp.path));

  assert.equal(code, 1);
  assert.deepEqual(unexplained(report, "bad-key").map((p) => p.key).sort(), [...bad].sort());
  assert.equal(report.problems.length, bad.length);
  assert.equal(report.streams[0].messages, 500);
});

Deno.test("--from/--to select objects by partition and time, and lines by recv_ts", async () => {
  await using tmp = await tempDir();
  const btc = await fixtureLines("spot_diff_btcusdt_2024-08-08.ndjson.gz");
  const specs = batches(btc, SPOT_BTC, 600);
  const keys = await writeArchive(tmp.path, specs);
  // Another day that must not even be listed.
  const later = btc.slice(0, 50).map((l) => ({
    recvTs: l.recvTs + 86_400e6,
    text: l.text.replace(String(l.recvTs), String(l.recvTs + 86_400e6)),
  }));
  await writeArchive(tmp.path, batches(later, SPOT_BTC, 600));
  // A missing object outside the range changes nothing inside it.
  await Deno.remove(archivePath(tmp.path, keys[9]));

  const from = btc[1000].recvTs; // in the middle of object 1
  const to = btc[3000].recvTs; // the first line of object 5
  const listed: string[] = [];
  const read: string[] = [];
  const local = localArchiveReader(join(tmp.path, "archive"));
  const reader: ArchiveReader = {
    ...local,
    list: (prefix) => (listed.push(prefix), local.list(prefix)),
    read: (key) => (read.push(key), local.read(key)),
  };
  const { code, report } = await verifyJson(configFor(tmp.path), [
    "--from",
    isoMicros(from),
    "--to",
    isoMicros(to),
  ], { reader });

  assert.equal(code, 0, JSON.stringify(report.problems));
  assert.deepEqual(report.range, {
    from: isoMicros(from),
    to: isoMicros(to),
    fromRecvTs: from,
    toRecvTs: to,
  });
  // Object 1 starts before --from but reaches into the range; object 0 is read for the chain
  // and snapshots before it (a diff stream: the lookback, as `book` reads it); object 5
  // starts at --to: it is read (for how a silence at the range's end would end). Neither
  // is judged.
  assert.deepEqual(read, keys.slice(0, 6));
  assert.ok(listed.every((prefix) => prefix.includes("/date=2024-08-08/")), listed.join());
  const s = report.streams[0];
  assert.equal(s.messages, 2000);
  assert.equal(s.objects, 4);
  assert.ok(s.coveragePercent > 99.9, String(s.coveragePercent));
  assert.deepEqual([s.firstRecvTs, s.lastRecvTs], [from, btc[2999].recvTs]);
});

Deno.test("--symbol keeps only the symbols asked for; one with no data fails", async () => {
  await using tmp = await tempDir();
  const btc = await fixtureLines("spot_diff_btcusdt_2024-08-08.ndjson.gz");
  const eth = await fixtureLines("spot_diff_ethusdt_2024-08-08.ndjson.gz");
  const keys = await writeArchive(tmp.path, batches(btc, SPOT_BTC, 600));
  await writeArchive(tmp.path, batches(eth, SPOT_ETH, 600));
  await Deno.remove(archivePath(tmp.path, keys[4])); // a broken BTC stream is not looked at

  const only = await verifyJson(configFor(tmp.path), ["--symbol", "ethusdt"]);
  assert.equal(only.code, 0);
  assert.deepEqual(only.report.streams.map((s) => s.stream), ["ethusdt@depth@100ms"]);

  const missing = await verifyJson(configFor(tmp.path), ["--symbol", "ETHUSDT,XRPUSDT"]);
  assert.equal(missing.code, 1);
  assert.deepEqual(
    unexplained(missing.report).map((p) => [p.kind, p.detail]),
    [["no-data", "no object of symbol XRPUSDT in the range"]],
  );
});

Deno.test("--json gives the report with exit code, location, range, streams and problems", async () => {
  await using tmp = await tempDir();
  const btc = await fixtureLines("spot_diff_btcusdt_2024-08-08.ndjson.gz");
  const keys = await writeArchive(tmp.path, batches(btc, SPOT_BTC, 600));
  await Deno.remove(archivePath(tmp.path, keys[2]));
  const { code, report } = await verifyJson(configFor(tmp.path));
  assert.equal(code, 1);
  assert.equal(report.exitCode, 1);
  assert.equal(report.location, join(tmp.path, "archive"));
  assert.deepEqual(Object.keys(report).sort(), [
    "exitCode",
    "lines",
    "location",
    "objects",
    "ok",
    "problems",
    "problemsOmitted",
    "range",
    "streams",
  ]);
  assert.deepEqual(Object.keys(report.range).sort(), ["from", "fromRecvTs", "to", "toRecvTs"]);
  assert.match(report.range.from!, /^2024-08-08T\d{2}:\d{2}:\d{2}\.\d{6}Z$/);
  const stream = report.streams[0];
  for (
    const field of [
      "stream",
      "market",
      "streamType",
      "symbol",
      "objects",
      "messages",
      "snapshots",
      "events",
      "duplicates",
      "breaks",
      "unexplainedBreaks",
      "holes",
      "unexplainedHoles",
      "unreadableObjects",
      "malformedLines",
      "firstRecvTs",
      "lastRecvTs",
      "firstUpdateId",
      "lastUpdateId",
      "maxHoleMs",
      "holeMs",
      "unexplainedHoleMs",
      "coveragePercent",
    ]
  ) assert.ok(field in stream, field);
  assert.deepEqual(
    [stream.market, stream.streamType, stream.symbol],
    ["spot", "depth@100ms", "BTCUSDT"],
  );
  const problem = report.problems[0];
  assert.deepEqual(Object.keys(problem).sort(), [
    "detail",
    "explained",
    "key",
    "kind",
    "line",
    "market",
    "recvTs",
    "stream",
    "time",
    "untilRecvTs", // a hole: where it ends
  ]);
});

Deno.test("REST snapshots in a diff stream's objects count as snapshots, outside the chain", async () => {
  await using tmp = await tempDir();
  const { lines } = await btcWithSnapshot(1000);
  await writeArchive(tmp.path, batches(lines, SPOT_BTC, 600));
  const { code, report } = await verifyJson(configFor(tmp.path));
  assert.equal(code, 0, JSON.stringify(report.problems));
  assert.deepEqual(report.streams.map((s) => [s.stream, s.messages, s.snapshots]), [
    [BTC_STREAM, 1000, 1],
  ]);
});

Deno.test("--from judges the book rebuildable at the range's start as book does: from the snapshot before it", async () => {
  await using tmp = await tempDir();
  // The only snapshot (after the tenth diff), a second into the record; the range starts five minutes later.
  const { btc, lines } = await btcWithSnapshot(4000);
  await writeArchive(tmp.path, batches(lines, SPOT_BTC, 600));
  const range = ["--from", isoMicros(btc[3000].recvTs), "--to", isoMicros(btc[3999].recvTs)];

  const config = configFor(tmp.path);
  const { code, report } = await verifyJson(config, range);
  assert.equal(code, 0, JSON.stringify(report.problems));
  assert.deepEqual(report.streams[0].notRebuildable, [], "book stands on the snapshot before");
  let err = "";
  const book = await bookFromArgs(config, ["--symbol", "BTCUSDT", ...range], {
    write: () => {},
    printError: (text) => err += text,
  });
  assert.equal(book, 0, err);

  // A snapshot further back than book reads (two SNAPSHOT_INTERVAL_SECONDS and a
  // BATCH_SECONDS): neither can rebuild the book before the range's first snapshot (none).
  const short = configFor(tmp.path, { SNAPSHOT_INTERVAL_SECONDS: "10", BATCH_SECONDS: "1" });
  const { report: shortReport } = await verifyJson(short, range);
  assert.deepEqual(shortReport.streams[0].notRebuildable?.map((r) => [r.fromRecvTs, r.toRecvTs]), [
    [btc[3000].recvTs, btc[3998].recvTs],
  ]);
  const shortBook = await bookFromArgs(short, ["--symbol", "BTCUSDT", ...range], {
    write: () => {},
    printError: () => {},
  });
  assert.equal(shortBook, 1, "book cannot build a book either");
});

Deno.test("the USD-M pu chain passes on real data and breaks when a message is missing", async () => {
  await using tmp = await tempDir();
  const usdm = await fixtureLines("usdm_diff_btcusdt_2024-08-08.ndjson.gz");
  const stream = { market: "usdm", streamType: "depth@0ms", symbol: "BTCUSDT" };
  await writeArchive(tmp.path, batches(usdm, stream, 1000));
  const clean = await verifyJson(configFor(tmp.path));
  assert.equal(clean.code, 0, JSON.stringify(clean.report.problems));
  assert.equal(clean.report.streams[0].messages, usdm.length);

  await using tmp2 = await tempDir();
  await writeArchive(tmp2.path, batches([...usdm.slice(0, 500), ...usdm.slice(501)], stream, 1000));
  const broken = await verifyJson(configFor(tmp2.path));
  assert.equal(broken.code, 1);
  const [brk] = unexplained(broken.report, "break");
  assert.equal(brk.stream, "btcusdt@depth@0ms");
  assert.equal(brk.line, 501);
  assert.match(brk.detail, /^pu \d+ does not continue the previous u \d+/);
});

/** A partial-book stream: one message per 100 ms, lastUpdateId growing by `step`. */
function partialLines(count: number, opts: { start: number; ids?: (i: number) => number }) {
  const stream = "btcusdt@depth20@100ms";
  return Array.from({ length: count }, (_, i) => {
    const recvTs = opts.start + i * 100_000;
    const id = opts.ids ? opts.ids(i) : 1000 + i * 3;
    const data = `{"lastUpdateId":${id},"bids":[["1.0","2.0"]],"asks":[["1.1","3.0"]]}`;
    return { recvTs, text: dataLine(recvTs, stream, data) };
  });
}

const PARTIAL = { market: "spot", streamType: "depth20@100ms", symbol: "BTCUSDT" };
const T0 = Date.UTC(2026, 0, 2, 3, 4, 5) * 1000;

Deno.test("a partial stream whose lastUpdateId goes backwards has duplicates, not breaks", async () => {
  await using tmp = await tempDir();
  // Message 50 repeats an older id; ids skip by design otherwise.
  const lines = partialLines(200, { start: T0, ids: (i) => i === 50 ? 1000 : 1000 + i * 7 });
  await writeArchive(tmp.path, batches(lines, PARTIAL, 100));
  const { code, report } = await verifyJson(configFor(tmp.path));
  assert.equal(code, 1);
  const s = report.streams[0];
  assert.deepEqual([s.duplicates, s.breaks, s.holes], [1, 0, 0]);
  const [dup] = unexplained(report, "duplicate");
  assert.equal(dup.line, 51);
  assert.equal(dup.stream, "btcusdt@depth20@100ms");
});

Deno.test("a time hole is found at 10 x the stream speed by default, and --max-hole moves it", async () => {
  await using tmp = await tempDir();
  // 3 s without any line in a 100 ms stream: the ids continue, so only the time says so.
  const first = partialLines(100, { start: T0 });
  const second = partialLines(100, {
    start: first.at(-1)!.recvTs + 3_000_000,
    ids: (i) => 2000 + i,
  });
  await writeArchive(tmp.path, batches([...first, ...second], PARTIAL, 1000));

  const byDefault = await verifyJson(configFor(tmp.path));
  assert.equal(byDefault.code, 1);
  const [hole] = unexplained(byDefault.report, "hole");
  assert.equal(hole.recvTs, first.at(-1)!.recvTs);
  assert.equal(hole.line, 101);
  assert.match(hole.detail, /^no line for 3 s \(threshold 1 s\)/);
  assert.equal(byDefault.report.streams[0].unexplainedHoleMs, 3000);

  const lenient = await verifyJson(configFor(tmp.path), ["--max-hole", "5s"]);
  assert.equal(lenient.code, 0);
  assert.equal(lenient.report.streams[0].maxHoleMs, 5000);
  const strict = await verifyJson(configFor(tmp.path), ["--max-hole", "2500ms"]);
  assert.equal(strict.code, 1);
});

Deno.test("defaultMaxHoleMs is 10 x the stream's speed (its suffix, else its market's default), at least 1 s", () => {
  assert.equal(defaultMaxHoleMs("depth@100ms", "spot"), 1000);
  assert.equal(defaultMaxHoleMs("depth5@1000ms", "spot"), 10_000);
  assert.equal(defaultMaxHoleMs("depth", "spot"), 10_000);
  assert.equal(defaultMaxHoleMs("depth20", "spot"), 10_000);
  // USD-M's default speed is 250 ms (BINANCE.md, Stream names: `depth20` is 250 ms there).
  assert.equal(defaultMaxHoleMs("depth", "usdm"), 2500);
  assert.equal(defaultMaxHoleMs("depth20", "usdm"), 2500);
  assert.equal(defaultMaxHoleMs("depth20@500ms", "usdm"), 5000);
  assert.equal(defaultMaxHoleMs("depth@0ms", "spot"), 1000);
  assert.equal(defaultMaxHoleMs("trade", "usdm"), 3_600_000);
});

Deno.test("a USD-M depth20 stream (250 ms) silent for 6 s with no event line has an unexplained hole", async () => {
  await using tmp = await tempDir();
  const stream = "btcusdt@depth20";
  let u = 5000;
  const lines = Array.from({ length: 60 }, (_, i) => {
    // 30 pushes every 250 ms, then 6 s of silence, then 30 more.
    const recvTs = T0 + i * 250_000 + (i >= 30 ? 6_000_000 : 0);
    const pu = u;
    u += 4;
    const data = `{"e":"depthUpdate","E":${Math.floor(recvTs / 1000)},"T":${
      Math.floor(recvTs / 1000)
    },"s":"BTCUSDT","U":${pu + 1},"u":${u},"pu":${pu},"b":[["1.0","2.0"]],"a":[["1.1","3.0"]]}`;
    return { recvTs, text: dataLine(recvTs, stream, data) };
  });
  await writeArchive(tmp.path, [
    { market: "usdm", streamType: "depth20", symbol: "BTCUSDT", lines, seq: 0 },
  ]);
  const { code, report } = await verifyJson(configFor(tmp.path));
  assert.equal(report.streams[0].maxHoleMs, 2500);
  const holes = unexplained(report, "hole");
  assert.equal(holes.length, 1);
  assert.match(holes[0].detail, /^no line for 6\.25 s \(threshold 2\.5 s\)/);
  assert.equal(code, 1);
});

Deno.test("a REST snapshot stored inside a silence of the stream does not split it: the events after it explain it all", async () => {
  await using tmp = await tempDir();
  const btc = await fixtureLines("spot_diff_btcusdt_2024-08-08.ndjson.gz");
  const snapshotText = (await Deno.readTextFile(
    new URL("./fixtures/spot_snapshot_btcusdt_2024-08-08.ndjson", import.meta.url),
  )).trim();
  // 5 s of silence after the 200th diff: a snapshot answered 2.8 s in, the stale and
  // disconnected lines at 4.9 s; then the new connection's diffs continue the chain.
  const before = btc.slice(0, 200);
  const silence = before.at(-1)!.recvTs;
  const after = btc.slice(200, 400).map((l, i) => {
    const recvTs = silence + 5_000_000 + i * 100_000;
    return { recvTs, text: l.text.replace(/^\{"recv_ts":\d+/, `{"recv_ts":${recvTs}`) };
  });
  const at = (ms: number) => silence + ms * 1000;
  const lines = [
    ...before,
    { recvTs: at(2800), text: dataLine(at(2800), "btcusdt@depthSnapshot", snapshotText) },
    event(at(4900), BTC_STREAM, "stale"),
    event(at(4901), BTC_STREAM, "disconnected"),
    event(at(4950), BTC_STREAM, "connected"),
    ...after,
  ];
  await writeArchive(tmp.path, [{ ...SPOT_BTC, lines, seq: 0 }]);
  const { code, report } = await verifyJson(configFor(tmp.path));
  assert.deepEqual(unexplained(report), []);
  const s = report.streams[0];
  assert.deepEqual([s.holes, s.unexplainedHoles, s.snapshots], [1, 0, 1]);
  assert.equal(code, 0);
});

Deno.test("an empty archive is a problem, not a pass", async () => {
  await using tmp = await tempDir();
  const { code, report } = await verifyJson(configFor(tmp.path));
  assert.equal(code, 1);
  assert.deepEqual(report.problems.map((p) => p.kind), ["no-data"]);
});

Deno.test("usage errors exit 2 and say what is wrong", async () => {
  await using tmp = await tempDir();
  const config = configFor(tmp.path);
  const cases: Array<[string[], RegExp]> = [
    [["--from", "yesterday"], /--from: not an ISO 8601/],
    [["--to", "2024-02-30"], /--to: not an ISO 8601/],
    [["--from", "2024-08-09", "--to", "2024-08-08"], /is not before/],
    [["--max-hole", "5x"], /--max-hole: not a duration/],
    [["--max-hole", "0s"], /--max-hole: not a duration/],
    [["--symbol", "BTC/USDT"], /--symbol: not a symbol/],
    [["--bogus"], /Unknown option '--bogus'/],
  ];
  for (const [args, message] of cases) {
    let out = "";
    const code = await verifyFromArgs(config, args, { print: (t) => out += t });
    assert.equal(code, 2, args.join(" "));
    assert.match(out, message);
  }
});

Deno.test("an archive that cannot be listed exits 2 naming where it is", async () => {
  await using tmp = await tempDir();
  const reader: ArchiveReader = {
    ...localArchiveReader(tmp.path),
    location: "s3://nope/binance",
    // deno-lint-ignore require-yield
    async *children() {
      throw new Error("NoSuchBucket: The specified bucket does not exist");
    },
  };
  let out = "";
  const code = await verifyFromArgs(configFor(tmp.path), [], {
    print: (t) => out += t,
    reader,
  });
  assert.equal(code, 2);
  assert.match(out, /cannot list the archive at s3:\/\/nope\/binance: NoSuchBucket/);
});

Deno.test("parseTime reads dates and times as UTC unless an offset is given, to the µs", () => {
  assert.equal(parseTime("2024-08-08"), Date.UTC(2024, 7, 8) * 1000);
  assert.equal(parseTime("2024-08-08T10:30"), Date.UTC(2024, 7, 8, 10, 30) * 1000);
  assert.equal(parseTime("2024-08-08T10:30:00+02:00"), Date.UTC(2024, 7, 8, 8, 30) * 1000);
  assert.equal(
    parseTime("2024-08-08T10:30:01.000123Z"),
    Date.UTC(2024, 7, 8, 10, 30, 1) * 1000 + 123,
  );
  assert.equal(parseTime("08/08/2024"), null);
});

Deno.test("the Auditor keeps its problem list bounded and still counts everything", () => {
  const auditor = new Auditor({ maxProblems: 3 });
  const key = planKey({ ...PARTIAL, prefix: "", firstRecvTs: T0, instanceId: "x", seq: 0 });
  assert.equal(auditor.beginObject(key), true);
  for (let i = 1; i <= 10; i++) auditor.line("not json", i);
  auditor.endObject();
  const report = auditor.report();
  assert.equal(report.problems.length, 3);
  assert.equal(report.problemsOmitted, 7);
  assert.equal(report.streams[0].malformedLines, 10);
  assert.equal(report.ok, false);
  assert.match(formatReport(report, "x"), /… 7 more \(see --json\)/);
});

Deno.test({
  name: "verify reads an S3 archive page by page and streams each object",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using s3 = await TestS3.start();
    const btc = await fixtureLines("spot_diff_btcusdt_2024-08-08.ndjson.gz");
    const specs = batches(btc.slice(0, 3000), SPOT_BTC, 500);
    const keys: string[] = [];
    for (const spec of specs) {
      const key = keyOf(spec);
      keys.push(key);
      await s3.client.send(
        new PutObjectCommand({
          Bucket: TEST_BUCKET,
          Key: key,
          Body: await gzipLines(spec.lines.map((l) => l.text), 6),
        }),
      );
    }
    // A cut object, and a probe left by `check` beside the archive.
    const cut = await gzipLines(specs[2].lines.map((l) => l.text), 6);
    await s3.client.send(
      new PutObjectCommand({ Bucket: TEST_BUCKET, Key: keys[2], Body: cut.subarray(0, 100) }),
    );
    await s3.client.send(
      new PutObjectCommand({
        Bucket: TEST_BUCKET,
        Key: "binance/_l2-uploader-check/x.probe",
        Body: "probe\n",
      }),
    );
    await using tmp = await tempDir();
    const config = configFor(tmp.path, { ...s3.env() });
    assert.ok(config.s3);
    const reader = s3ArchiveReader(config.s3, { client: s3.client });
    assert.equal(reader.location, `s3://${TEST_BUCKET}/binance`);
    const listed = (await Array.fromAsync(reader.list("binance/"))).sort();
    assert.deepEqual(listed, [...keys].sort());

    const { code, report } = await verifyJson(config, [], { reader });

    assert.equal(code, 1);
    assert.deepEqual(unexplained(report, "unreadable").map((p) => p.key), [keys[2]]);
    assert.equal(report.streams[0].objects, 6);
    assert.ok(report.streams[0].messages >= 2500);
    assert.equal(unexplained(report, "break").length, 1);

    // From the object after the one after the cut (which may reach into the range): clean.
    const after = await verifyJson(config, ["--from", isoMicros(specs[4].lines[0].recvTs)], {
      reader,
    });
    assert.equal(after.code, 0, JSON.stringify(after.report.problems));

    // A second symbol across two dates: the level-by-level walk finds every partition.
    const eth = await fixtureLines("spot_diff_ethusdt_2024-08-08.ndjson.gz");
    for (const spec of batches(eth, SPOT_ETH, 1000)) {
      await s3.client.send(
        new PutObjectCommand({
          Bucket: TEST_BUCKET,
          Key: keyOf(spec),
          Body: await gzipLines(spec.lines.map((l) => l.text), 1),
        }),
      );
    }
    const symbolLevel = "binance/exchange=binance/market=spot/channel=depth@100ms/";
    assert.deepEqual((await Array.fromAsync(reader.children(symbolLevel))).sort(), [
      { prefix: `${symbolLevel}symbol=BTCUSDT/` },
      { prefix: `${symbolLevel}symbol=ETHUSDT/` },
    ]);
    assert.deepEqual(
      await Array.fromAsync(reader.children(`${symbolLevel}symbol=ETHUSDT/`)),
      [
        { prefix: `${symbolLevel}symbol=ETHUSDT/date=2024-08-08/` },
        { prefix: `${symbolLevel}symbol=ETHUSDT/date=2024-08-09/` },
      ],
    );
    const ethOnly = await verifyJson(config, ["--symbol", "ETHUSDT"], { reader });
    assert.equal(ethOnly.code, 0, JSON.stringify(ethOnly.report.problems));
    assert.equal(ethOnly.report.streams[0].messages, eth.length);
    assert.equal(ethOnly.report.streams[0].objects, 7);
  },
});

Deno.test({
  name:
    "S3 metadata is checked from the GetObject response: one request per object, a mismatch fails",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using s3 = await TestS3.start();
    const btc = await fixtureLines("spot_diff_btcusdt_2024-08-08.ndjson.gz");
    const specs = batches(btc.slice(0, 1500), SPOT_BTC, 500);
    const keys = specs.map((spec) => keyOf(spec));
    const wrong = { ...metaOf(specs[1].lines), firstUpdateId: 1 };
    const metadata = [metaToRecord(metaOf(specs[0].lines)), metaToRecord(wrong), undefined];
    for (const [i, spec] of specs.entries()) {
      await s3.client.send(
        new PutObjectCommand({
          Bucket: TEST_BUCKET,
          Key: keys[i],
          Body: await gzipLines(spec.lines.map((l) => l.text), 6),
          Metadata: metadata[i],
        }),
      );
    }
    await using tmp = await tempDir();
    const config = configFor(tmp.path, { ...s3.env() });
    const sent: string[] = [];
    s3.client.middlewareStack.add((next, context) => (args) => {
      sent.push(context.commandName ?? "?");
      return next(args);
    }, { step: "initialize" });
    const reader = s3ArchiveReader(config.s3!, { client: s3.client });

    const { code, report } = await verifyJson(config, [], { reader });

    assert.equal(code, 1);
    assert.deepEqual(report.problems.map((p) => [p.kind, p.key]), [["meta", keys[1]]]);
    assert.match(report.problems[0].detail, /first-update-id 1 \(the lines: \d+\)/);
    const s = report.streams[0];
    assert.deepEqual([s.metaMismatches, s.objectsWithoutMeta, s.firstObjectWithoutMeta], [
      1,
      1,
      keys[2],
    ]);
    assert.deepEqual(sent.filter((name) => name !== "ListObjectsV2Command"), [
      "GetObjectCommand",
      "GetObjectCommand",
      "GetObjectCommand",
    ]);
  },
});

Deno.test("the local reader lists only final objects and walks one level at a time", async () => {
  await using tmp = await tempDir();
  const btc = await fixtureLines("spot_diff_btcusdt_2024-08-08.ndjson.gz");
  const keys = await writeArchive(tmp.path, batches(btc.slice(0, 1000), SPOT_BTC, 600));
  const reader = localArchiveReader(join(tmp.path, "archive"));
  assert.deepEqual((await Array.fromAsync(reader.list("binance/"))).sort(), keys);
  assert.deepEqual(
    (await Array.fromAsync(reader.list("binance/exchange=binance/market=sp"))).sort(),
    keys,
  );
  assert.deepEqual(await Array.fromAsync(reader.list("nothing/")), []);
  assert.deepEqual(await Array.fromAsync(reader.children("binance/")), [
    { prefix: "binance/exchange=binance/" },
  ]);
  const object = await reader.read(keys[0]);
  const body = await new Response(object.body).arrayBuffer();
  assert.equal(new TextDecoder().decode(gunzipSync(new Uint8Array(body))).split("\n").length, 601);
  assert.equal(object.meta?.messages, "600", "the sidecar's fields come with the object");
});

Deno.test("settledUntil leaves twice BATCH_SECONDS and a minute for lines not stored yet", () => {
  assert.equal(settledUntil({ batchSeconds: 60 }, 1_000_000), (1_000_000 - 180_000) * 1000);
  assert.equal(settledUntil({ batchSeconds: 2 }, 1_000_000), (1_000_000 - 64_000) * 1000);
});

Deno.test("the object after --to comes from the next day's first hour; that day's stray files are its own audit's", async () => {
  await using tmp = await tempDir();
  const btc = await fixtureLines("spot_diff_btcusdt_2024-08-08.ndjson.gz");
  await writeArchive(tmp.path, batches(btc.slice(0, 1200), SPOT_BTC, 600));
  const day = 86_400e6;
  const later = btc.slice(0, 1200).map((l) => ({
    recvTs: l.recvTs + day,
    text: l.text.replace(String(l.recvTs), String(l.recvTs + day)),
  }));
  const laterKeys = await writeArchive(tmp.path, batches(later, SPOT_BTC, 600));
  const dir = "binance/exchange=binance/market=spot/channel=depth@100ms/symbol=BTCUSDT";
  await writeObject(
    tmp.path,
    `${dir}/date=2024-08-09/hour=00/copy of object.ndjson.gz`,
    new Uint8Array(3),
  );
  const read: string[] = [];
  const local = localArchiveReader(join(tmp.path, "archive"));
  const reader: ArchiveReader = { ...local, read: (key) => (read.push(key), local.read(key)) };
  const { report } = await verifyJson(configFor(tmp.path), [
    "--from",
    "2024-08-08",
    "--to",
    "2024-08-09",
  ], { reader });
  assert.deepEqual(report.problems.filter((p) => p.kind === "bad-key"), []);
  assert.deepEqual(read.filter((key) => key.includes("date=2024-08-09")), [laterKeys[0]]);
  assert.equal(report.streams[0].messages, 1200, "nothing of the next day is counted");
});

Deno.test("selectKeys yields the object after --to only with readAfterRange", async () => {
  await using tmp = await tempDir();
  const btc = await fixtureLines("spot_diff_btcusdt_2024-08-08.ndjson.gz");
  const keys = await writeArchive(tmp.path, batches(btc, SPOT_BTC, 600));
  const reader = localArchiveReader(join(tmp.path, "archive"));
  const options = {
    prefix: "binance",
    symbols: [],
    from: btc[1000].recvTs,
    to: btc[3000].recvTs,
  };
  const ignore = { badKey: () => {} };
  assert.deepEqual(await Array.fromAsync(selectKeys(reader, options, ignore)), keys.slice(1, 5));
  assert.deepEqual(
    await Array.fromAsync(selectKeys(reader, { ...options, readAfterRange: true }, ignore)),
    keys.slice(1, 6),
  );
});

Deno.test("a symbol stopped and listed again with lower update ids: a new chain, no duplicates, whole or from the day after", async () => {
  await using tmp = await tempDir();
  const stream = "btcusdt@depth20@100ms";
  const twoDays = 2 * 86_400_000_000;
  const before = [
    event(T0 - 1000, stream, "connected"),
    ...partialLines(50, { start: T0, ids: (i) => 50_000 + i * 3 }),
  ];
  const stopped = {
    recvTs: T0 + 5_100_000,
    text: eventLine(T0 + 5_100_000, stream, "stopped", {}),
  };
  // Whether Binance restarts a relisted symbol's ids is not documented: the record must not care.
  const after = [
    event(T0 + twoDays - 1000, stream, "connected"),
    ...partialLines(50, { start: T0 + twoDays, ids: (i) => 10 + i * 3 }),
  ];
  await writeArchive(tmp.path, [
    { ...PARTIAL, lines: [...before, stopped], seq: 0 },
    { ...PARTIAL, lines: after, seq: 0, instanceId: "relisted" },
  ]);
  const whole = await verifyJson(configFor(tmp.path));
  assert.deepEqual(unexplained(whole.report), []);
  assert.equal(whole.report.streams[0].duplicates, 0);
  assert.equal(whole.code, 0);
  const relistDay = isoMicros(T0 + twoDays).slice(0, 10);
  const fromThen = await verifyJson(configFor(tmp.path), [
    "--from",
    relistDay,
    "--to",
    isoMicros(T0 + twoDays + 6_000_000),
  ]);
  assert.deepEqual(unexplained(fromThen.report, "duplicate"), []);
  assert.equal(fromThen.report.streams[0].duplicates, 0);
});
