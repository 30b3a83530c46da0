import assert from "node:assert/strict";
import {
  canonicalTerm,
  diffSelection,
  type Listing,
  matchesTerm,
  selectSymbols,
} from "../src/binance/selection.ts";
import { shardOf } from "../src/binance/shard.ts";

const trading = (...symbols: string[]): Listing[] =>
  symbols.map((symbol) => ({ symbol, status: "TRADING" }));

Deno.test("matchesTerm: names whole, * any run (none included), case-insensitive", () => {
  assert.ok(matchesTerm("BTCUSDT", "btcusdt"));
  assert.ok(!matchesTerm("BTCUSDT", "BTCUSD"));
  assert.ok(matchesTerm("BTCUSDT", "*USDT"));
  assert.ok(matchesTerm("USDT", "*USDT"), "* may match nothing");
  assert.ok(!matchesTerm("BTCUSDC", "*USDT"));
  assert.ok(matchesTerm("BTCUSDT", "btc*"));
  assert.ok(!matchesTerm("WBTCUSDT", "BTC*"));
  assert.ok(matchesTerm("ETHBTCUP", "*BTC*"));
  assert.ok(matchesTerm("BTCDOWNUSDT", "B*DOWN*T"));
  assert.ok(!matchesTerm("BT", "B*T*T"), "parts may not overlap");
  assert.ok(matchesTerm("ANYTHING", "*"));
  assert.ok(matchesTerm("币安人生USDT", "*USDT"));
  assert.ok(matchesTerm("币安人生USDT", "币安*"));
  assert.ok(matchesTerm("ÉTHUSDT", "éth*"), "non-ASCII letters with case fold too");
  assert.equal(canonicalTerm("all"), "*");
});

Deno.test("SYMBOL=*USDT SYMBOL_EXCLUDE=BTC* selects exactly the matching trading set", () => {
  const listed = [
    ...trading("BTCUSDT", "ETHUSDT", "BTCDOMUSDT", "ETHBTC", "WBTCUSDT", "币安人生USDT"),
    { symbol: "LUNAUSDT", status: "BREAK" },
    ...trading("USDTTRY", "BNBUSDT"),
  ];
  assert.deepEqual(selectSymbols(listed, { include: ["*USDT"], exclude: ["BTC*"] }), [
    "ETHUSDT",
    "WBTCUSDT",
    "币安人生USDT",
    "BNBUSDT",
  ]);
  assert.deepEqual(
    selectSymbols(listed, { include: ["*"] }),
    listed.filter((l) => l.status === "TRADING").map((l) => l.symbol),
    "ALL: every trading symbol, in exchangeInfo's order",
  );
});

Deno.test("a named symbol is selected whatever its status; a pattern takes only TRADING ones", () => {
  const listed = [{ symbol: "LUNAUSDT", status: "BREAK" }, ...trading("ETHUSDT")];
  assert.deepEqual(selectSymbols(listed, { include: ["lunausdt", "*USDT"] }), [
    "LUNAUSDT",
    "ETHUSDT",
  ]);
  assert.deepEqual(selectSymbols(listed, { include: ["*USDT"] }), ["ETHUSDT"]);
  assert.deepEqual(selectSymbols(listed, { include: ["NOPEUSDT"] }), [], "an unlisted name");
});

Deno.test("a selected symbol stays through BREAK and leaves when it is no longer listed", () => {
  const rules = { include: ["*USDT"] };
  const current = new Set(selectSymbols(trading("AUSDT", "BUSDT"), rules));
  const inBreak = [{ symbol: "AUSDT", status: "BREAK" }, ...trading("BUSDT")];
  assert.deepEqual(selectSymbols(inBreak, rules, current), ["AUSDT", "BUSDT"]);
  assert.deepEqual(selectSymbols(trading("BUSDT"), rules, current), ["BUSDT"]);
});

Deno.test("exclusion wins over inclusion, and the shard is applied last", () => {
  const listed = trading("AUSDT", "BUSDT", "CUSDT", "DUSDT", "EUSDT", "FUSDT");
  assert.deepEqual(selectSymbols(listed, { include: ["AUSDT", "*"], exclude: ["a*"] }), [
    "BUSDT",
    "CUSDT",
    "DUSDT",
    "EUSDT",
    "FUSDT",
  ]);
  const shards = [0, 1, 2].map((index) =>
    selectSymbols(listed, { include: ["*"], shard: { index, count: 3 } })
  );
  assert.deepEqual(shards.flat().sort(), listed.map((l) => l.symbol));
  for (const [index, symbols] of shards.entries()) {
    for (const symbol of symbols) assert.equal(shardOf(symbol, 3), index);
  }
});

Deno.test("diffSelection tells added, removed and status changes apart", () => {
  const before = new Map([["A", "TRADING"], ["B", "TRADING"], ["C", "TRADING"]]);
  const after = new Map([["A", "BREAK"], ["C", "TRADING"], ["D", "TRADING"]]);
  assert.deepEqual(diffSelection(before, after), {
    added: ["D"],
    removed: ["B"],
    status: [{ symbol: "A", from: "TRADING", to: "BREAK" }],
  });
});
