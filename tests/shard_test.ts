import assert from "node:assert/strict";
import { inShard, parseShard, shardOf } from "../src/binance/shard.ts";

/** 1,500 distinct symbol names shaped like Binance's: base + quote. */
function marketNames(count: number): string[] {
  const quotes = ["USDT", "BTC", "ETH", "FDUSD", "TRY", "EUR"];
  const names: string[] = [];
  for (let i = 0; names.length < count; i++) {
    // Bases like AAB, ZQX, … drawn from a counter, so the set is fixed.
    const base = [i % 26, Math.floor(i / 26) % 26, Math.floor(i / 676) % 26]
      .map((n) => String.fromCharCode(65 + n)).join("");
    names.push(`${base}${quotes[i % quotes.length]}`);
  }
  return names;
}

Deno.test("shardOf is stable: the same symbol lands on the same shard every time", () => {
  // Pinned: every host of a deployment, whatever its version, must agree, so
  // a change of hash (which would move symbols between running shards) fails here.
  const names = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "币安人生USDT", "SOLUSDT", "XRPUSDT"];
  assert.deepEqual(names.map((s) => shardOf(s, 3)), [0, 0, 1, 0, 2, 2]);
  assert.deepEqual(names.map((s) => shardOf(s, 16)), [7, 0, 15, 13, 6, 2]);
  assert.equal(shardOf("btcusdt", 7), shardOf("BTCUSDT", 7), "case does not matter");
  assert.equal(shardOf("BTCUSDT", 1), 0);
});

Deno.test("shards split 1,500 symbols evenly and each symbol into exactly one shard", () => {
  const names = marketNames(1500);
  for (const count of [2, 3, 4, 8]) {
    const sizes = new Array(count).fill(0);
    for (const name of names) {
      const owners = [...Array(count).keys()].filter((index) => inShard(name, { index, count }));
      assert.equal(owners.length, 1, `${name} in ${owners.length} of ${count} shards`);
      sizes[owners[0]]++;
    }
    const fair = names.length / count;
    for (const size of sizes) {
      assert.ok(Math.abs(size - fair) < fair * 0.2, `shard sizes ${sizes} for N=${count}`);
    }
  }
});

Deno.test("going from N to N+1 shards moves about 1/(N+1) of 1,500 symbols, all to the new shard", () => {
  const names = marketNames(1500);
  for (let count = 1; count <= 8; count++) {
    let moved = 0;
    for (const name of names) {
      const before = shardOf(name, count);
      const after = shardOf(name, count + 1);
      if (before === after) continue;
      moved++;
      // Rendezvous hashing: nothing moves between the old shards.
      assert.equal(after, count, `${name} moved from ${before} to ${after}`);
    }
    const share = moved / names.length;
    // Expected 1/(N+1); 3→4 is the case: at most a third.
    assert.ok(share <= 1 / (count + 1) + 0.04, `N=${count}→${count + 1} moved ${share}`);
    assert.ok(share >= 1 / (count + 1) - 0.04, `N=${count}→${count + 1} moved ${share}`);
    if (count === 3) assert.ok(share <= 1 / 3);
  }
});

Deno.test("parseShard reads k/N and refuses what is not a shard", () => {
  assert.deepEqual(parseShard("0/3"), { index: 0, count: 3 });
  assert.deepEqual(parseShard(" 2 / 3 "), { index: 2, count: 3 });
  for (const bad of ["3/3", "0/0", "1", "a/b", "-1/3", "0/1025"]) {
    assert.equal(parseShard(bad), undefined, bad);
  }
});
