/**
 * The memory budget shared by open batches and the upload queue when there
 * is no spool (src/store/budget.ts), run with the real Batcher and Uploader:
 * batches sealed early (open batches over their bound) or together (their
 * age) move to the queue instead of being dropped, unless the sink has
 * fallen behind by most of the whole budget.
 */

import assert from "node:assert/strict";
import { Batcher, type SealedBatch } from "../src/batch/batcher.ts";
import { ChunkPool } from "../src/batch/chunks.ts";
import { batchBudget } from "../src/store/budget.ts";
import type { Sink } from "../src/store/sink.ts";
import { Uploader } from "../src/store/uploader.ts";
import { withPutNew } from "./support/sink.ts";

function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state * 1_664_525 + 1_013_904_223) >>> 0;
    return state / 2 ** 32;
  };
}

async function simulate(seed: number, storeChance: number) {
  const queueMax = 4096;
  const budget = batchBudget(queueMax);
  const waiting: Array<() => void> = [];
  const sink: Sink = withPutNew({
    kind: "local",
    location: "memory",
    put: () => new Promise<void>((resolve) => waiting.push(resolve)),
  });
  const drops: number[] = [];
  let borrowedSubmits = 0;
  const box: { batcher?: Batcher } = {};
  const uploader = new Uploader({
    sink,
    concurrency: 2,
    maxQueueBytes: queueMax,
    borrowable: () => budget.lendable(box.batcher?.openHeldBytes ?? 0),
    onSettled: (_batch, how) => {
      if (how === "dropped") drops.push(uploader.borrowedBytes);
    },
  });
  const batcher = box.batcher = new Batcher({
    batchMs: 400,
    maxLines: 10_000,
    maxOpenBytes: () => budget.openBound(uploader.borrowedBytes),
    planKey: (stream, _first, seq) => `${stream}/${seq}`,
    pool: new ChunkPool({ chunkSize: 256 }), // a short batch takes more memory than its text
  });
  const submit = (batches: readonly SealedBatch[]) => {
    for (const batch of batches) {
      if (uploader.borrowedBytes > 0) borrowedSubmits++;
      uploader.submit(batch);
    }
  };
  const next = random(seed);
  for (let step = 0; step < 6000; step++) {
    const stream = `s${Math.floor(next() * 60)}`;
    const text = "x".repeat(1 + Math.floor(next() * 150));
    const full = batcher.add(stream, { text, recvTs: step, isData: true }, step);
    if (full) submit([full]);
    submit(batcher.sealOverflow());
    submit(batcher.sealDue(step));
    if (next() < storeChance) waiting.shift()?.();
    // Let a stored batch settle and the queue move on.
    for (let i = 0; i < 20; i++) await Promise.resolve();
  }
  submit(batcher.sealAll());
  while (waiting.length > 0 || uploader.pending > 0) {
    waiting.shift()?.();
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  assert.deepEqual(await uploader.flush(AbortSignal.timeout(1000)), []);
  return { drops, borrowedSubmits, queueMax };
}

Deno.test("with no spool, batches sealed early, by age or at shutdown are not dropped while the sink keeps up", async () => {
  for (const seed of [1, 2, 3, 4, 5]) {
    const { drops, borrowedSubmits } = await simulate(seed, 0.5);
    assert.ok(
      borrowedSubmits > 0,
      `seed ${seed}: the queue never borrowed; the test tests nothing`,
    );
    assert.deepEqual(drops, [], `seed ${seed}`);
  }
});

Deno.test("with no spool, memory stays bounded when the sink falls far behind: then batches are dropped", async () => {
  const { drops, queueMax } = await simulate(9, 0.02);
  assert.ok(drops.length > 0, "a sink that is far behind must cost batches, not memory");
  // Drops start only once the queue borrowed most of the open batches' budget.
  for (const borrowed of drops) {
    assert.ok(borrowed > 2 * queueMax, `dropped at ${borrowed} borrowed`);
  }
});
