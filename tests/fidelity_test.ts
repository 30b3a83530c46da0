/**
 * Order-book fidelity, end to end: diff streams (two replaying real Binance
 * captures) recorded through planned rotations and server cuts, stalls and
 * serverShutdown announcements, checked against what the fake exchange
 * wrote: every update id once, unbroken chains, snapshots present; and
 * `book` across snapshots whose id falls inside a diff event.
 */

import assert from "node:assert/strict";
import {
  diffDepthFeed,
  FakeExchange,
  loadFixturePayloads,
  partialDepthFeed,
  replayFeed,
} from "./support/fake_exchange.ts";
import {
  type ArchivedLine,
  rawData,
  readArchive,
  runCollector,
  spawnCollector,
} from "./support/collector.ts";
import { tempDir } from "./support/temp.ts";
import { waitFor } from "./support/wait.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url);
const STREAMS = ["btcusdt@depth@100ms", "ethusdt@depth@100ms", "bnbusdt@depth@100ms"];
/** Generous, so a slow machine does not flake: the scenarios take 3-15 s. */
const WAIT_MS = 60_000;

async function startDiffExchange(options: { lifetimeMs?: number } = {}) {
  const exchange = await FakeExchange.start(options);
  exchange.setFeed(
    STREAMS[0],
    replayFeed({
      rate: 20,
      payloads: await loadFixturePayloads(
        new URL("spot_diff_btcusdt_2024-08-08.ndjson.gz", FIXTURES),
      ),
    }),
  );
  exchange.setFeed(
    STREAMS[1],
    replayFeed({
      rate: 20,
      payloads: await loadFixturePayloads(
        new URL("spot_diff_ethusdt_2024-08-08.ndjson.gz", FIXTURES),
      ),
    }),
  );
  exchange.setFeed(STREAMS[2], diffDepthFeed({ rate: 20, symbol: "BNBUSDT" }));
  return exchange;
}

function collectorEnv(exchange: FakeExchange, dataDir: string, extra: Record<string, string> = {}) {
  return {
    SYMBOL: "BTCUSDT,ETHUSDT,BNBUSDT",
    DEPTH_LEVEL: "full",
    BINANCE_WS_URL: exchange.wsUrl,
    BINANCE_REST_URL: exchange.restUrl,
    DATA_DIR: dataDir,
    BATCH_SECONDS: "2",
    METRICS_ADDR: "off",
    ...extra,
  };
}

/** The stream's data lines (diffs, not snapshots), in archive order. */
function diffLines(lines: readonly ArchivedLine[], stream: string): ArchivedLine[] {
  return lines.filter((l) => l.value.stream === stream && l.value.event === undefined);
}

/** Distinct frames the exchange wrote for `stream` (on any socket): rotations overlap. */
function uniqueSent(exchange: FakeExchange, stream: string): number {
  return new Set(exchange.sentFor(stream).map((f) => f.text)).size;
}

/** Whether `stream` has an event line `event` among `lines`. */
function hasEvent(lines: readonly ArchivedLine[], stream: string, event: string): boolean {
  return lines.some((l) => l.value.stream === stream && l.value.event === event);
}

/** Whether a REST snapshot was stored for the symbol of `stream`. */
function hasSnapshot(lines: readonly ArchivedLine[], stream: string): boolean {
  const snapshotStream = `${stream.split("@")[0]}@depthSnapshot`;
  return lines.some((l) => l.value.stream === snapshotStream);
}

/** Polls what the collector has stored under `dataDir` so far until `check` holds. */
function waitForArchive(
  dataDir: string,
  check: (lines: ArchivedLine[]) => boolean,
  what: string,
): Promise<void> {
  return waitFor(async () => check(await readArchive(`${dataDir}/archive`)), WAIT_MS, what, 250);
}

function chainBreaks(lines: readonly ArchivedLine[]): string[] {
  const breaks: string[] = [];
  let last: number | undefined;
  for (const line of lines) {
    const data = line.value.data as { U: number; u: number };
    if (last !== undefined && data.U !== last + 1) breaks.push(`U=${data.U} after u=${last}`);
    last = data.u;
  }
  return breaks;
}

