import assert from "node:assert/strict";
import { FakeBook } from "./support/fake_book.ts";
import { FakeExchange, loadFixturePayloads, replayFeed } from "./support/fake_exchange.ts";
import { waitFor } from "./support/wait.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url);
const STREAM = "btcusdt@depth@100ms";

type Levels = Array<[string, string]>;
interface Depth {
  lastUpdateId: number;
  bids: Levels;
  asks: Levels;
}

async function depth(exchange: FakeExchange, limit: number): Promise<Depth> {
  const response = await fetch(`${exchange.restUrl}/api/v3/depth?symbol=BTCUSDT&limit=${limit}`);
  return await response.json();
}

Deno.test("the fake exchange's snapshots are the real snapshot plus the replayed diffs", async () => {
  const snapshotText = (await Deno.readTextFile(
    new URL("spot_snapshot_btcusdt_2024-08-08.ndjson", FIXTURES),
  )).trim();
  const base = JSON.parse(snapshotText) as Depth;
  const payloads = await loadFixturePayloads(
    new URL("spot_diff_btcusdt_2024-08-08.ndjson.gz", FIXTURES),
  );
  await using exchange = await FakeExchange.start();
  exchange.keepBook("BTCUSDT", snapshotText);

  // Before any diff is produced the snapshot is the capture's own.
  const first = await depth(exchange, 1000);
  assert.deepEqual(first, base);

  exchange.setFeed(STREAM, replayFeed({ rate: 400, payloads }));
  await waitFor(() => exchange.producedCount(STREAM) >= 200, 10_000, "200 diffs");
  const s1 = await depth(exchange, 1000);
  await waitFor(() => exchange.producedCount(STREAM) >= 600, 10_000, "600 diffs");
  const s2 = await depth(exchange, 1000);
  const produced = payloads.slice(0, exchange.producedCount(STREAM)).map((p) => JSON.parse(p));
  // Each snapshot's id is the `u` of a diff produced by then, past the capture's snapshot.
  assert.ok(s1.lastUpdateId > base.lastUpdateId);
  assert.ok(produced.some((d) => d.u === s1.lastUpdateId));
  assert.ok(s2.lastUpdateId > s1.lastUpdateId);

  // Replaying the diffs between the two ids onto the first gives the second,
  // within the first's price range (BINANCE.md "Keeping a book").
  const bids = new Map(s1.bids);
  const asks = new Map(s1.asks);
  for (const d of produced) {
    if (d.u <= s1.lastUpdateId || d.U > s2.lastUpdateId) continue;
    for (const [p, q] of d.b) Number(q) === 0 ? bids.delete(p) : bids.set(p, q);
    for (const [p, q] of d.a) Number(q) === 0 ? asks.delete(p) : asks.set(p, q);
  }
  const lowBid = Number(s1.bids.at(-1)![0]);
  const highAsk = Number(s1.asks.at(-1)![0]);
  const within = (levels: Levels, keep: (price: number) => boolean) =>
    levels.filter(([p]) => keep(Number(p)));
  const sorted = (m: Map<string, string>, desc: boolean) =>
    [...m].sort((a, b) => desc ? Number(b[0]) - Number(a[0]) : Number(a[0]) - Number(b[0]));
  const wantBids = within(sorted(bids, true), (p) => p >= lowBid);
  const gotBids = within(s2.bids, (p) => p >= lowBid);
  assert.deepEqual(gotBids.slice(0, 900), wantBids.slice(0, 900));
  assert.deepEqual(
    within(s2.asks, (p) => p <= highAsk).slice(0, 900),
    within(sorted(asks, false), (p) => p <= highAsk).slice(0, 900),
  );
  // The book really moved: the top of book differs from the capture's snapshot.
  assert.notDeepEqual([s2.bids[0], s2.asks[0]], [base.bids[0], base.asks[0]]);
  // `limit` is honoured.
  const small = await depth(exchange, 5);
  assert.equal(small.bids.length, 5);
  assert.equal(small.asks.length, 5);
});

Deno.test("a kept book refuses to make up a snapshot once the replayed diffs skip ids", () => {
  const book = new FakeBook('{"lastUpdateId":10,"bids":[["1.00","2"]],"asks":[["2.00","3"]]}');
  book.apply('{"U":9,"u":12,"b":[["1.00","0.000"]],"a":[]}');
  assert.equal(book.lastUpdateId, 12);
  assert.equal(book.snapshotText(5), '{"lastUpdateId":12,"bids":[],"asks":[["2.00","3"]]}');
  book.apply('{"U":20,"u":21,"b":[],"a":[]}');
  assert.throws(() => book.snapshotText(5), /cannot be told/);
});
