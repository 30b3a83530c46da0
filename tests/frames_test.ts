import assert from "node:assert/strict";
import { parseFrame } from "../src/binance/frames.ts";

const fixture = await Deno.readTextFile(
  new URL("./fixtures/mixed_trimmed_messages.ndjson", import.meta.url),
);

Deno.test("parseFrame returns the exact data substring of a combined-stream frame", () => {
  const payload = '{"lastUpdateId":160,"bids":[["0.0024","10"]],"asks":[["0.0026","100"]]}';
  const frame = parseFrame(`{"stream":"bnbbtc@depth5@100ms","data":${payload}}`);
  assert.equal(frame.kind, "data");
  if (frame.kind !== "data") return;
  assert.equal(frame.stream, "bnbbtc@depth5@100ms");
  assert.equal(frame.dataText, payload);
  assert.equal(frame.firstUpdateId, 160);
  assert.equal(frame.lastUpdateId, 160);
});

Deno.test("parseFrame keeps payload bytes that a re-encoding would change", () => {
  // 1.0 and 12345678901234567890 do not survive JSON.parse + JSON.stringify.
  const payload = '{"lastUpdateId":1,"x":1.0,"big":12345678901234567890,"bids":[],"asks":[]}';
  const frame = parseFrame(`{"stream":"a@depth5","data":${payload}}`);
  assert.ok(frame.kind === "data" && frame.dataText === payload);
});

Deno.test("parseFrame reads U/u and pu from real spot and futures diff messages", () => {
  for (const line of fixture.split("\n").filter((l) => l.includes('"depthUpdate"'))) {
    const frame = parseFrame(line);
    assert.equal(frame.kind, "data", line);
    if (frame.kind !== "data") continue;
    const data = JSON.parse(line).data;
    assert.equal(frame.firstUpdateId, data.U);
    assert.equal(frame.lastUpdateId, data.u);
    assert.equal(frame.prevUpdateId, data.pu);
    assert.deepEqual(JSON.parse(frame.dataText), data);
  }
});

Deno.test("parseFrame classifies broken and unknown frames without throwing", () => {
  const broken = parseFrame('{"stream":"btcusdt@depth@100ms","data":{"e":');
  assert.equal(broken.kind, "malformed");
  assert.equal(broken.kind === "malformed" && broken.stream, "btcusdt@depth@100ms");
  assert.equal(parseFrame("[1,2]").kind, "malformed");
  assert.equal(parseFrame('{"result":null,"id":1}').kind, "malformed");
  const shutdown = parseFrame('{"e":"serverShutdown","E":1}');
  assert.ok(shutdown.kind === "control" && shutdown.event === "serverShutdown");
});
