/**
 * Losses leave their mark in the archive, end to end: the collector as a
 * subprocess (the `start` task's exact permissions) against the fake
 * exchange. A full spool (S3 down) and a full local archive disk drop
 * batches; each loss is a `dropped` line in its stream's next stored batch,
 * with the right count, and `verify` explains every hole with it (exit 0).
 */

import assert from "node:assert/strict";
import { gunzipSync } from "node:zlib";
import { FakeExchange, partialDepthFeed, type SentFrame } from "./support/fake_exchange.ts";
import { readArchive, runCollector, spawnCollector } from "./support/collector.ts";
import { TestS3 } from "./support/s3.ts";
import { tempDir } from "./support/temp.ts";
import { delay, waitFor } from "./support/wait.ts";

const STREAMS = ["btcusdt@depth20@100ms", "ethusdt@depth20@100ms"];

interface StoredLine {
  readonly data?: unknown;
  readonly event?: string;
  readonly stream: string;
  readonly messages?: number;
  readonly reason?: string;
}

const payloadOf = (frame: SentFrame) =>
  JSON.stringify(JSON.parse(frame.text.slice(`{"stream":"${frame.stream}","data":`.length, -1)));

/**
 * Per stream: the messages sent before `until` that are not stored equal,
 * in number, what the stored `dropped` lines say was lost.
 */
function assertLossesMarked(
  exchange: FakeExchange,
  lines: readonly StoredLine[],
  until: number,
  reason: RegExp,
): void {
  let dropped = 0;
  for (const stream of STREAMS) {
    const stored = new Set(
      lines.filter((l) => l.stream === stream && l.data !== undefined).map((l) =>
        JSON.stringify(l.data)
      ),
    );
    const missing = exchange.sentFor(stream).filter((f) =>
      f.at < until && !stored.has(payloadOf(f))
    );
    const marks = lines.filter((l) => l.stream === stream && l.event === "dropped");
    for (const mark of marks) assert.match(mark.reason ?? "", reason);
    const marked = marks.reduce((n, l) => n + (l.messages ?? 0), 0);
    assert.equal(marked, missing.length, `${stream}: ${missing.length} lost, ${marked} marked`);
    dropped += missing.length;
  }
  assert.ok(dropped > 0, "nothing was dropped: the test did not test anything");
}

/** Runs `check`; when it fails, prints what the collector logged besides its routine failures. */
function withCollectorLog(proc: { stderr(): string }, check: () => void): void {
  try {
    check();
  } catch (error) {
    const notable = proc.stderr().split("\n").filter((line) =>
      /\[(INF|WRN|ERR)\]/.test(line) && !/Upload queue full|Store attempt failed/.test(line)
    );
    // deno-lint-ignore no-console -- what the collector said about its batches explains a failure
    console.log(notable.join("\n"));
    throw error;
  }
}

function assertVerifyExplains(result: { code: number; stdout: string; stderr: string }): void {
  assert.equal(result.code, 0, result.stdout + result.stderr);
  const report = JSON.parse(result.stdout) as {
    problems: Array<{ kind: string; explained: boolean; detail: string }>;
    streams: Array<{ stream: string; holes: number; events: Record<string, number> }>;
  };
  const holes = report.problems.filter((p) => p.kind === "hole");
  assert.ok(holes.length > 0, "verify found no hole");
  for (const hole of holes) assert.ok(hole.explained, hole.detail);
  // Which streams lose batches depends on which batch finds the spool full: at least one does.
  assert.ok(
    report.streams.some((stream) => (stream.events.dropped ?? 0) > 0),
    "no dropped line counted",
  );
  for (const stream of report.streams) {
    if (stream.holes > 0) {
      assert.ok((stream.events.dropped ?? 0) > 0, `${stream.stream}: holes but no dropped line`);
    }
  }
}