Deno.test({
  name: "diff mode keeps one unbroken chain per stream through rotations and 8 s server cuts",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await startDiffExchange({ lifetimeMs: 8000 });
    await using tmp = await tempDir();
    await using proc = spawnCollector(collectorEnv(exchange, tmp.path, { WS_ROTATE_SECONDS: "5" }));
    await waitFor(() => exchange.openCount > 0, 15_000, "the collector to connect");
    // Enough for the checks below: 300 updates a stream, across three rotations.
    await waitFor(
      () =>
        exchange.connections.length >= 4 && STREAMS.every((s) => uniqueSent(exchange, s) >= 300),
      WAIT_MS,
      "four connections and 300 updates a stream",
    );
    await waitForArchive(
      tmp.path,
      (lines) => STREAMS.every((s) => hasSnapshot(lines, s) && hasEvent(lines, s, "rotated")),
      "a stored snapshot and rotated line a stream",
    );
    // The signal lands between rotations, not in the middle of one.
    await waitFor(() => exchange.openCount === 1, WAIT_MS, "the rotation in progress to finish");
    const sent = new Map(STREAMS.map((s) => [s, exchange.sentFor(s)]));
    proc.kill("SIGTERM");
    const status = await proc.status;
    assert.equal(status.code, 0, proc.stderr());

    const lines = await readArchive(`${tmp.path}/archive`);
    for (const stream of STREAMS) {
      const stored = diffLines(lines, stream);
      const storedPayloads = stored.map(rawData);
      // Every update the exchange wrote (on any socket) is stored, exactly once.
      const sentPayloads = [
        ...new Set(
          sent.get(stream)!.map((f) => f.text.slice(`{"stream":"${stream}","data":`.length, -1)),
        ),
      ];
      assert.ok(sentPayloads.length >= 300, `${stream}: only ${sentPayloads.length} sent`);
      const storedSet = new Set(storedPayloads);
      assert.equal(storedSet.size, storedPayloads.length, `${stream}: duplicates stored`);
      const missing = sentPayloads.filter((p) => !storedSet.has(p));
      assert.equal(missing.length, 0, `${stream}: ${missing.length} updates missing`);
      assert.deepEqual(chainBreaks(stored), [], `${stream}: chain broken`);
      const symbol = stream.split("@")[0];
      const snapshots = lines.filter((l) => l.value.stream === `${symbol}@depthSnapshot`);
      assert.ok(snapshots.length >= 1, `${stream}: no snapshot`);
      assert.ok(
        snapshots.every((s) => parseKeyStream(s.key) === "depth@100ms"),
        "snapshots are stored with their diff stream",
      );
      // Rotations happened, marked in the archive, and never as a gap.
      const events = lines.filter((l) => l.value.stream === stream && l.value.event !== undefined);
      assert.ok(events.some((e) => e.value.event === "rotated"), `${stream}: no rotated event`);
      assert.ok(!events.some((e) => e.value.event === "gap"), `${stream}: unexpected gap event`);
    }
    assert.ok(exchange.connections.length >= 4, "rotations should have opened new connections");
  },
});

function parseKeyStream(key: string): string | undefined {
  return /\/channel=([^/]+)\//.exec(key)?.[1];
}

