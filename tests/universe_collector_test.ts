/**
 * SYMBOL=ALL against a fake exchange whose listing changes while the
 * collector runs (issue 16): new symbols are recorded within one refresh,
 * delisted ones stop with their last batch stored, a BREAK is two `status`
 * lines, and no other stream notices anything.
 */

import assert from "node:assert/strict";
import { rawData, readArchive, spawnCollector } from "./support/collector.ts";
import { FakeExchange, partialDepthFeed } from "./support/fake_exchange.ts";
import { tempDir } from "./support/temp.ts";
import { waitFor } from "./support/wait.ts";

const REFRESH_SECONDS = 1;
const name = (symbol: string) => `${symbol.toLowerCase()}@depth5`;
const payload = (stream: string, text: string) =>
  text.slice(`{"stream":"${stream}","data":`.length, -1);

Deno.test("SYMBOL=ALL follows listings, delistings and status changes without disturbing other streams", async () => {
  await using exchange = await FakeExchange.start({ market: "spot" });
  // The fake always lists three symbols of its own; this market has only ours.
  for (const s of ["BTCUSDT", "ETHUSDT", "BNBUSDT"]) exchange.delistSymbol(s);
  const first = Array.from({ length: 300 }, (_, i) => `S${String(i).padStart(3, "0")}USDT`);
  const listed = ["N1USDT", "N2USDT", "N3USDT", "N4USDT", "N5USDT"];
  const delisted = ["S000USDT", "S150USDT", "S299USDT"];
  const breaking = "S010USDT";
  first.forEach((s, i) =>
    exchange.setFeed(name(s), partialDepthFeed({ rate: 2, levels: 2, startId: 1000 * (i + 1) }))
  );
  await using tmp = await tempDir();
  await using proc = spawnCollector({
    SYMBOL: "ALL",
    DEPTH_LEVEL: "5",
    UPDATE_SPEED_MS: "1000",
    EXCHANGE_INFO_REFRESH_SECONDS: String(REFRESH_SECONDS),
    BINANCE_WS_URL: exchange.wsUrl,
    BINANCE_REST_URL: exchange.restUrl,
    DATA_DIR: tmp.path,
    BATCH_SECONDS: "600",
    METRICS_ADDR: "off",
    INSTANCE_ID: "whole-market",
  });
  const sentTo = (symbol: string) => exchange.sentCountFor(name(symbol));
  await waitFor(() => first.every((s) => sentTo(s) >= 2), 30_000, "all 300 symbols flowing");

  const changedAt = Date.now();
  listed.forEach((s, i) =>
    exchange.setFeed(
      name(s),
      partialDepthFeed({ rate: 2, levels: 2, startId: 9_000_000 * (i + 1) }),
    )
  );
  delisted.forEach((s) => exchange.delistSymbol(s));
  exchange.setSymbolStatus(breaking, "BREAK");
  await waitFor(() => listed.every((s) => sentTo(s) >= 1), 15_000, "the new symbols flowing");
  const joinedMs = Math.max(...listed.map((s) => exchange.sentFor(name(s))[0].at - changedAt));
  // One refresh, plus the time to open a connection and for the first message to fall due (500 ms).
  assert.ok(joinedMs < REFRESH_SECONDS * 1000 + 2500, `new symbols took ${joinedMs} ms`);
  await waitFor(
    () => proc.stderr().includes(`${breaking} status TRADING → BREAK`),
    10_000,
    "the BREAK to be seen",
  );
  exchange.setSymbolStatus(breaking, "TRADING");
  await waitFor(
    () => proc.stderr().includes(`${breaking} status BREAK → TRADING`),
    10_000,
    "the return to TRADING to be seen",
  );
  await waitFor(
    () => delisted.every((s) => proc.stderr().includes(`${s} left the recorded set`)),
    10_000,
    "the delistings to be seen",
  );
  // Everything the delisted symbols' stopped batches hold is stored before shutdown.
  const stoppedStoredBy = Date.now();
  await waitFor(() => listed.every((s) => sentTo(s) >= 4), 15_000, "traffic after the changes");

  const staying = [...first.filter((s) => !delisted.includes(s)), ...listed];
  const sentBefore = new Map(
    [...staying, ...delisted].map((s) => [s, exchange.sentFor(name(s)).map((f) => f.text)]),
  );
  proc.kill("SIGTERM");
  const status = await proc.status;
  assert.equal(status.code, 0, proc.stderr());

  const lines = await readArchive(`${tmp.path}/archive`);
  const byStream = Map.groupBy(lines, (l) => l.value.stream);
  assert.equal(byStream.size, 305, "300 + 5 streams recorded, nothing else");
  for (const symbol of [...staying, ...delisted]) {
    const stream = name(symbol);
    const own = byStream.get(stream) ?? [];
    const data = own.filter((l) => l.value.data !== undefined).map(rawData);
    const sent = sentBefore.get(symbol)!.map((t) => payload(stream, t));
    assert.ok(sent.length > 0, `${symbol}: nothing sent`);
    // Every message once, byte for byte, in order (messages after SIGTERM may follow).
    assert.deepEqual(
      data.slice(0, sent.length),
      sent,
      `${symbol}: archive differs from what was sent`,
    );
    assert.equal(new Set(data).size, data.length, `${symbol}: duplicates`);
    // The shutdown's own `disconnected` (cause shutdown) ends every running stream.
    const events = own
      .filter((l) => l.value.event !== undefined)
      .filter((l) => !(l.value.event === "disconnected" && l.value.cause === "shutdown"))
      .map((l) => l.value.event);
    if (delisted.includes(symbol)) {
      assert.deepEqual(data, sent, `${symbol}: a delisted stream stores exactly what was sent`);
      assert.deepEqual(events, ["connected", "stopped"], symbol);
      const last = own[own.length - 1];
      assert.equal(last.value.event, "stopped");
      assert.equal(last.value.reason, "no longer listed");
      const stored = await Deno.stat(`${tmp.path}/archive/${last.key}`);
      assert.ok(stored.mtime!.getTime() <= stoppedStoredBy, `${symbol}: sealed batch stored late`);
    } else if (symbol === breaking) {
      assert.deepEqual(events, ["connected", "status", "status"], symbol);
      const changes = own.filter((l) => l.value.event === "status").map((l) => [
        l.value.from,
        l.value.to,
      ]);
      assert.deepEqual(changes, [["TRADING", "BREAK"], ["BREAK", "TRADING"]]);
    } else {
      // No gap, no disconnect, no stale: just the one connection.
      assert.deepEqual(events, ["connected"], `${symbol}: ${events}`);
    }
  }
  // The running connections were never touched: the first two stayed up to the end.
  const firstConnections = exchange.connections.filter((c) => c.streams.includes(name("S001USDT")));
  assert.equal(firstConnections.length, 1, "S001USDT's connection was never replaced");
});