Deno.test({
  name: "spool full while S3 is down: every dropped batch is marked with its count, verify exits 0",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await FakeExchange.start();
    STREAMS.forEach((s, i) =>
      exchange.setFeed(s, partialDepthFeed({ rate: 40, startId: 1000 * (i + 1) }))
    );
    await using s3 = await TestS3.start();
    await using tmp = await tempDir();
    const env = {
      ...s3.env(),
      SYMBOL: "BTCUSDT,ETHUSDT",
      DEPTH_LEVEL: "20",
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: tmp.path,
      BATCH_SECONDS: "1",
      // Room for a few one-second batches (about 15 KB compressed each).
      SPOOL_MAX_BYTES: "60KB",
      METRICS_ADDR: "off",
      INSTANCE_ID: "holes",
    };
    await using proc = spawnCollector(env);
    await waitFor(() => exchange.openCount > 0, 15_000, "the collector to connect");
    await delay(2000);
    await s3.stop();
    await waitFor(() => /Spool full/.test(proc.stderr()), 30_000, "the spool to fill");
    await delay(2000);
    await s3.resume();
    await waitFor(
      async () => {
        const keys = await s3.keys("binance/");
        for (const key of keys.slice(-6)) {
          const text = new TextDecoder().decode(gunzipSync((await s3.get(key)).body));
          if (text.includes('"event":"dropped"')) return true;
        }
        return false;
      },
      30_000,
      "a dropped line in the bucket",
      500,
    );
    await delay(3000);
    const termAt = Date.now();
    proc.kill("SIGTERM");
    assert.equal((await proc.status).code, 0, proc.stderr());

    const lines: StoredLine[] = [];
    for (const key of await s3.keys("binance/")) {
      const text = new TextDecoder().decode(gunzipSync((await s3.get(key)).body));
      for (const line of text.split("\n")) if (line !== "") lines.push(JSON.parse(line));
    }
    withCollectorLog(proc, () => assertLossesMarked(exchange, lines, termAt, /^spool full/));
    assertVerifyExplains(await runCollector(env, { args: ["verify", "--json"] }));
  },
});

Deno.test({
  name:
    "local archive disk full: batches dropped for a full disk are marked with their count, verify exits 0",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using tmp = await tempDir();
    const archive = `${tmp.path}/archive`;
    await Deno.mkdir(archive);
    const mounted = await new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", "size=4m", "tmpfs", archive],
      stdout: "null",
      stderr: "piped",
    }).output().catch(() => undefined);
    if (!mounted?.success) {
      // deno-lint-ignore no-console -- the reason a test is skipped must be printed
      console.log("skipped: cannot mount a tmpfs for the local archive (needs root)");
      await t.step({ name: "needs a tmpfs mount", ignore: true, fn: () => {} });
      return;
    }
    try {
      await using exchange = await FakeExchange.start();
      STREAMS.forEach((s, i) =>
        exchange.setFeed(s, partialDepthFeed({ rate: 40, startId: 1000 * (i + 1) }))
      );
      const env = {
        SYMBOL: "BTCUSDT,ETHUSDT",
        DEPTH_LEVEL: "20",
        BINANCE_WS_URL: exchange.wsUrl,
        BINANCE_REST_URL: exchange.restUrl,
        DATA_DIR: tmp.path,
        BATCH_SECONDS: "1",
        // The bounds count what batches hold in memory, about a quarter second of text once the
        // journal (on another disk here) has their pieces: a small queue fills in seconds.
        UPLOAD_QUEUE_MAX_BYTES: "16KB",
        METRICS_ADDR: "off",
        INSTANCE_ID: "holes",
      };
      await using proc = spawnCollector(env);
      await waitFor(() => exchange.openCount > 0, 15_000, "the collector to connect");
      await delay(2000);
      const filler = `${archive}/filler`;
      {
        using file = await Deno.open(filler, { write: true, create: true });
        const chunk = new Uint8Array(64 * 1024);
        try {
          for (;;) await file.write(chunk);
        } catch (error) {
          if (!/space|ENOSPC/i.test((error as Error).message)) throw error;
        }
      }
      const fullAt = Date.now();
      await waitFor(() => /no spool: dropped/.test(proc.stderr()), 30_000, "a batch dropped");
      // deno-lint-ignore no-console -- how close to its bound the wait came, for a slow CI machine
      console.log(
        `first drop ${((Date.now() - fullAt) / 1000).toFixed(1)} s after the disk filled`,
      );
      await delay(2000);
      await Deno.remove(filler);
      await waitFor(
        async () =>
          (await readArchive(archive)).some((l) =>
            l.value.event === "dropped" && l.value.stream === STREAMS[1]
          ) && (await readArchive(archive)).some((l) =>
            l.value.event === "dropped" && l.value.stream === STREAMS[0]
          ),
        40_000,
        "dropped lines of both streams in the archive",
        500,
      );
      await delay(2000);
      const termAt = Date.now();
      proc.kill("SIGTERM");
      assert.equal((await proc.status).code, 0, proc.stderr());
      const lines = (await readArchive(archive)).map((l) => l.value as StoredLine);
      withCollectorLog(proc, () => assertLossesMarked(exchange, lines, termAt, /^disk full/));
      assertVerifyExplains(await runCollector(env, { args: ["verify", "--json"] }));
    } finally {
      await new Deno.Command("umount", { args: ["-l", archive] }).output();
    }
  },
});