Deno.test({
  name: "diff mode marks a stalled link with a gap event and takes fresh snapshots after it",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await startDiffExchange();
    await using tmp = await tempDir();
    await using proc = spawnCollector(
      collectorEnv(exchange, tmp.path, { STALE_AFTER_SECONDS: "2" }),
    );
    await waitFor(() => exchange.openCount > 0, 15_000, "the collector to connect");
    // Every stream has a chain going (a second of updates and its first snapshot) to break.
    const snapshotAsked = (symbol: string) =>
      exchange.restRequests.some((r) =>
        r.path === "/api/v3/depth" && new URLSearchParams(r.query).get("symbol") === symbol
      );
    await waitFor(
      () =>
        STREAMS.every((s) =>
          exchange.sentCountFor(s) >= 20 && snapshotAsked(s.split("@")[0].toUpperCase())
        ),
      WAIT_MS,
      "20 updates and a snapshot a stream",
    );
    exchange.stall(5000);
    // Stale after 2 s, then reconnects with backoff until the link is back:
    // the first update after it is a gap, and a fresh snapshot follows.
    await waitFor(() => exchange.connections.length >= 2, WAIT_MS, "a reconnect after the stall");
    await waitForArchive(
      tmp.path,
      (lines) =>
        STREAMS.every((stream) => {
          const gap = lines.find((l) => l.value.stream === stream && l.value.event === "gap");
          const symbol = stream.split("@")[0];
          return gap !== undefined && hasEvent(lines, stream, "stale") &&
            lines.some((l) =>
              l.value.stream === `${symbol}@depthSnapshot` && l.value.recv_ts > gap.value.recv_ts
            );
        }),
      "a stored stale line, gap line and later snapshot a stream",
    );
    assert.ok(exchange.connections.length >= 2, "the collector should have reconnected");
    proc.kill("SIGTERM");
    assert.equal((await proc.status).code, 0, proc.stderr());
    const lines = await readArchive(`${tmp.path}/archive`);
    for (const stream of STREAMS) {
      const own = lines.filter((l) => l.value.stream === stream);
      const gapAt = own.findIndex((l) => l.value.event === "gap");
      assert.ok(gapAt >= 0, `${stream}: no gap event`);
      const gap = own[gapAt].value;
      assert.equal(typeof gap.expected, "number");
      assert.ok((gap.received as number) > (gap.expected as number));
      assert.ok(own.some((l) => l.value.event === "stale"), `${stream}: no stale event`);
      const symbol = stream.split("@")[0];
      const snapshotsAfter = lines.filter((l) =>
        l.value.stream === `${symbol}@depthSnapshot` && l.value.recv_ts > gap.recv_ts
      );
      assert.ok(snapshotsAfter.length >= 1, `${stream}: no snapshot after the gap`);
    }
  },
});

Deno.test({
  name: "a serverShutdown announcement makes the collector rotate without a hole",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await startDiffExchange();
    await using tmp = await tempDir();
    await using proc = spawnCollector(collectorEnv(exchange, tmp.path));
    await waitFor(() => exchange.openCount > 0, 15_000, "the collector to connect");
    // Every stream is taken from the first socket (a second of updates) before the announcement.
    await waitFor(
      () => STREAMS.every((s) => exchange.sentCountFor(s) >= 20),
      WAIT_MS,
      "20 updates a stream",
    );
    exchange.sendRaw(JSON.stringify({ e: "serverShutdown", E: Date.now() }));
    await waitFor(() => exchange.connections.length >= 2, 10_000, "a successor connection");
    await waitFor(
      () => exchange.connections[0].closedAt !== undefined,
      WAIT_MS,
      "the announced connection to close",
    );
    await waitForArchive(
      tmp.path,
      (lines) =>
        STREAMS.every((s) => hasEvent(lines, s, "control") && hasEvent(lines, s, "rotated")),
      "a stored control and rotated line a stream",
    );
    const firstClosed = exchange.connections[0].closedAt !== undefined;
    proc.kill("SIGTERM");
    assert.equal((await proc.status).code, 0, proc.stderr());
    assert.ok(firstClosed, "the announced connection should have been retired");
    const lines = await readArchive(`${tmp.path}/archive`);
    for (const stream of STREAMS) {
      const events = lines.filter((l) => l.value.stream === stream && l.value.event !== undefined);
      assert.ok(events.some((e) => e.value.event === "control"), `${stream}: no control line`);
      assert.ok(events.some((e) => e.value.event === "rotated"), `${stream}: no rotated line`);
      assert.ok(!events.some((e) => e.value.event === "gap"), `${stream}: gap`);
      assert.deepEqual(chainBreaks(diffLines(lines, stream)), []);
    }
  },
});

