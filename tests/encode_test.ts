import assert from "node:assert/strict";
import { gunzipSync } from "node:zlib";
import { dataLine, eventLine, gzipLines } from "../src/archive/encode.ts";

Deno.test("dataLine splices the payload text unchanged after recv_ts and stream", () => {
  const payload = '{"lastUpdateId":12345678901,"bids":[["1.10000000","0.5"]],"asks":[]}';
  const line = dataLine(1_700_000_000_123_456, "btcusdt@depth20@100ms", payload);
  assert.equal(
    line,
    `{"recv_ts":1700000000123456,"stream":"btcusdt@depth20@100ms","data":${payload}}`,
  );
  assert.deepEqual(JSON.parse(line).data, JSON.parse(payload));
});

Deno.test("eventLine puts recv_ts, stream and event first and details cannot override them", () => {
  const line = eventLine(5, "s@depth", "disconnected", { code: 1006, stream: "x", event: "y" });
  assert.equal(line, '{"recv_ts":5,"stream":"s@depth","event":"disconnected","code":1006}');
});

Deno.test("gzipLines writes NDJSON with a newline after every line", async () => {
  const body = await gzipLines(['{"a":1}', '{"b":2}'], 6);
  assert.equal(new TextDecoder().decode(gunzipSync(body)), '{"a":1}\n{"b":2}\n');
});
