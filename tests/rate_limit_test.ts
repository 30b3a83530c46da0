import assert from "node:assert/strict";
import { AttemptLimiter } from "../src/feed/rate_limit.ts";

Deno.test("AttemptLimiter allows max attempts per window, then says how long to wait", async () => {
  let now = 0;
  const limiter = new AttemptLimiter({ max: 3, windowMs: 1000, now: () => now });
  for (let i = 0; i < 3; i++) {
    assert.equal(limiter.waitMs(), 0);
    await limiter.take();
    now += 100;
  }
  assert.equal(limiter.waitMs(), 700); // the first attempt (at 0) leaves the window at 1000
  now = 1000;
  assert.equal(limiter.waitMs(), 0);
});

Deno.test("AttemptLimiter.take returns early when its signal aborts", async () => {
  const limiter = new AttemptLimiter({ max: 1, windowMs: 60_000 });
  await limiter.take();
  const started = performance.now();
  await limiter.take(AbortSignal.timeout(50));
  assert.ok(performance.now() - started < 1000);
});
