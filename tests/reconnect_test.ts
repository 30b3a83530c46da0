/**
 * The reconnect policy (src/feed/reconnect.ts) as pure functions: waits
 * after attempt n with an injected random draw, when a socket counts as
 * healthy, the successor's retry, and the stale watchdog driven by a
 * hand-set clock (no timers, no sleeping).
 */

import assert from "node:assert/strict";
import {
  afterPrimaryEnded,
  afterSuccessorFailed,
  backoffBound,
  backoffDelay,
  FRESH,
  isStale,
  onPrimaryEnd,
  type ReconnectState,
  retiredCause,
  type Silence,
  watchEveryMs,
  watchRound,
} from "../src/feed/reconnect.ts";

const SETTINGS = { initialMs: 1000, maxMs: 300_000, healthyAfterMs: 10_000 };
/** The largest draw `Math.random` can return: the wait is just under its bound. */
const TOP = () => 0.999999;
const HALF = () => 0.5;

Deno.test("the backoff bound doubles from initialMs and stops at maxMs", () => {
  const bounds = Array.from({ length: 11 }, (_, n) => backoffBound(n, SETTINGS));
  assert.deepEqual(bounds, [
    1000,
    2000,
    4000,
    8000,
    16_000,
    32_000,
    64_000,
    128_000,
    256_000,
    300_000,
    300_000,
  ]);
});

Deno.test("the wait is a full-jitter draw in [0, bound), whole ms", () => {
  assert.equal(backoffDelay(3, SETTINGS, () => 0), 0);
  assert.equal(backoffDelay(3, SETTINGS, HALF), 4000);
  assert.equal(backoffDelay(3, SETTINGS, TOP), 7999);
  assert.equal(backoffDelay(0, SETTINGS, () => 0.3333), 333);
});

Deno.test("each unhealthy end in a row waits up to twice as long as the one before", () => {
  let state: ReconnectState = FRESH;
  const waits: number[] = [];
  for (let i = 0; i < 4; i++) {
    const next = afterPrimaryEnded(
      state,
      { opened: true, uptimeMs: 500, cause: "server" },
      SETTINGS,
      HALF,
    );
    state = next.state;
    waits.push(next.waitMs);
  }
  assert.deepEqual(waits, [500, 1000, 2000, 4000]);
  assert.equal(state.failures, 4);
});

Deno.test("a socket up for healthyAfterMs reconnects at once and resets the failures", () => {
  const failing = { failures: 5, successorFailures: 2 };
  const healthy = afterPrimaryEnded(
    failing,
    { opened: true, uptimeMs: 10_000, cause: "server" },
    SETTINGS,
    TOP,
  );
  assert.deepEqual(healthy, { state: { failures: 0, successorFailures: 2 }, waitMs: 0 });
  const young = afterPrimaryEnded(
    failing,
    { opened: true, uptimeMs: 9_999, cause: "server" },
    SETTINGS,
    HALF,
  );
  assert.equal(young.waitMs, 16_000);
});

Deno.test("an attempt that never opened is never healthy, however long it took", () => {
  const next = afterPrimaryEnded(
    FRESH,
    { opened: false, uptimeMs: 60_000, cause: "open-timeout" },
    SETTINGS,
    HALF,
  );
  assert.equal(next.waitMs, 500);
  assert.equal(next.state.failures, 1);
});

Deno.test("a socket closed because the process was suspended reconnects at once, even a young one", () => {
  const next = afterPrimaryEnded(
    { failures: 3, successorFailures: 0 },
    { opened: true, uptimeMs: 10, cause: "suspended" },
    SETTINGS,
    TOP,
  );
  assert.deepEqual(next, { state: FRESH, waitMs: 0 });
});

Deno.test("a failed successor retries after its own backoff, never sooner than a second", () => {
  const first = afterSuccessorFailed(FRESH, SETTINGS, () => 0);
  assert.deepEqual(first, { state: { failures: 0, successorFailures: 1 }, waitMs: 1000 });
  let state = first.state;
  const waits = [];
  for (let i = 0; i < 3; i++) {
    const next = afterSuccessorFailed(state, SETTINGS, HALF);
    state = next.state;
    waits.push(next.waitMs);
  }
  assert.deepEqual(waits, [1000, 2000, 4000]);
  assert.equal(state.failures, 0, "a successor's failures leave the primary's alone");
});

Deno.test("the primary's end promotes a successor that is open or connecting, and reconnects otherwise", () => {
  assert.equal(onPrimaryEnd("open"), "promote");
  assert.equal(onPrimaryEnd("opening"), "promote");
  assert.equal(onPrimaryEnd("requested"), "reconnect");
  assert.equal(onPrimaryEnd("none"), "reconnect");
});

Deno.test("a retired primary's close says why: shutdown, suspended, else rotated", () => {
  assert.equal(retiredCause(true, "suspended"), "shutdown");
  assert.equal(retiredCause(false, "suspended"), "suspended");
  assert.equal(retiredCause(false, "rotated"), "rotated");
  assert.equal(retiredCause(false, "server"), "rotated");
});

Deno.test("the watchdog looks a quarter of staleAfterMs apart, between 50 ms and 1 s", () => {
  assert.equal(watchEveryMs(2000), 500);
  assert.equal(watchEveryMs(100), 50);
  assert.equal(watchEveryMs(60_000), 1000);
});

Deno.test("a socket silent for staleAfterMs is stale, on a hand-set clock", () => {
  const every = watchEveryMs(4000);
  let silence: Silence = { lastFrameAt: 0, watchedAt: 0 };
  let now = 0;
  const staleAt: number[] = [];
  while (now < 6000) {
    now += every;
    silence = watchRound(silence, now, every);
    if (isStale(silence, now, 4000)) staleAt.push(now);
  }
  assert.equal(staleAt[0], 4000);
  assert.equal(silence.lastFrameAt, 0, "rounds on time move nothing");
});

Deno.test("time the process did not run is not silence: a late round moves the last frame on", () => {
  const every = 1000;
  // The process was suspended for a minute between two rounds.
  const silence = watchRound({ lastFrameAt: 500, watchedAt: 1000 }, 62_000, every);
  assert.deepEqual(silence, { lastFrameAt: 60_500, watchedAt: 62_000 });
  assert.equal(isStale(silence, 62_000, 4000), false);
  assert.equal(isStale(silence, 64_500, 4000), true);
  // A round up to a second late is ordinary scheduling: the silence counts.
  const busy = watchRound({ lastFrameAt: 0, watchedAt: 1000 }, 3000, every);
  assert.equal(busy.lastFrameAt, 0);
});

Deno.test("a socket that never delivered a frame is not healthy, however long it stayed open", () => {
  // A stream name Binance acknowledges but does not publish: the socket opens and stays silent.
  const silent = afterPrimaryEnded(
    FRESH,
    { opened: true, delivered: false, uptimeMs: 30_000, cause: "stale" },
    SETTINGS,
    HALF,
  );
  assert.deepEqual([silent.state.failures, silent.waitMs], [1, 500]);
  const delivered = afterPrimaryEnded(
    FRESH,
    { opened: true, delivered: true, uptimeMs: 30_000, cause: "stale" },
    SETTINGS,
    HALF,
  );
  assert.deepEqual([delivered.state.failures, delivered.waitMs], [0, 0]);
});
