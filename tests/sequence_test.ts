import assert from "node:assert/strict";
import { gunzipSync } from "node:zlib";
import { continuity, type MessageIds, sequenceRuleFor } from "../src/binance/sequence.ts";

async function fixtureIds(name: string): Promise<MessageIds[]> {
  const bytes = await Deno.readFile(new URL(`./fixtures/${name}`, import.meta.url));
  const text = new TextDecoder().decode(name.endsWith(".gz") ? gunzipSync(bytes) : bytes);
  return text.split("\n").filter((l) => l !== "").map((l) => {
    const d = JSON.parse(l).data;
    return { firstUpdateId: d.U, lastUpdateId: d.u, prevUpdateId: d.pu };
  });
}

function breaks(rule: Parameters<typeof continuity>[0], messages: readonly MessageIds[]) {
  let last: number | undefined;
  const found = [];
  for (const ids of messages) {
    const verdict = continuity(rule, last, ids);
    if (verdict.kind === "gap" || verdict.kind === "duplicate") found.push(verdict);
    if (verdict.kind !== "duplicate") last = ids.lastUpdateId;
  }
  return found;
}

Deno.test("sequenceRuleFor tells diff streams per market from partial streams", () => {
  assert.equal(sequenceRuleFor("spot", "depth@100ms"), "spot-diff");
  assert.equal(sequenceRuleFor("usdm", "depth@250ms"), "usdm-diff");
  assert.equal(sequenceRuleFor("spot", "depth20@100ms"), "partial");
  assert.equal(sequenceRuleFor("usdm", "depth5@500ms"), "partial");
});

Deno.test("the real spot diff streams form unbroken U == previous u + 1 chains", async () => {
  for (
    const name of [
      "spot_diff_btcusdt_2024-08-08.ndjson.gz",
      "spot_diff_ethusdt_2024-08-08.ndjson.gz",
    ]
  ) {
    const messages = await fixtureIds(name);
    assert.ok(messages.length > 6000);
    assert.deepEqual(breaks("spot-diff", messages), [], name);
  }
});

Deno.test("the real USD-M diff stream forms an unbroken pu == previous u chain", async () => {
  const messages = await fixtureIds("usdm_diff_btcusdt_2024-08-08.ndjson.gz");
  assert.deepEqual(breaks("usdm-diff", messages), []);
  // The spot rule does not hold on futures: U skips ahead of previous u + 1.
  assert.ok(breaks("spot-diff", messages).length > 0);
});

Deno.test("a cut in a real spot chain is a gap naming the expected and received ids", async () => {
  const messages = await fixtureIds("spot_diff_btcusdt_2024-08-08.ndjson.gz");
  const cut = [...messages.slice(0, 100), ...messages.slice(103)];
  const found = breaks("spot-diff", cut);
  assert.deepEqual(found, [{
    kind: "gap",
    expected: messages[99].lastUpdateId + 1,
    received: messages[103].firstUpdateId,
  }]);
});

Deno.test("a cut in the real USD-M chain is a gap on pu", async () => {
  const messages = await fixtureIds("usdm_diff_btcusdt_2024-08-08.ndjson.gz");
  const cut = [...messages.slice(0, 50), ...messages.slice(51)];
  assert.deepEqual(breaks("usdm-diff", cut), [{
    kind: "gap",
    expected: messages[49].lastUpdateId,
    received: messages[51].prevUpdateId,
  }]);
});

Deno.test("on USD-M a pu below the previous u is a gap too: pu must equal it (BINANCE.md)", async () => {
  const messages = await fixtureIds("usdm_diff_btcusdt_2024-08-08.ndjson.gz");
  const last = messages[49].lastUpdateId;
  const next = messages[50];
  // Binance's depth frames carry pu -1 at times (tests/fixtures/mixed_trimmed_messages.ndjson).
  for (const pu of [-1, last - 1]) {
    assert.deepEqual(continuity("usdm-diff", last, { ...next, prevUpdateId: pu }), {
      kind: "gap",
      expected: last,
      received: pu,
    });
  }
  assert.deepEqual(continuity("usdm-diff", last, next), { kind: "next" });
});

Deno.test("a repeated diff message is a duplicate, not a gap", async () => {
  const messages = await fixtureIds("spot_diff_btcusdt_2024-08-08.ndjson.gz");
  const repeated = [...messages.slice(0, 10), messages[8], messages[9], ...messages.slice(10, 20)];
  const found = breaks("spot-diff", repeated);
  assert.equal(found.length, 2);
  assert.ok(found.every((f) => f.kind === "duplicate"));
});

Deno.test("partial depth: a growing or repeated lastUpdateId follows on, an older one is a duplicate", () => {
  const p = (id: number) => ({ firstUpdateId: id, lastUpdateId: id });
  assert.deepEqual(continuity("partial", undefined, p(5)), { kind: "first" });
  assert.deepEqual(continuity("partial", 5, p(90)), { kind: "next" });
  // Binance pushes the same id again while the book does not change (README, "Partial books").
  assert.deepEqual(continuity("partial", 5, p(5)), { kind: "next" });
  assert.deepEqual(continuity("partial", 5, p(4)), { kind: "duplicate", last: 5 });
});

Deno.test("a spot diff message overlapping what was kept follows on without a gap", () => {
  assert.deepEqual(
    continuity("spot-diff", 100, { firstUpdateId: 95, lastUpdateId: 110 }),
    { kind: "next" },
  );
});

Deno.test("trade and aggTrade ids must be consecutive; book ticker ids only grow", () => {
  assert.equal(sequenceRuleFor("spot", "trade"), "consecutive");
  assert.equal(sequenceRuleFor("usdm", "aggTrade"), "consecutive");
  assert.equal(sequenceRuleFor("spot", "bookTicker"), "partial");
  const one = (id: number): MessageIds => ({ firstUpdateId: id, lastUpdateId: id });
  assert.deepEqual(continuity("consecutive", 10, one(11)), { kind: "next" });
  assert.deepEqual(continuity("consecutive", 10, one(13)), {
    kind: "gap",
    expected: 11,
    received: 13,
  });
  assert.deepEqual(continuity("consecutive", 10, one(10)), { kind: "duplicate", last: 10 });
  assert.deepEqual(continuity("partial", 10, one(15)), { kind: "next" }, "ticker skips ids");
});
