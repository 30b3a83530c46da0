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

type Book = { bids: Map<string, string>; asks: Map<string, string> };
interface Diff {
  U: number;
  u: number;
  pu?: number;
  b: Levels;
  a: Levels;
}

function applyDiff(book: Book, d: Diff): void {
  for (const [p, q] of d.b) Number(q) === 0 ? book.bids.delete(p) : book.bids.set(p, q);
  for (const [p, q] of d.a) Number(q) === 0 ? book.asks.delete(p) : book.asks.set(p, q);
}

/** The levels within a price range, best first, as comparable text. */
function within(book: Book, range: { lowBid: number; highAsk: number }): string {
  const side = (m: Map<string, string>, keep: (p: number) => boolean, desc: boolean) =>
    [...m].filter(([p]) => keep(Number(p)))
      .sort((x, y) => desc ? Number(y[0]) - Number(x[0]) : Number(x[0]) - Number(y[0]))
      .map(([p, q]) => `${p}:${q}`).join(" ");
  return `${side(book.bids, (p) => p >= range.lowBid, true)} | ${
    side(book.asks, (p) => p <= range.highAsk, false)
  }`;
}

for (const market of ["spot", "usdm"] as const) {
  Deno.test(`${market}: the fake exchange's snapshots can fall strictly inside a diff event and are the book at their id (BINANCE.md, Keeping a book)`, async () => {
    const snapshotText = (await Deno.readTextFile(
      new URL(`${market}_snapshot_btcusdt_2024-08-08.ndjson`, FIXTURES),
    )).trim();
    const base = JSON.parse(snapshotText) as Depth;
    const payloads = await loadFixturePayloads(
      new URL(`${market}_diff_btcusdt_2024-08-08.ndjson.gz`, FIXTURES),
    );
    const path = market === "spot" ? "/api/v3/depth" : "/fapi/v1/depth";
    await using exchange = await FakeExchange.start();
    exchange.keepBook("BTCUSDT", snapshotText, market, { inside: "alternate" });
    exchange.setFeed(STREAM, replayFeed({ rate: 100, payloads }));
    const taken: Array<{ snapshot: Depth; producedBefore: number; producedAfter: number }> = [];
    for (let i = 1; i <= 6; i++) {
      await waitFor(() => exchange.producedCount(STREAM) >= 40 * i, 10_000, `${40 * i} diffs`);
      const producedBefore = exchange.producedCount(STREAM);
      const response = await fetch(`${exchange.restUrl}${path}?symbol=BTCUSDT&limit=1000`);
      const snapshot = await response.json() as Depth;
      taken.push({ snapshot, producedBefore, producedAfter: exchange.producedCount(STREAM) });
    }
    await waitFor(() => exchange.producedCount(STREAM) >= 300, 10_000, "300 diffs");
    const diffs = payloads.slice(0, 300).map((p) => JSON.parse(p) as Diff);

    // Each snapshot's straddling event, then the true book after the events around
    // it, from the capture's snapshot alone (an independent rebuild: USD-M applies
    // the event with u == its id, spot does not).
    const straddling = taken.map(({ snapshot: { lastUpdateId: L } }) =>
      diffs.findIndex((d) => d.U <= L && L < d.u)
    );
    const rangeOf = taken.map(({ snapshot }) => ({
      lowBid: Math.max(Number(snapshot.bids.at(-1)![0]), Number(base.bids.at(-1)![0])),
      highAsk: Math.min(Number(snapshot.asks.at(-1)![0]), Number(base.asks.at(-1)![0])),
    }));
    const truth: Book = { bids: new Map(base.bids), asks: new Map(base.asks) };
    /** `${k} ${i}` -> the true book after event i within snapshot k's range */
    const trueAfter = new Map<string, string>();
    diffs.forEach((d, i) => {
      if (market === "spot" ? d.u > base.lastUpdateId : d.u >= base.lastUpdateId) {
        applyDiff(truth, d);
      }
      straddling.forEach((e, k) => {
        if (i === e - 1 || i === e || i === e + 19) {
          trueAfter.set(`${k} ${i}`, within(truth, rangeOf[k]));
        }
      });
    });

    let strictlyInside = 0;
    taken.forEach(({ snapshot, producedBefore, producedAfter }, k) => {
      const L = snapshot.lastUpdateId;
      const e = straddling[k];
      assert.ok(e > 0, `snapshot ${k} at ${L} is inside no event`);
      // The documented first event: spot U <= L + 1 <= u, USD-M U <= L <= u.
      if (market === "spot") assert.ok(diffs[e].U <= L + 1 && L + 1 <= diffs[e].u);
      // "last": the straddling event was sent before the answer; "next": after it.
      if (k % 2 === 0) assert.ok(e < producedAfter, `snapshot ${k}: event ${e} not sent yet`);
      else assert.ok(e >= producedBefore, `snapshot ${k}: event ${e} was sent already`);
      // Applying the straddling event and those after it gives the true book.
      const rebuilt: Book = { bids: new Map(snapshot.bids), asks: new Map(snapshot.asks) };
      for (let i = e; i < e + 20; i++) {
        if (market === "usdm" && i > e) assert.equal(diffs[i].pu, diffs[i - 1].u);
        applyDiff(rebuilt, diffs[i]);
      }
      assert.equal(within(rebuilt, rangeOf[k]), trueAfter.get(`${k} ${e + 19}`), `snapshot ${k}`);
      // Not the book of either boundary: it stands between them.
      const own = within(
        { bids: new Map(snapshot.bids), asks: new Map(snapshot.asks) },
        rangeOf[k],
      );
      if (own !== trueAfter.get(`${k} ${e}`) && own !== trueAfter.get(`${k} ${e - 1}`)) {
        strictlyInside++;
      }
    });
    assert.ok(strictlyInside >= 4, `${strictlyInside} of 6 snapshots differ from both boundaries`);
  });
}
