import assert from "node:assert/strict";
import { Beat, intervalTicker, type Ticker, tickerFor } from "../src/beat.ts";

/** A timer the test fires by hand; it records whether it runs. */
function handTimer() {
  const state = { fire: undefined as (() => void) | undefined, ms: 0, starts: 0, stops: 0 };
  const timer: Ticker = {
    every(ms, fire) {
      state.fire = fire;
      state.ms = ms;
      state.starts++;
      return {
        [Symbol.dispose]: () => {
          state.fire = undefined;
          state.stops++;
        },
      };
    },
  };
  return { state, timer, fire: () => state.fire?.() };
}

Deno.test("beat: each task runs every whole number of beats, tasks due together run together", () => {
  const hand = handTimer();
  using beat = new Beat(250, hand.timer);
  const runs: string[] = [];
  beat.every(250, () => runs.push("flush"));
  beat.every(1000, () => runs.push("clock"));
  assert.equal(hand.state.starts, 1, "one timer for all tasks");
  assert.equal(hand.state.ms, 250);
  for (let i = 0; i < 8; i++) hand.fire();
  assert.deepEqual(runs, [
    "flush",
    "flush",
    "flush",
    "flush",
    "clock",
    "flush",
    "flush",
    "flush",
    "flush",
    "clock",
  ]);
});

Deno.test("beat: the timer runs only while a task is registered", () => {
  const hand = handTimer();
  using beat = new Beat(100, hand.timer);
  assert.equal(hand.state.starts, 0);
  const a = beat.every(100, () => {});
  const b = beat.every(200, () => {});
  a[Symbol.dispose]();
  assert.equal(hand.state.stops, 0, "one task is left");
  b[Symbol.dispose]();
  assert.equal(hand.state.stops, 1);
  let ran = 0;
  using _c = beat.every(100, () => ran++);
  assert.equal(hand.state.starts, 2);
  hand.fire();
  assert.equal(ran, 1);
});

Deno.test("beat: a disposed task no longer runs; disposing the beat stops its timer", () => {
  const hand = handTimer();
  const beat = new Beat(250, hand.timer);
  let a = 0;
  let b = 0;
  const first = beat.every(250, () => a++);
  beat.every(250, () => b++);
  hand.fire();
  first[Symbol.dispose]();
  hand.fire();
  assert.deepEqual([a, b], [1, 2]);
  beat[Symbol.dispose]();
  assert.equal(hand.state.stops, 1);
  assert.equal(hand.state.fire, undefined);
});

Deno.test("beat: a task that throws does not keep the others from running, and its error surfaces", () => {
  const hand = handTimer();
  using beat = new Beat(250, hand.timer);
  let after = 0;
  beat.every(250, () => {
    throw new Error("boom");
  });
  beat.every(250, () => after++);
  assert.throws(() => hand.fire(), /boom/);
  assert.equal(after, 1);
});

Deno.test("beat: periods that are not whole beats are refused", () => {
  using beat = new Beat(250, handTimer().timer);
  assert.throws(() => beat.every(200, () => {}), /multiple of the 250 ms beat, got 200/);
  assert.throws(() => beat.every(0, () => {}), RangeError);
  assert.throws(() => new Beat(0), /positive whole number/);
});

Deno.test("beat: with the real timer, a 20 ms beat runs its tasks", async () => {
  using beat = new Beat(20);
  const { promise, resolve } = Promise.withResolvers<void>();
  let fast = 0;
  let slow = 0;
  using _fast = beat.every(20, () => fast++);
  using _slow = beat.every(40, () => {
    if (++slow === 2) resolve();
  });
  await promise;
  assert.ok(fast >= 4, `fast ran ${fast} times`);
});

Deno.test("tickerFor: a beat for whole multiples of its period, one setInterval otherwise", () => {
  using beat = new Beat(250, handTimer().timer);
  assert.equal(tickerFor(1000, beat), beat);
  assert.equal(tickerFor(250, beat), beat);
  assert.equal(tickerFor(75, beat), intervalTicker);
  assert.equal(tickerFor(300, beat), intervalTicker);
  assert.equal(tickerFor(1000, undefined), intervalTicker);
  const other = handTimer().timer;
  assert.equal(tickerFor(75, other), other);
});
