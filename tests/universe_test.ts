/**
 * The recorded set's bookkeeping (src/cli/universe.ts) without sockets: the
 * recorder and the connections are stand-ins that record what was asked of them.
 */

import assert from "node:assert/strict";
import type { Listing } from "../src/binance/selection.ts";
import { Universe } from "../src/cli/universe.ts";
import type { Connection } from "../src/feed/connection.ts";
import type { Recorder, StreamGroup } from "../src/feed/recorder.ts";

function harness(include: string[]) {
  const calls: string[] = [];
  const stopped: string[] = [];
  const recorder = {
    adopt: (group: StreamGroup) => calls.push(`adopt ${group.conn}: ${group.names.join(",")}`),
    stop: (streams: readonly string[]) => calls.push(`stop ${streams.join(",")}`),
    event: (streams: readonly string[], event: string, _ts: number, d: Record<string, unknown>) =>
      calls.push(`${event} ${streams.join(",")} ${d.from}→${d.to}`),
  } as unknown as Recorder;
  const universe = new Universe({
    rules: { include },
    streamsOf: (s) => [`${s.toLowerCase()}@depth`],
    streamsPerConnection: 2,
    recorder,
    signal: new AbortController().signal,
    nowMicros: () => 1,
    connect: (group, signal): Connection => {
      signal.addEventListener("abort", () => stopped.push(group.names.join(",")));
      return { done: Promise.resolve(), rotate() {}, retire() {}, replace() {} };
    },
  });
  return { universe, calls, stopped };
}

const trading = (...symbols: string[]): Listing[] =>
  symbols.map((symbol) => ({ symbol, status: "TRADING" }));

Deno.test("new symbols get connections of their own; a connection whose streams all left stops", () => {
  const { universe, calls, stopped } = harness(["*"]);
  universe.update(trading("A", "B", "C"));
  assert.deepEqual(calls, ["adopt 1: a@depth,b@depth", "adopt 2: c@depth"]);
  calls.length = 0;
  universe.update(trading("A", "C", "D"));
  assert.deepEqual(calls, ["stop b@depth", "adopt 3: d@depth"]);
  assert.deepEqual(stopped, [], "connection 1 still carries A");
  universe.update(trading("C", "D"));
  assert.deepEqual(stopped, ["a@depth,b@depth"]);
  assert.deepEqual(universe.symbols, ["C", "D"]);
});

Deno.test("a status change is a status event and keeps the symbol; TRADING again is a second one", () => {
  const { universe, calls } = harness(["*"]);
  universe.update(trading("A"));
  calls.length = 0;
  universe.update([{ symbol: "A", status: "BREAK" }]);
  universe.update(trading("A"));
  assert.deepEqual(calls, ["status a@depth TRADING→BREAK", "status a@depth BREAK→TRADING"]);
  assert.deepEqual(universe.streams, ["a@depth"]);
});

Deno.test("a failed exchangeInfo read keeps the current set; the next good one applies", async () => {
  const { universe, calls } = harness(["*"]);
  universe.update(trading("A", "B"));
  calls.length = 0;
  const controller = new AbortController();
  const answers: Array<() => Promise<readonly Listing[]>> = [
    () => Promise.reject(new Error("HTTP 503")),
    () => Promise.resolve(trading("A", "B", "C")),
    () => {
      controller.abort();
      return Promise.reject(new Error("aborted"));
    },
  ];
  let reads = 0;
  const seen: string[][] = [];
  await universe.follow({
    intervalMs: 1,
    signal: controller.signal,
    read: () => {
      seen.push(universe.symbols);
      return answers[reads++]();
    },
  });
  assert.equal(reads, 3);
  assert.deepEqual(seen[1], ["A", "B"], "the failure kept the set");
  assert.deepEqual(calls.filter((c) => c.startsWith("stop")), [], "the failure stopped nothing");
  assert.deepEqual(universe.symbols, ["A", "B", "C"], "the next good read applied");
});

Deno.test("a listing half as long as the last is taken for a bad answer until the next one says the same", async () => {
  const { universe, calls } = harness(["*"]);
  universe.update(trading("A", "B", "C", "D"));
  calls.length = 0;
  const controller = new AbortController();
  const answers: Array<() => readonly Listing[]> = [
    () => trading("A"), // three of four gone at once: refused
    () => trading("A", "B", "C"), // one delisted: applied
    () => trading("A"), // refused once more…
    () => trading("A", "N"), // …a different short answer: refused too
    () => trading("A", "N"), // the same again: applied (a real mass delisting, a new listing)
    () => {
      controller.abort();
      return [];
    },
  ];
  let reads = 0;
  await universe.follow({
    intervalMs: 1,
    signal: controller.signal,
    read: () => Promise.resolve(answers[reads++]()),
  });
  assert.deepEqual(calls, ["stop d@depth", "stop b@depth", "stop c@depth", "adopt 3: n@depth"]);
  assert.deepEqual(universe.symbols, ["A", "N"]);
});

Deno.test("symbols started without a listing take their status from the first one silently", () => {
  const { universe, calls } = harness(["A"]);
  universe.startUnlisted(["A"]);
  calls.length = 0;
  universe.update([{ symbol: "A", status: "BREAK" }]);
  assert.deepEqual(calls, [], "no status line for a status first learnt");
  universe.update(trading("A"));
  assert.deepEqual(calls, ["status a@depth BREAK→TRADING"]);
});
