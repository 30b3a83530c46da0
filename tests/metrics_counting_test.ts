/**
 * Messages and bytes received are counted per message in plain numbers and
 * handed to prom-client only when the metrics are read (issue 17): every
 * count shows on the next read, once, whichever way it is read.
 */

import assert from "node:assert/strict";
import { Batcher } from "../src/batch/batcher.ts";
import { Metrics } from "../src/ops/metrics.ts";
import { Recorder } from "../src/feed/recorder.ts";

const value = async (
  metric: Metrics["messagesReceived"] | Metrics["bytesReceived"],
  stream?: string,
) =>
  (await metric.get()).values
    .filter((v) => stream === undefined || v.labels.stream === stream)
    .reduce((sum, v) => sum + v.value, 0);

Deno.test("received messages and bytes show on every read, each counted once", async () => {
  const metrics = new Metrics();
  metrics.declare({ streams: ["a", "b"], sink: "local" });
  for (let i = 0; i < 5; i++) metrics.countMessage("a");
  metrics.countMessage("b");
  metrics.countBytes(1200);
  metrics.countBytes(34);
  assert.equal(await value(metrics.messagesReceived, "a"), 5);
  assert.equal(await value(metrics.messagesReceived, "b"), 1);
  assert.equal(await value(metrics.bytesReceived), 1234);
  // A second read adds nothing; counts after it add to what was there.
  assert.equal(await value(metrics.messagesReceived, "a"), 5);
  metrics.countMessage("a");
  metrics.countBytes(6);
  const text = await metrics.registry.metrics();
  assert.match(text, /^l2_messages_received_total\{stream="a"\} 6$/m);
  assert.match(text, /^l2_messages_received_total\{stream="b"\} 1$/m);
  assert.match(text, /^l2_bytes_received_total 1240$/m);
  // Direct increments (as tests and the status page's fixtures do) still add up.
  metrics.messagesReceived.inc({ stream: "b" }, 2);
  assert.equal(await value(metrics.messagesReceived, "b"), 3);
});

Deno.test("the recorder counts a frame's UTF-8 bytes, on the fast path (ASCII) and off it", async () => {
  const metrics = new Metrics();
  const batcher = new Batcher({
    batchMs: 60_000,
    maxLines: 10_000,
    planKey: (stream, firstRecvTs, seq) => `${stream}/${firstRecvTs}_${seq}`,
  });
  const recorder = new Recorder({ batcher, metrics, submit: () => {}, monotonicMs: () => 0 });
  const group = { conn: 1, names: ["btcusdt@depth20@100ms"] };
  const ascii = '{"stream":"btcusdt@depth20@100ms","data":{"lastUpdateId":1,"bids":[["1","2"]]}}';
  // "é" is 2 bytes and "€" 3 in UTF-8: 1 + 2 = 3 more bytes than UTF-16 units.
  const accented = '{"stream":"btcusdt@depth20@100ms","data":{"lastUpdateId":2,"note":"é€"}}';
  recorder.frame(group, ascii, 1);
  recorder.frame(group, accented, 2);
  const expected = new TextEncoder().encode(ascii + accented).length;
  assert.equal(expected, ascii.length + accented.length + 3);
  assert.equal(await value(metrics.bytesReceived), expected);
  assert.equal(await value(metrics.messagesReceived, "btcusdt@depth20@100ms"), 2);
});