Deno.test("the collector exits 2 listing symbols that Binance does not trade", async () => {
  await using exchange = await FakeExchange.start();
  await using tmp = await tempDir();
  const result = await runCollector({
    SYMBOL: "BTCUSDT,NOSUCHCOIN,FAKEUSDT",
    BINANCE_WS_URL: exchange.wsUrl,
    BINANCE_REST_URL: exchange.restUrl,
    DATA_DIR: tmp.path,
    METRICS_ADDR: "off",
  });
  assert.equal(result.code, 2, result.stderr);
  assert.match(result.stderr, /NOSUCHCOIN/);
  assert.match(result.stderr, /FAKEUSDT/);
  assert.doesNotMatch(result.stderr, /BTCUSDT \(/);
});

Deno.test({
  name: "USD-M futures: the /public path, pu chains, /fapi snapshots and market=usdm keys",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await FakeExchange.start({ lifetimeMs: 6000 });
    const stream = "btcusdt@depth@100ms";
    exchange.setFeed(
      stream,
      replayFeed({
        rate: 20,
        payloads: await loadFixturePayloads(
          new URL("usdm_diff_btcusdt_2024-08-08.ndjson.gz", FIXTURES),
        ),
      }),
    );
    exchange.setFeed(
      "ethusdt@depth@100ms",
      diffDepthFeed({ rate: 20, symbol: "ETHUSDT", market: "usdm" }),
    );
    await using tmp = await tempDir();
    await using proc = spawnCollector({
      SYMBOL: "BTCUSDT,ETHUSDT",
      MARKET: "usdm",
      DEPTH_LEVEL: "full",
      UPDATE_SPEED_MS: "100",
      BINANCE_WS_URL: `${exchange.wsUrl}/public`,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: tmp.path,
      BATCH_SECONDS: "1",
      WS_ROTATE_SECONDS: "4",
      METRICS_ADDR: "off",
    });
    await waitFor(() => exchange.openCount > 0, 15_000, "the collector to connect");
    // Two rotations (the chains are checked across them) and a snapshot of each stream stored.
    await waitFor(() => exchange.connections.length >= 3, WAIT_MS, "two rotations");
    await waitForArchive(
      tmp.path,
      (lines) => [stream, "ethusdt@depth@100ms"].every((s) => hasSnapshot(lines, s)),
      "a stored snapshot a stream",
    );
    // The signal lands between rotations, not in the middle of one.
    await waitFor(() => exchange.openCount === 1, WAIT_MS, "the rotation in progress to finish");
    const sent = exchange.sentFor(stream).map((f) =>
      f.text.slice(`{"stream":"${stream}","data":`.length, -1)
    );
    proc.kill("SIGTERM");
    assert.equal((await proc.status).code, 0, proc.stderr());

    assert.ok(exchange.connections.every((c) => c.url.includes("/public/stream?streams=")));
    assert.ok(
      exchange.restRequests.some((r) => r.path === "/fapi/v1/depth"),
      "no futures snapshot",
    );
    const lines = await readArchive(`${tmp.path}/archive`);
    assert.ok(lines.every((l) => l.key.includes("/market=usdm/")));
    for (const s of [stream, "ethusdt@depth@100ms"]) {
      const diffs = diffLines(lines, s);
      let last: number | undefined;
      const breaks = diffs.filter((l) => {
        const d = l.value.data as { pu: number; u: number };
        const broken = last !== undefined && d.pu !== last;
        last = d.u;
        return broken;
      });
      assert.deepEqual(breaks.map((b) => b.text.slice(0, 80)), [], `${s}: pu chain broken`);
      assert.ok(lines.some((l) => l.value.stream === `${s.split("@")[0]}@depthSnapshot`));
    }
    const stored = new Set(diffLines(lines, stream).map(rawData));
    assert.equal(sent.filter((p) => !stored.has(p)).length, 0, "futures updates missing");
  },
});

