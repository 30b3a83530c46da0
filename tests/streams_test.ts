import assert from "node:assert/strict";
import {
  combinedStreamUrl,
  depthStreams,
  groupStreams,
  parseStreamName,
} from "../src/binance/streams.ts";

Deno.test("depthStreams names partial-book streams from DEPTH_LEVEL and UPDATE_SPEED_MS", () => {
  const streams = depthStreams(["BTCUSDT", "ETHUSDT"], { depthLevel: 20, updateSpeedMs: 100 });
  assert.deepEqual(streams.map((s) => s.name), ["btcusdt@depth20@100ms", "ethusdt@depth20@100ms"]);
  assert.equal(streams[0].type, "depth20@100ms");
  assert.equal(streams[0].symbol, "BTCUSDT");
});

Deno.test("depthStreams names the diff stream in full mode", () => {
  const [s] = depthStreams(["BNBUSDT"], { depthLevel: "full", updateSpeedMs: 1000 });
  assert.equal(s.name, "bnbusdt@depth@1000ms");
  assert.equal(s.type, "depth@1000ms");
});

Deno.test("parseStreamName splits symbol and type and rejects names without both", () => {
  assert.deepEqual(parseStreamName("ethusdt_210625@depth@100ms"), {
    name: "ethusdt_210625@depth@100ms",
    symbol: "ETHUSDT_210625",
    type: "depth@100ms",
  });
  assert.equal(parseStreamName("nostream"), undefined);
  assert.equal(parseStreamName("@depth"), undefined);
});

Deno.test("combinedStreamUrl joins streams under the base URL's /stream path", () => {
  assert.equal(
    combinedStreamUrl("wss://fstream.binance.com/public/", ["a@depth", "b@depth"]),
    "wss://fstream.binance.com/public/stream?streams=a@depth/b@depth",
  );
});

Deno.test("groupStreams spreads streams over connections of at most N", () => {
  const groups = groupStreams([1, 2, 3, 4, 5], 2);
  assert.deepEqual(groups, [[1, 2], [3, 4], [5]]);
  assert.deepEqual(groupStreams([], 2), []);
});
