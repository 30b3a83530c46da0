/**
 * The main thread's work per message, without sockets or disk: the frame
 * check alone, and a frame through the recorder into its batch (the deflater
 * does nothing, the metrics are the collector's own). The frames are the
 * bench's 20,000 msg/s load: 50 partial-book streams, 16 levels (~1.1 KB).
 *
 *   deno bench -A bench/micro_frame_path.ts
 *
 * Not part of CI: a guide for choosing between implementations.
 */

import { Batcher } from "../src/batch/batcher.ts";
import type { Deflater } from "../src/batch/body.ts";
import { parseFrameFast } from "../src/binance/frames.ts";
import { Recorder } from "../src/feed/recorder.ts";
import { Metrics } from "../src/ops/metrics.ts";
import { partialDepthFeed } from "../tests/support/fake_exchange.ts";
import { BOOK_LEVELS, streamNames } from "./loads.ts";

const STREAMS = streamNames(50);
const PER_STREAM = 200;

/** Frames interleaved stream by stream, as they arrive. */
const frames: { stream: string; text: string }[] = [];
const feeds = STREAMS.map((_, i) =>
  partialDepthFeed({ rate: 400, levels: BOOK_LEVELS, startId: 40_000_000_000 + i * 1e9 })
);
for (let n = 0; n < PER_STREAM; n++) {
  STREAMS.forEach((stream, i) => {
    // Decoded from bytes, a flat string as a WebSocket hands it over (not a template's rope).
    const bytes = new TextEncoder().encode(`{"stream":"${stream}","data":${feeds[i].next(n)}}`);
    frames.push({ stream, text: new TextDecoder().decode(bytes) });
  });
}

const nothing: Deflater = { level: 5, deflateRaw: () => Promise.resolve(new Uint8Array(0)) };

Deno.bench("parseFrameFast, 10,000 frames", { group: "check" }, () => {
  for (const frame of frames) parseFrameFast(frame.text);
});

const group = { conn: 1, names: STREAMS };
let recvTs = 1_700_000_000_000_000;

Deno.bench("recorder.frame, 10,000 frames", { group: "path" }, () => {
  // A fresh recorder each time: the partial-book rule would discard a replay as repeats.
  const batcher = new Batcher({
    batchMs: 60_000,
    maxLines: 1_000_000,
    planKey: (stream, first, seq) => `${stream}/${first}_${seq}`,
    deflater: nothing,
  });
  const recorder = new Recorder({
    batcher,
    metrics: new Metrics(),
    submit: (batch) => batch.body.detach(),
    ruleFor: () => "partial",
  });
  for (const frame of frames) recorder.frame(group, frame.text, recvTs++, 1);
  batcher.sealAll();
});