Deno.test({
  name: "partial-depth streams rotate without a hole or a repeat",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await FakeExchange.start({ lifetimeMs: 5000 });
    const streams = ["btcusdt@depth20@100ms", "ethusdt@depth20@100ms"];
    streams.forEach((s, i) =>
      exchange.setFeed(s, partialDepthFeed({ rate: 40, startId: 1000 * (i + 1) }))
    );
    await using tmp = await tempDir();
    await using proc = spawnCollector({
      SYMBOL: "BTCUSDT,ETHUSDT",
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: tmp.path,
      BATCH_SECONDS: "1",
      WS_ROTATE_SECONDS: "3",
      METRICS_ADDR: "off",
    });
    await waitFor(() => exchange.openCount > 0, 15_000, "the collector to connect");
    // Two rotations, marked in what is stored.
    await waitFor(() => exchange.connections.length >= 3, WAIT_MS, "two rotations");
    await waitForArchive(
      tmp.path,
      (lines) => streams.every((s) => hasEvent(lines, s, "rotated")),
      "a stored rotated line a stream",
    );
    // The signal lands between rotations, not in the middle of one.
    await waitFor(() => exchange.openCount === 1, WAIT_MS, "the rotation in progress to finish");
    const sent = new Map(streams.map((s) => [s, exchange.sentFor(s)]));
    proc.kill("SIGTERM");
    assert.equal((await proc.status).code, 0, proc.stderr());
    const lines = await readArchive(`${tmp.path}/archive`);
    assert.ok(exchange.connections.length >= 3, "rotations should have happened");
    for (const stream of streams) {
      const stored = diffLines(lines, stream).map(rawData);
      const sentPayloads = [
        ...new Set(
          sent.get(stream)!.map((f) => f.text.slice(`{"stream":"${stream}","data":`.length, -1)),
        ),
      ];
      assert.equal(new Set(stored).size, stored.length, `${stream}: repeats stored`);
      const storedSet = new Set(stored);
      assert.equal(sentPayloads.filter((p) => !storedSet.has(p)).length, 0, `${stream}: missing`);
      const ids = stored.map((p) => JSON.parse(p).lastUpdateId as number);
      assert.ok(ids.every((id, i) => i === 0 || id > ids[i - 1]), `${stream}: ids not increasing`);
      const events = lines.filter((l) => l.value.stream === stream && l.value.event !== undefined);
      assert.ok(events.some((e) => e.value.event === "rotated"));
      assert.ok(
        !events.some((e) => e.value.event === "disconnected" && e.value.cause !== "shutdown"),
      );
    }
  },
});

/** Top `levels` of each side as `px,qty,…`, best first: the levels part of a `book` CSV row. */
function topRow(book: { bids: Map<string, string>; asks: Map<string, string> }, levels: number) {
  const bids = [...book.bids].sort((a, b) => Number(b[0]) - Number(a[0])).slice(0, levels);
  const asks = [...book.asks].sort((a, b) => Number(a[0]) - Number(b[0])).slice(0, levels);
  return [...bids, ...asks].map(([p, q]) => `${p},${q}`).join(",");
}

/** From the fixture's own snapshot and diffs alone (spot): the top after the events whose u is in `ids`. */
function referenceTops(
  snapshotText: string,
  diffs: readonly string[],
  ids: ReadonlySet<number>,
  levels: number,
) {
  const snapshot = JSON.parse(snapshotText) as {
    lastUpdateId: number;
    bids: Array<[string, string]>;
    asks: Array<[string, string]>;
  };
  const book = { bids: new Map(snapshot.bids), asks: new Map(snapshot.asks) };
  const tops = new Map<number, string>();
  for (const text of diffs) {
    const d = JSON.parse(text) as { u: number; b: string[][]; a: string[][] };
    if (d.u <= snapshot.lastUpdateId) continue;
    for (const [p, q] of d.b) Number(q) === 0 ? book.bids.delete(p) : book.bids.set(p, q);
    for (const [p, q] of d.a) Number(q) === 0 ? book.asks.delete(p) : book.asks.set(p, q);
    if (ids.has(d.u)) tops.set(d.u, topRow(book, levels));
    if (tops.size === ids.size) break;
  }
  return tops;
}

