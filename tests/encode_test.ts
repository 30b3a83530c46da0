import assert from "node:assert/strict";
import { gunzipSync } from "node:zlib";
import {
  dataLine,
  dataLineMaxBytes,
  dataLineMiddle,
  eventLine,
  gzipLines,
  writeDataLine,
} from "../src/archive/encode.ts";

Deno.test("dataLine splices the payload text unchanged after recv_ts and stream", () => {
  const payload = '{"lastUpdateId":12345678901,"bids":[["1.10000000","0.5"]],"asks":[]}';
  const line = dataLine(1_700_000_000_123_456, "btcusdt@depth20@100ms", payload);
  assert.equal(
    line,
    `{"recv_ts":1700000000123456,"stream":"btcusdt@depth20@100ms","data":${payload}}`,
  );
  assert.deepEqual(JSON.parse(line).data, JSON.parse(payload));
});

Deno.test("writeDataLine writes exactly the UTF-8 of dataLine, for any receive time, stream and payload", () => {
  const times = [
    0,
    5,
    9,
    10,
    99,
    100,
    99_999_999,
    1e8,
    1e8 + 7,
    12_300_000_000,
    1_700_000_000_000_001,
    1_700_000_000_123_456,
    Number.MAX_SAFE_INTEGER,
    -3,
    1.5,
    2 ** 60,
  ];
  const streams = ["btcusdt@depth20@100ms", "", 'a"b\\c', "é\u2028\ud83d\ude00", "\ud800", "x\n"];
  const payloads = [
    "{}",
    '{"s":"\u00e9"}',
    '{"s":"😀","lastUpdateId":1}',
    '{"s":"\ud800"}',
    "[1, 2]",
  ];
  const expected = new TextEncoder();
  for (const recvTs of times) {
    for (const stream of streams) {
      const middle = dataLineMiddle(stream);
      for (const payload of payloads) {
        const out = new Uint8Array(dataLineMaxBytes(payload, middle)).fill(0xff);
        const written = writeDataLine(out, recvTs, middle, payload);
        const want = expected.encode(dataLine(recvTs, stream, payload));
        assert.deepEqual(out.subarray(0, written), want, `${recvTs} ${stream} ${payload}`);
      }
    }
  }
});

Deno.test("eventLine puts recv_ts, stream and event first and details cannot override them", () => {
  const line = eventLine(5, "s@depth", "disconnected", { code: 1006, stream: "x", event: "y" });
  assert.equal(line, '{"recv_ts":5,"stream":"s@depth","event":"disconnected","code":1006}');
});

Deno.test("gzipLines writes NDJSON with a newline after every line", async () => {
  const body = await gzipLines(['{"a":1}', '{"b":2}'], 6);
  assert.equal(new TextDecoder().decode(gunzipSync(body)), '{"a":1}\n{"b":2}\n');
});
