/**
 * The disk fills under a running collector, end to end: the collector as a
 * subprocess (the `start` task's exact permissions) against the fake
 * exchange, with DATA_DIR (or the local archive) on a small tmpfs that the
 * test fills. Mounting needs root; without it the tests say so and skip.
 */

import assert from "node:assert/strict";
import { gunzipSync } from "node:zlib";
import { FakeExchange, partialDepthFeed, type SentFrame } from "./support/fake_exchange.ts";
import { type CollectorProcess, spawnCollector } from "./support/collector.ts";
import { TestS3 } from "./support/s3.ts";
import { tempDir } from "./support/temp.ts";
import { delay, waitFor } from "./support/wait.ts";

const STREAMS = ["btcusdt@depth20@100ms", "ethusdt@depth20@100ms", "bnbusdt@depth20@100ms"];
/** The journal is flushed every 250 ms: a SIGKILL may take this much, no more. */
const KILL_WINDOW_MS = 1000;

/** A small tmpfs at `dir` for the test's life, or undefined (with the reason) where mounting fails. */
async function smallDisk(dir: string, size: string): Promise<AsyncDisposable | string> {
  await Deno.mkdir(dir, { recursive: true });
  const mounted = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir],
    stdout: "null",
    stderr: "piped",
  }).output().catch((error: Error) => ({
    success: false,
    stderr: new TextEncoder().encode(error.message),
  }));
  if (!mounted.success) return new TextDecoder().decode(mounted.stderr).trim() || "mount failed";
  return {
    async [Symbol.asyncDispose]() {
      await new Deno.Command("umount", { args: ["-l", dir], stdout: "null", stderr: "null" })
        .output();
    },
  };
}

/** Writes a file until the disk refuses more; returns its path. */
async function fillDisk(dir: string): Promise<string> {
  const path = `${dir}/filler`;
  using file = await Deno.open(path, { write: true, create: true });
  const chunk = new Uint8Array(64 * 1024);
  try {
    for (;;) await file.write(chunk);
  } catch (error) {
    if (!(error instanceof Error) || !/space|ENOSPC/i.test(error.message)) throw error;
  }
  return path;
}

/** The exit status, or a failure naming what the process said when it does not exit in time. */
async function exited(proc: CollectorProcess, ms: number): Promise<Deno.CommandStatus> {
  const status = await Promise.race([proc.status, delay(ms).then(() => undefined)]);
  if (!status) throw new Error(`the collector did not exit within ${ms} ms:\n${proc.stderr()}`);
  return status;
}

const payloadOf = (frame: SentFrame) =>
  frame.text.slice(`{"stream":"${frame.stream}","data":`.length, -1);

async function bucketObjects(s3: TestS3): Promise<Map<string, Uint8Array>> {
  const objects = new Map<string, Uint8Array>();
  for (const key of await s3.keys("binance/")) objects.set(key, (await s3.get(key)).body);
  return objects;
}

Deno.test({
  name:
    "disk full, then SIGKILL: every object stored before the kill stays byte-identical; only the open batch is lost",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using tmp = await tempDir();
    const dataDir = `${tmp.path}/data`;
    const disk = await smallDisk(dataDir, "8m");
    if (typeof disk === "string") {
      // deno-lint-ignore no-console -- the reason a test is skipped must be printed
      console.log(`skipped: cannot mount a tmpfs for DATA_DIR (needs root): ${disk}`);
      await t.step({ name: "needs a tmpfs mount", ignore: true, fn: () => {} });
      return;
    }
    await using _disk = disk;
    await using exchange = await FakeExchange.start();
    STREAMS.forEach((s, i) =>
      exchange.setFeed(s, partialDepthFeed({ rate: 40, startId: 1000 * (i + 1) }))
    );
    await using s3 = await TestS3.start();
    const env = {
      ...s3.env(),
      SYMBOL: "BTCUSDT,ETHUSDT,BNBUSDT",
      DEPTH_LEVEL: "20",
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: dataDir,
      BATCH_SECONDS: "5",
      METRICS_ADDR: "off",
      INSTANCE_ID: "disk-test",
    };
    await using first = spawnCollector(env);
    await waitFor(() => exchange.openCount > 0, 15_000, "the collector to connect");
    const connectedAt = Date.now();
    await delay(4000);
    const filler = await fillDisk(dataDir);
    const fullAt = Date.now();
    await delay(14_000);
    first.kill("SIGKILL");
    const killedAt = Date.now();
    await exited(first, 10_000);
    assert.match(first.stderr(), /Cannot write the crash journal/);
    const before = await bucketObjects(s3);
    assert.ok(before.size >= 6, `only ${before.size} objects stored before the kill`);

    await Deno.remove(filler);
    await using second = spawnCollector(env);
    await waitFor(() => /Recording \d+ spot streams/.test(second.stderr()), 20_000, "the restart");
    await delay(2000);
    second.kill("SIGTERM");
    assert.equal((await exited(second, 15_000)).code, 0, second.stderr());

    // Nothing that was stored is replaced: the recovered copies of batches
    // whose seal the full disk kept out of the journal are dropped instead.
    const after = await bucketObjects(s3);
    for (const [key, bytes] of before) {
      // Compared by hand: assert's diff of two large byte arrays takes minutes.
      const now = after.get(key);
      assert.ok(
        now !== undefined && now.length === bytes.length && now.every((b, i) => b === bytes[i]),
        `${key} changed after the restart (${bytes.length} → ${now?.length} bytes)`,
      );
    }
    assert.match(
      second.stderr(),
      /already stored; its copy recovered from the crash journal is dropped/,
    );

    // Every message is stored but for the batch open at the kill, received while the disk was full.
    const stored = new Set<string>();
    for (const body of after.values()) {
      for (const line of new TextDecoder().decode(gunzipSync(body)).split("\n")) {
        if (line === "") continue;
        const value = JSON.parse(line);
        if (value.data !== undefined) stored.add(JSON.stringify(value.data));
      }
    }
    for (const stream of STREAMS) {
      const sent = exchange.sentFor(stream).filter((f) => f.at < killedAt);
      assert.ok(sent.length > 500, `${stream}: only ${sent.length} sent`);
      const missing = sent.filter((f) => !stored.has(JSON.stringify(JSON.parse(payloadOf(f)))));
      for (const frame of missing) {
        const inOpenBatch = frame.at >= Math.max(fullAt, killedAt - 5_500);
        assert.ok(
          inOpenBatch || frame.at > killedAt - KILL_WINDOW_MS,
          `${stream}: a message sent ${frame.at - connectedAt} ms after connecting is missing ` +
            `(disk full at ${fullAt - connectedAt}, kill at ${killedAt - connectedAt})`,
        );
      }
    }
  },
});
