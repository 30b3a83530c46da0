/**
 * The bench's rounds (bench/rounds.ts): clients interleaved in a rotated
 * order, one row per client from its median round, and the peer factor taken
 * round by round. The bench itself is not run here (its figures mean nothing
 * on a shared CI machine); this checks how its figures are combined.
 */

import assert from "node:assert/strict";
import { combineRounds, peerFactors, roundOrder, runRounds } from "../bench/rounds.ts";
import type { ClientKind, LoadResult } from "../bench/load_run.ts";
import { HEAVY_LOAD } from "../bench/loads.ts";

function result(client: ClientKind, cpu: number, extra: Partial<LoadResult> = {}): LoadResult {
  return {
    load: HEAVY_LOAD,
    client,
    offeredPerSec: 20_000,
    keptPerSec: 20_000,
    mbPerSec: 22,
    sent: 1_000,
    kept: 1_000,
    missing: 0,
    extra: 0,
    cpuCores: cpu / 50,
    cpuSecPerMillion: cpu,
    mainThreadShare: 0.5,
    workerShare: 0.5,
    exchangeCores: 0.4,
    otherCores: 0,
    peakRssBytes: 100,
    drainMs: 1_000,
    notes: [`cpu ${cpu}`],
    ...extra,
  };
}

Deno.test("each round starts one client later than the last", () => {
  const clients = ["a", "b", "c", "d"];
  assert.deepStrictEqual(roundOrder(clients, 0), ["a", "b", "c", "d"]);
  assert.deepStrictEqual(roundOrder(clients, 1), ["b", "c", "d", "a"]);
  assert.deepStrictEqual(roundOrder(clients, 5), ["b", "c", "d", "a"]);
});

Deno.test("a client's row is its median round, with a loss in any round kept", () => {
  const row = combineRounds([
    result("collector", 22, { peakRssBytes: 150 }),
    result("collector", 18, { peakRssBytes: 170 }),
    result("collector", 20, { missing: 3, kept: 997 }),
  ]);
  assert.deepStrictEqual(row.cpuSecPerMillion, 20);
  assert.deepStrictEqual(row.roundCpu, [22, 18, 20]);
  assert.deepStrictEqual([row.sent, row.kept, row.missing, row.extra], [3_000, 2_997, 3, 0]);
  assert.deepStrictEqual(row.peakRssBytes, 170);
  assert.deepStrictEqual(row.notes[1], "cpu 20");
});

Deno.test("the peer factor pairs each round's collector with that round's best peer", () => {
  const collector = { ...result("collector", 20), roundCpu: [20, 25, 18] };
  const python = { ...result("python peer", 45), roundCpu: [45, 44, 40] };
  const node = { ...result("node peer", 47), roundCpu: [38, 50, 47] };
  const factors = peerFactors(collector, [python, node]);
  assert.deepStrictEqual(factors?.perRound.map((f) => f.toFixed(2)), ["1.90", "1.76", "2.22"]);
  assert.deepStrictEqual(factors?.median.toFixed(2), "1.90");
  // One round, or peers run a different number of times: no pairing.
  assert.deepStrictEqual(
    peerFactors({ ...collector, roundCpu: [20] }, [{ ...python, roundCpu: [45] }]),
    undefined,
  );
  assert.deepStrictEqual(peerFactors(collector, [{ ...python, roundCpu: [45, 44] }]), undefined);
});

Deno.test("runRounds runs every client once a round, interleaved", async () => {
  const calls: string[] = [];
  const rows = await runRounds(["collector", "bare"], 3, (client, round) => {
    calls.push(`${round}:${client}`);
    return Promise.resolve(result(client, client === "collector" ? 20 + round : 2));
  });
  assert.deepStrictEqual(calls, [
    "0:collector",
    "0:bare",
    "1:bare",
    "1:collector",
    "2:collector",
    "2:bare",
  ]);
  assert.deepStrictEqual(rows.map((r) => [r.client, r.roundCpu]), [["collector", [20, 21, 22]], [
    "bare",
    [
      2,
      2,
      2,
    ],
  ]]);
});
