import assert from "node:assert/strict";
import { dataLine } from "../src/archive/encode.ts";
import { planKey } from "../src/archive/keys.ts";
import { formatReport } from "../src/cli/verify.ts";
import { Auditor } from "../src/verify/audit.ts";
import { RebuildTracker } from "../src/verify/rebuild.ts";

const T0 = 1_795_830_000_000_000; // µs
const SECOND = 1_000_000;

function diff(u: number, U = u): string {
  return `{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":${U},"u":${u},"b":[],"a":[]}`;
}

function snapshot(lastUpdateId: number): string {
  return `{"lastUpdateId":${lastUpdateId},"bids":[],"asks":[]}`;
}

Deno.test("verify reports, per diff stream, when no snapshot overlaps the chain: book not rebuildable from … to …", () => {
  const stream = "btcusdt@depth@100ms";
  const key = planKey({
    prefix: "binance",
    market: "spot",
    streamType: "depth@100ms",
    symbol: "BTCUSDT",
    firstRecvTs: T0,
    instanceId: "test",
    seq: 0,
  });
  const lines = [
    // Chain 1 starts at U=100 (t0). A snapshot at 50 is older than the chain
    // (50 + 1 < 100): useless. The one at 103 overlaps: rebuildable from t0+3 s.
    dataLine(T0, stream, diff(100)),
    dataLine(T0 + 1 * SECOND, stream, diff(101)),
    dataLine(T0 + 2 * SECOND, "btcusdt@depthSnapshot", snapshot(50)),
    dataLine(T0 + 2 * SECOND + 1, stream, diff(102)),
    dataLine(T0 + 3 * SECOND, "btcusdt@depthSnapshot", snapshot(102)),
    dataLine(T0 + 4 * SECOND, stream, diff(103)),
    // A break (U 200 after u 103): chain 2 has no snapshot at all.
    dataLine(T0 + 5 * SECOND, stream, diff(200)),
    dataLine(T0 + 6 * SECOND, stream, diff(201)),
  ];
  const auditor = new Auditor();
  assert.ok(auditor.beginObject(key));
  lines.forEach((line, i) => auditor.line(line, i + 1));
  auditor.endObject();
  const report = auditor.report();
  const ranges = report.streams.find((s) => s.stream === stream)?.notRebuildable;
  assert.deepEqual(ranges?.map((r) => [r.fromRecvTs - T0, r.toRecvTs - T0]), [
    [0, 3 * SECOND],
    [5 * SECOND, 6 * SECOND],
  ]);
  const text = formatReport(report, "test");
  assert.match(
    text,
    /spot\/btcusdt@depth@100ms: book not rebuildable from 2026-\S+Z to 2026-\S+Z/,
  );
  assert.equal(text.match(/book not rebuildable/g)?.length, 2);
});

Deno.test("RebuildTracker: USD-M needs lastUpdateId >= U; a snapshot ahead of the chain counts once the chain reaches it", () => {
  const usdm = new RebuildTracker("usdm");
  usdm.chainStart(0, 100);
  usdm.message(0, 100);
  usdm.snapshot(10, 99); // spot would take it (99 + 1 >= 100), USD-M does not
  usdm.snapshot(20, 150); // ahead of the chain
  usdm.message(30, 140);
  assert.deepEqual(usdm.ranges(), [{ fromRecvTs: 0, toRecvTs: 30 }], "not reached yet");
  usdm.message(40, 160);
  assert.deepEqual(usdm.ranges(), [{ fromRecvTs: 0, toRecvTs: 20 }]);

  const spot = new RebuildTracker("spot");
  spot.snapshot(5, 99); // before the first message
  spot.chainStart(10, 100);
  spot.message(10, 100);
  assert.deepEqual(
    spot.ranges(),
    [],
    "an early overlapping snapshot covers the chain from its start",
  );
});

Deno.test("RebuildTracker: a snapshot the old chain had not reached may start the chain after a break", () => {
  const spot = new RebuildTracker("spot");
  spot.chainStart(0, 100);
  spot.message(5, 104);
  spot.snapshot(10, 120); // ahead: the REST answer came before the WebSocket reached it
  spot.chainStart(20, 110); // a gap: 105..109 lost, but the snapshot holds what they did
  spot.message(20, 125);
  assert.deepEqual(spot.ranges(), [{ fromRecvTs: 0, toRecvTs: 5 }], "the new chain is whole");
  const older = new RebuildTracker("spot");
  older.chainStart(0, 100);
  older.message(5, 104);
  older.snapshot(10, 120);
  older.chainStart(20, 130); // the new chain starts past it: useless
  older.message(30, 140);
  assert.deepEqual(older.ranges(), [{ fromRecvTs: 0, toRecvTs: 5 }, {
    fromRecvTs: 20,
    toRecvTs: 30,
  }]);
});

Deno.test("RebuildTracker: after a stop, a snapshot the old chain had not reached does not start the new one", () => {
  const spot = new RebuildTracker("spot");
  spot.chainStart(0, 100);
  spot.message(5, 104);
  spot.snapshot(10, 120); // ahead of the old chain
  spot.end(); // `stopped`: a symbol listed again may start anywhere, here at 110
  spot.chainStart(20, 110);
  spot.message(30, 125);
  assert.deepEqual(spot.ranges(), [{ fromRecvTs: 0, toRecvTs: 5 }, {
    fromRecvTs: 20,
    toRecvTs: 30,
  }]);
  // Its own snapshot, stored before its first message, still counts.
  const relisted = new RebuildTracker("spot");
  relisted.chainStart(0, 100);
  relisted.message(5, 104);
  relisted.end();
  relisted.snapshot(15, 10);
  relisted.chainStart(20, 11);
  relisted.message(30, 15);
  assert.deepEqual(relisted.ranges(), [{ fromRecvTs: 0, toRecvTs: 5 }]);
});
