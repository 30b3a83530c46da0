import assert from "node:assert/strict";
import { parseKey, planKey } from "../src/archive/keys.ts";

const parts = {
  prefix: "binance",
  market: "spot",
  streamType: "depth20@100ms",
  symbol: "BTCUSDT",
  firstRecvTs: Date.UTC(2026, 10, 28, 23, 59, 59, 999) * 1000 + 123,
  instanceId: "mac-mini.local",
  seq: 7,
};

Deno.test("planKey builds the Hive-style key with UTC date and hour of the first line", () => {
  assert.equal(
    planKey(parts),
    "binance/exchange=binance/market=spot/channel=depth20@100ms/symbol=BTCUSDT/" +
      "date=2026-11-28/hour=23/1795910399999123_mac-mini.local_000007.ndjson.gz",
  );
});

Deno.test("planKey puts a batch that starts after midnight UTC in the next day", () => {
  const key = planKey({ ...parts, firstRecvTs: Date.UTC(2026, 10, 29, 0, 0, 0, 0) * 1000 });
  assert.match(key, /\/date=2026-11-29\/hour=00\//);
});

Deno.test("planKey omits an empty prefix", () => {
  assert.ok(planKey({ ...parts, prefix: "" }).startsWith("exchange=binance/"));
});

Deno.test("parseKey inverts planKey, including instance ids with underscores", () => {
  const withUnderscore = { ...parts, instanceId: "box_1", prefix: "a/b" };
  assert.deepEqual(parseKey(planKey(withUnderscore)), withUnderscore);
});

Deno.test("parseKey rejects keys that do not follow the layout or disagree with their time", () => {
  assert.equal(parseKey("binance/other/file.ndjson.gz"), undefined);
  const key = planKey(parts).replace("hour=23", "hour=22");
  assert.equal(parseKey(key), undefined);
});