Deno.test({
  name:
    "snapshots whose lastUpdateId falls strictly inside a diff event (before and after its frame): book rebuilds exactly from them and every later snapshot checks (BINANCE.md, Keeping a book)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using exchange = await FakeExchange.start();
    // BTCUSDT's snapshots fall inside the newest event sent, ETHUSDT's inside the next one.
    const inside = { BTCUSDT: "last", ETHUSDT: "next" } as const;
    const fixtures: Record<string, { snapshot: string; diffs: string[] }> = {};
    for (const symbol of ["BTCUSDT", "ETHUSDT"] as const) {
      const lower = symbol.toLowerCase();
      fixtures[symbol] = {
        snapshot: (await Deno.readTextFile(
          new URL(`spot_snapshot_${lower}_2024-08-08.ndjson`, FIXTURES),
        )).trim(),
        diffs: await loadFixturePayloads(
          new URL(`spot_diff_${lower}_2024-08-08.ndjson.gz`, FIXTURES),
        ),
      };
      exchange.keepBook(symbol, fixtures[symbol].snapshot, "spot", { inside: inside[symbol] });
      exchange.setFeed(
        `${lower}@depth@100ms`,
        replayFeed({ rate: 20, payloads: fixtures[symbol].diffs }),
      );
    }
    await using tmp = await tempDir();
    await using proc = spawnCollector(
      collectorEnv(exchange, tmp.path, {
        SYMBOL: "BTCUSDT,ETHUSDT",
        BATCH_SECONDS: "1",
        SNAPSHOT_INTERVAL_SECONDS: "10",
      }),
    );
    // The first snapshot a symbol and the one 10 s later, checked against the first.
    await waitForArchive(
      tmp.path,
      (lines) =>
        STREAMS.slice(0, 2).every((s) =>
          lines.filter((l) => l.value.stream === `${s.split("@")[0]}@depthSnapshot`).length >= 2
        ),
      "two stored snapshots a symbol",
    );
    proc.kill("SIGTERM");
    assert.equal((await proc.status).code, 0, proc.stderr());
    const lines = await readArchive(`${tmp.path}/archive`);

    for (const symbol of ["BTCUSDT", "ETHUSDT"] as const) {
      const stream = `${symbol.toLowerCase()}@depth@100ms`;
      const diffs = diffLines(lines, stream).map((l) => l.value.data as { U: number; u: number });
      const snapshots = lines.filter((l) =>
        l.value.stream === `${symbol.toLowerCase()}@depthSnapshot`
      )
        .map((l) => l.value.data as { lastUpdateId: number });
      for (const { lastUpdateId: L } of snapshots) {
        assert.ok(
          diffs.some((d) => d.U <= L && L < d.u),
          `${symbol}: snapshot ${L} is not strictly inside a stored diff`,
        );
      }
      const result = await runCollector({ DATA_DIR: tmp.path }, {
        args: ["book", "--symbol", symbol, "--levels", "5", "--every", "update"],
      });
      assert.equal(result.code, 0, result.stderr);
      assert.ok(result.stderr.includes(`started from snapshot ${snapshots[0].lastUpdateId}`));
      assert.ok(
        result.stderr.includes(
          `snapshot checks ${snapshots.length - 1} passed, 0 failed, 0 skipped; down 0 time`,
        ),
        result.stderr,
      );
      // Every row is the top of the true book at its update id.
      const rows = result.stdout.trimEnd().split("\n").slice(1).map((row) => row.split(","));
      const reference = referenceTops(
        fixtures[symbol].snapshot,
        fixtures[symbol].diffs,
        new Set(rows.map((cells) => Number(cells[1]))),
        5,
      );
      assert.ok(rows.length >= 150, `${symbol}: ${rows.length} rows`);
      for (const cells of rows) {
        assert.equal(cells.slice(2, -1).join(","), reference.get(Number(cells[1])), cells[1]);
      }
    }
  },
});
