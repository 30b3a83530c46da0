/**
 * Live subscriptions in src/feed/connection.ts: streams beyond the URL are
 * added one acknowledged SUBSCRIBE at a time, within the message rate, and a
 * refusal or silence closes the socket (BINANCE.md, Connection rules).
 */

import assert from "node:assert/strict";
import { type CloseInfo, runConnection } from "../src/feed/connection.ts";
import { answerTo } from "../src/feed/subscribe.ts";
import { FakeExchange, partialDepthFeed } from "./support/fake_exchange.ts";
import { waitFor } from "./support/wait.ts";

Deno.test("SUBSCRIBE batches go one at a time, each after its answer and the interval; answers are not frames", async () => {
  await using exchange = await FakeExchange.start();
  const names = ["a@depth5@100ms", "b@depth5@100ms", "c@depth5@100ms", "d@depth5@100ms"];
  names.forEach((n) => exchange.setFeed(n, partialDepthFeed({ rate: 20, levels: 1 })));
  const frames: string[] = [];
  const subscribed: string[][] = [];
  const controller = new AbortController();
  const done = runConnection({
    url: `${exchange.wsUrl}/stream?streams=${names[0]}`,
    subscribe: [[names[1], names[2]], [names[3]]],
    subscribeIntervalMs: 300,
    staleAfterMs: 10_000,
    signal: controller.signal,
    handlers: {
      onFrame: (text) => frames.push(text),
      onOpen: () => {},
      onClose: () => {},
      onSubscribed: ({ streams, role }) => {
        assert.equal(role, "initial");
        subscribed.push([...streams]);
      },
    },
  });
  try {
    await waitFor(
      () => names.every((n) => frames.some((f) => f.startsWith(`{"stream":"${n}"`))),
      5000,
      "frames of every stream",
    );
  } finally {
    controller.abort();
    await done;
  }
  assert.deepEqual(subscribed, [[names[1], names[2]], [names[3]]]);
  assert.deepEqual(exchange.subscribes.map((s) => [s.id, [...s.params]]), [
    [1, [names[1], names[2]]],
    [2, [names[3]]],
  ]);
  assert.ok(exchange.subscribes[1].at - exchange.subscribes[0].at >= 290);
  assert.ok(frames.every((f) => f.startsWith('{"stream":')), "no answer handed on as a frame");
});

/**
 * One connection with one live SUBSCRIBE to a server that answers each
 * client message with `answer` (nothing when it returns undefined), until
 * the socket closes.
 */
async function subscribeTo(
  answer: (message: { id: number }) => string | undefined,
  subscribeTimeoutMs: number,
): Promise<{ closes: CloseInfo[]; frames: string[] }> {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (event) => {
      const reply = answer(JSON.parse(event.data));
      if (reply !== undefined) socket.send(reply);
    };
    return response;
  });
  const closes: CloseInfo[] = [];
  const frames: string[] = [];
  const controller = new AbortController();
  const done = runConnection({
    url: `ws://127.0.0.1:${server.addr.port}/stream?streams=a@depth`,
    subscribe: [["b@depth"]],
    subscribeTimeoutMs,
    staleAfterMs: 60_000,
    backoffInitialMs: 5000,
    signal: controller.signal,
    handlers: {
      onFrame: (text) => frames.push(text),
      onOpen: () => {},
      onClose: (info) => closes.push(info),
    },
  });
  try {
    await waitFor(() => closes.length > 0, 5000, "the socket to close");
  } finally {
    controller.abort();
    await done;
    await server.shutdown();
  }
  return { closes, frames };
}

Deno.test("a SUBSCRIBE without an answer closes the socket as subscribe-failed", async () => {
  // A server that accepts the WebSocket and never answers anything.
  const { closes } = await subscribeTo(() => undefined, 200);
  assert.equal(closes[0].cause, "subscribe-failed");
});

Deno.test("Binance's refusal of a SUBSCRIBE is an answer: not a frame, the socket closes at once", async () => {
  // binance-spot-api-docs, web-socket-streams.md, "Error Messages".
  const refusal = '{"code":2,"msg":"Invalid request: too many parameters","id":1}';
  assert.deepEqual(answerTo(refusal, 1), { error: refusal });
  assert.equal(answerTo(refusal, 2), undefined);
  const noId = '{"code":3,"msg":"Invalid JSON: expected value at line 1 column 1"}';
  assert.deepEqual(answerTo(noId, 7), { error: noId });
  assert.deepEqual(answerTo('{"result":null,"id":4}', 4), {});
  assert.equal(answerTo('{"stream":"a@depth","data":{"code":2}}', 1), undefined);

  // Far longer than the test: the refusal, not the timeout, must close it.
  const { closes, frames } = await subscribeTo(
    ({ id }) => `{"code":2,"msg":"Invalid request: too many parameters","id":${id}}`,
    30_000,
  );
  assert.equal(closes[0].cause, "subscribe-failed");
  assert.ok(closes[0].uptimeMs < 5000, `closed after ${closes[0].uptimeMs} ms`);
  assert.deepEqual(frames, []);
});
