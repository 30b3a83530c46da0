/**
 * Tests for the fake Binance exchange in tests/support/fake_exchange.ts: other
 * integration tests trust its `sent` record as ground truth, so it must be exact.
 */

import assert from "node:assert/strict";
import {
  diffDepthFeed,
  FakeExchange,
  type FakeStreamFeed,
  loadFixtureMessages,
  loadFixturePayloads,
  partialDepthFeed,
  replayFeed,
} from "./support/fake_exchange.ts";
import { delay, waitFor } from "./support/wait.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url);

/** A WebSocket client that keeps every text frame it got and how it ended. */
class TestClient implements AsyncDisposable {
  readonly messages: string[] = [];
  readonly closed: Promise<CloseEvent>;
  readonly #socket: WebSocket;

  private constructor(socket: WebSocket) {
    this.#socket = socket;
    socket.onmessage = (event) => this.messages.push(event.data as string);
    this.closed = new Promise((resolve) => socket.addEventListener("close", resolve));
  }

  static async connect(url: string): Promise<TestClient> {
    const socket = new WebSocket(url);
    const client = new TestClient(socket);
    await new Promise<void>((resolve, reject) => {
      socket.onopen = () => resolve();
      socket.onerror = () => reject(new Error(`could not connect to ${url}`));
    });
    return client;
  }

  get isOpen(): boolean {
    return this.#socket.readyState === WebSocket.OPEN;
  }

  /** Waits until at least `count` frames arrived. */
  async waitFor(count: number, timeoutMs = 2000): Promise<void> {
    await waitFor(() => this.messages.length >= count, timeoutMs, `${count} messages`);
  }

  async close(): Promise<void> {
    if (this.#socket.readyState !== WebSocket.CLOSED) this.#socket.close();
    await this.closed;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Polls instead of racing a long timer, so no timer outlives a test. */
interface DiffPayload {
  e: string;
  E: number;
  T?: number;
  s: string;
  U: number;
  u: number;
  pu?: number;
  b: [string, string][];
  a: [string, string][];
}

interface BookPayload {
  lastUpdateId: number;
  E?: number;
  T?: number;
  bids: [string, string][];
  asks: [string, string][];
}

/** The `data` part of a combined frame, sliced (not re-encoded). */
function dataOf(frame: string, stream: string): string {
  const head = `{"stream":"${stream}","data":`;
  assert.ok(frame.startsWith(head) && frame.endsWith("}"), `not a combined frame: ${frame}`);
  return frame.slice(head.length, -1);
}

async function getJson(url: string): Promise<{ response: Response; body: unknown }> {
  const response = await fetch(url);
  return { response, body: await response.json() };
}

Deno.test("fake exchange sends combined frames with the exact Binance shape and records them", async () => {
  await using ex = await FakeExchange.start();
  const stream = "btcusdt@depth20@100ms";
  ex.setFeed(stream, partialDepthFeed({ rate: 50 }));
  const client = await TestClient.connect(`${ex.wsUrl}/stream?streams=${stream}`);
  await client.waitFor(5);
  await client.close();
  await waitFor(() => ex.connections[0]?.closedAt !== undefined, 1000, "close bookkeeping");

  let previousId = -1;
  for (const frame of client.messages) {
    assert.match(
      frame,
      /^\{"stream":"btcusdt@depth20@100ms","data":\{"lastUpdateId":\d+,"bids":\[\["/,
    );
    const data = JSON.parse(dataOf(frame, stream)) as BookPayload;
    assert.ok(data.lastUpdateId > previousId, "lastUpdateId strictly increases");
    previousId = data.lastUpdateId;
    assert.equal(data.bids.length, 20);
    assert.equal(data.asks.length, 20);
    for (const [price, qty] of [...data.bids, ...data.asks]) {
      assert.match(price, /^\d+\.\d{8}$/);
      assert.match(qty, /^\d+\.\d{8}$/);
    }
    assert.ok(Number(data.bids[0][0]) < Number(data.asks[0][0]), "book is not crossed");
  }
  const size = dataOf(client.messages[0], stream).length;
  assert.ok(size > 900 && size < 1600, `about 1 KB at 20 levels, got ${size}`);

  // What the client got is exactly what was recorded for it, in order.
  const [connection] = ex.connections;
  const recorded = ex.sent.filter((frame) => frame.connId === connection.id);
  assert.deepEqual(recorded.slice(0, client.messages.length).map((f) => f.text), client.messages);
  assert.ok(recorded.every((f) => f.stream === stream && f.at >= connection.openedAt));
  assert.deepEqual(ex.sentFor(stream), ex.sent);
  assert.equal(connection.url, `${ex.wsUrl}/stream?streams=${stream}`);
  assert.deepEqual(connection.streams, [stream]);
  assert.equal(connection.closedBy, "peer");
  assert.equal(ex.openCount, 0);
});

Deno.test("fake exchange broadcasts one stream to every subscribed connection", async () => {
  await using ex = await FakeExchange.start();
  ex.setFeed("btcusdt@depth@100ms", diffDepthFeed({ rate: 100, symbol: "BTCUSDT" }));
  ex.setFeed("ethusdt@depth@100ms", diffDepthFeed({ rate: 100, symbol: "ETHUSDT" }));
  const url = `${ex.wsUrl}/stream?streams=btcusdt@depth@100ms/nofeed@depth@100ms`;
  await using early = await TestClient.connect(url);
  await early.waitFor(10);
  await using late = await TestClient.connect(url);
  await late.waitFor(10);
  await using other = await TestClient.connect(`${ex.wsUrl}/stream?streams=ethusdt@depth@100ms`);
  await other.waitFor(3);
  assert.equal(ex.openCount, 3);

  // The late joiner starts at the current point and then sees the same frames.
  const firstLate = early.messages.indexOf(late.messages[0]);
  assert.ok(firstLate >= 9, "late joiner starts where the stream is now, not at message 0");
  const shared = Math.min(early.messages.length - firstLate, late.messages.length);
  assert.deepEqual(
    late.messages.slice(0, shared),
    early.messages.slice(firstLate, firstLate + shared),
  );
  // A stream without a feed sends nothing; another stream does not leak in.
  assert.ok(early.messages.every((m) => m.startsWith('{"stream":"btcusdt@depth@100ms"')));
  assert.ok(other.messages.every((m) => m.startsWith('{"stream":"ethusdt@depth@100ms"')));
  assert.deepEqual(ex.sentFor("nofeed@depth@100ms"), []);
  assert.deepEqual(ex.connections.map((c) => c.id), [1, 2, 3]);
});

Deno.test("fake exchange raw endpoint sends the payload alone, and the futures path is combined", async () => {
  await using ex = await FakeExchange.start();
  ex.setFeed(
    "btcusdt@depth@100ms",
    diffDepthFeed({ rate: 100, symbol: "btcusdt", market: "usdm" }),
  );
  await using raw = await TestClient.connect(`${ex.wsUrl}/ws/btcusdt@depth@100ms`);
  await using futures = await TestClient.connect(
    `${ex.wsUrl}/public/stream?streams=btcusdt@depth@100ms`,
  );
  await raw.waitFor(3);
  await futures.waitFor(3);
  for (const frame of raw.messages) {
    assert.match(
      frame,
      /^\{"e":"depthUpdate","E":\d+,"T":\d+,"s":"BTCUSDT","U":\d+,"u":\d+,"pu":\d+,"b":/,
    );
  }
  assert.ok(
    futures.messages.every((m) => m.startsWith('{"stream":"btcusdt@depth@100ms","data":{"e"')),
  );
  const rawConn = ex.connections.find((c) => c.url.includes("/ws/"));
  assert.ok(rawConn);
  assert.deepEqual(rawConn.streams, ["btcusdt@depth@100ms"]);
  const rawSent = ex.sent.filter((f) => f.connId === rawConn.id).map((f) => f.text);
  assert.deepEqual(rawSent.slice(0, raw.messages.length), raw.messages);
});

Deno.test("fake exchange keeps each stream's rate, even at 400 messages a second", async () => {
  await using ex = await FakeExchange.start();
  ex.setFeed("btcusdt@depth@100ms", diffDepthFeed({ rate: 400, symbol: "BTCUSDT" }));
  ex.setFeed("ethusdt@depth20@100ms", partialDepthFeed({ rate: 10 }));
  await using client = await TestClient.connect(
    `${ex.wsUrl}/stream?streams=btcusdt@depth@100ms/ethusdt@depth20@100ms`,
  );
  const before = client.messages.length;
  const started = performance.now();
  await delay(2000);
  const seconds = (performance.now() - started) / 1000;
  const fast =
    client.messages.slice(before).filter((m) => m.includes('"btcusdt@depth@100ms"')).length;
  const slow = client.messages.slice(before).filter((m) => m.includes('"ethusdt@')).length;
  // Two seconds and wide bounds: a loaded machine delays timers, and the feed
  // catches up on its schedule; a wrong rate (×2, ÷2) is still far outside.
  assert.ok(fast > 250 * seconds && fast < 520 * seconds, `~400/s, got ${fast} in ${seconds}s`);
  assert.ok(slow >= 12 && slow <= 28, `~10/s, got ${slow} in ${seconds}s`);
  assert.equal(ex.sentCount, ex.sent.length);
  assert.equal(ex.sentCountFor("btcusdt@depth@100ms"), ex.sentFor("btcusdt@depth@100ms").length);
});

Deno.test("fake exchange dropAll cuts every connection without a close frame", async () => {
  await using ex = await FakeExchange.start();
  ex.setFeed("btcusdt@depth@100ms", diffDepthFeed({ rate: 50, symbol: "BTCUSDT" }));
  const url = `${ex.wsUrl}/stream?streams=btcusdt@depth@100ms`;
  const clients = [await TestClient.connect(url), await TestClient.connect(url)];
  await clients[1].waitFor(2);
  // Frames still in flight when the drop comes.
  for (let i = 0; i < 20; i++) assert.equal(ex.sendRaw(`{"burst":${i}}`), 2);
  ex.dropAll();
  assert.equal(ex.openCount, 0, "nothing is sent after the drop");
  for (const [i, client] of clients.entries()) {
    const event = await client.closed;
    // What the fake counts as sent is what a client got: frames written just
    // before the drop are not lost in the relay.
    const sent = ex.sent.filter((frame) => frame.connId === ex.connections[i].id);
    assert.deepEqual(client.messages, sent.map((frame) => frame.text));
    // No close frame: the spec says 1006; Deno 2.9's client reports 0 after an
    // "Unexpected EOF" error event. Either way, not a clean close.
    assert.ok([0, 1006].includes(event.code), `abnormal close code, got ${event.code}`);
    assert.equal(event.wasClean, false);
  }
  assert.deepEqual(ex.connections.map((c) => c.closedBy), ["drop", "drop"]);

  // The exchange itself stays up: a reconnect works.
  await using again = await TestClient.connect(url);
  await again.waitFor(2);
  assert.equal(ex.openCount, 1);
});

Deno.test("fake exchange stall sends nothing for its duration, keeps sockets open, then resumes", async () => {
  await using ex = await FakeExchange.start();
  const stream = "btcusdt@depth@100ms";
  ex.setFeed(stream, diffDepthFeed({ rate: 100, symbol: "BTCUSDT" }));
  await using client = await TestClient.connect(`${ex.wsUrl}/stream?streams=${stream}`);
  await client.waitFor(3);
  ex.stall(500);
  const atStall = client.messages.length;
  const recordedAtStall = ex.sent.length;
  assert.equal(ex.sendRaw('{"e":"ping"}'), 0, "sendRaw is silent too while stalled");
  await delay(400);
  // At most one frame already in flight when stall() was called.
  assert.ok(client.messages.length <= atStall + 1, "nothing arrives during a stall");
  assert.equal(ex.sent.length, recordedAtStall, "skipped frames are not recorded");
  assert.ok(client.isOpen);
  assert.equal(ex.openCount, 1);

  await client.waitFor(atStall + 3, 1500);
  // Messages due during the stall were skipped, not queued: the ids jump.
  const ids = client.messages.map((m) => JSON.parse(dataOf(m, stream)) as DiffPayload);
  const gaps = ids.slice(1).filter((d, i) => d.U !== ids[i].u + 1);
  assert.equal(gaps.length, 1, "exactly one gap, where the stall was");
  assert.ok(
    ex.producedCount(stream) > ex.sentCount + 30,
    "the clock kept running during the stall",
  );
});

Deno.test("fake exchange lifetimeMs closes each connection that long after it opened", async () => {
  await using ex = await FakeExchange.start({ lifetimeMs: 300 });
  await using client = await TestClient.connect(`${ex.wsUrl}/stream?streams=btcusdt@depth@100ms`);
  const opened = performance.now();
  const event = await client.closed;
  const lived = performance.now() - opened;
  assert.ok(lived > 250 && lived < 3000, `closed after ${lived} ms`);
  assert.equal(event.code, 1000, "a server-initiated clean close");
  assert.equal(ex.connections[0].closedBy, "lifetime");
});

Deno.test("fake exchange sendRaw writes one arbitrary frame to every open socket", async () => {
  await using ex = await FakeExchange.start();
  await using a = await TestClient.connect(`${ex.wsUrl}/stream?streams=btcusdt@depth@100ms`);
  await using b = await TestClient.connect(`${ex.wsUrl}/ws/ethusdt@depth@100ms`);
  const shutdown = '{"e":"serverShutdown","E":1723161255208}';
  assert.equal(ex.sendRaw(shutdown), 2);
  assert.equal(ex.sendRaw("{not json"), 2);
  await a.waitFor(2);
  await b.waitFor(2);
  assert.deepEqual(a.messages, [shutdown, "{not json"]);
  assert.deepEqual(b.messages, [shutdown, "{not json"]);
  assert.deepEqual(ex.sentFor("").map((f) => [f.connId, f.text]), [
    [1, shutdown],
    [2, shutdown],
    [1, "{not json"],
    [2, "{not json"],
  ]);
});

Deno.test("fake exchange diffDepthFeed chains ids: spot U == previous u + 1, usdm pu == previous u", () => {
  const spot = diffDepthFeed({ rate: 1, symbol: "btcusdt", startId: 100 });
  const usdm = diffDepthFeed({ rate: 1, symbol: "BTCUSDT", market: "usdm", startId: 100 });
  const spotEvents = Array.from({ length: 300 }, (_, n) => spot.next(n));
  const usdmEvents = Array.from({ length: 300 }, (_, n) => usdm.next(n));
  for (const text of spotEvents) {
    assert.match(
      text,
      /^\{"e":"depthUpdate","E":\d+,"s":"BTCUSDT","U":\d+,"u":\d+,"b":\[.*\],"a":\[.*\]\}$/,
    );
  }
  const s = spotEvents.map((t) => JSON.parse(t) as DiffPayload);
  assert.equal(s[0].U, 100);
  for (let i = 1; i < s.length; i++) {
    assert.equal(s[i].U, s[i - 1].u + 1);
    assert.ok(s[i].u >= s[i].U);
  }
  assert.ok(s.some((d) => d.b.some(([, qty]) => qty === "0.00000000")), "some levels are removals");

  const f = usdmEvents.map((t) => JSON.parse(t) as DiffPayload);
  assert.equal(f[0].pu, 99);
  for (let i = 1; i < f.length; i++) {
    assert.equal(f[i].pu, f[i - 1].u);
    assert.ok(f[i].U > f[i].pu! && f[i].u >= f[i].U);
    assert.ok(typeof f[i].T === "number");
    assert.match(f[i].b[0][0], /^\d+\.\d{2}$/);
  }
  assert.ok(f.some((d, i) => i > 0 && d.U !== f[i - 1].u + 1), "futures U may skip ahead");
  // Pure in n: asking again gives the same ids.
  assert.equal((JSON.parse(spot.next(7)) as DiffPayload).U, s[7].U);
});

Deno.test("fake exchange serves ping, exchangeInfo and a depth snapshot in line with the diff stream", async () => {
  await using ex = await FakeExchange.start();
  const stream = "btcusdt@depth@100ms";
  ex.setFeed(stream, diffDepthFeed({ rate: 100, symbol: "BTCUSDT" }));
  ex.setFeed("solusdt@depth20@100ms", partialDepthFeed({ rate: 1 }));
  await using client = await TestClient.connect(`${ex.wsUrl}/stream?streams=${stream}`);
  await client.waitFor(2);

  for (const path of ["/api/v3/ping", "/fapi/v1/ping"]) {
    const { response, body } = await getJson(`${ex.restUrl}${path}`);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "application/json");
    assert.deepEqual(body, {});
  }

  const depth = await fetch(`${ex.restUrl}/api/v3/depth?symbol=BTCUSDT&limit=1000`);
  const depthText = await depth.text();
  assert.match(depthText, /^\{"lastUpdateId":\d+,"bids":\[\["\d+\.\d{8}","\d+\.\d{8}"\]/);
  const snapshot = JSON.parse(depthText) as BookPayload;
  assert.equal(snapshot.bids.length, 1000);
  assert.equal(snapshot.asks.length, 1000);
  assert.equal(Number(depth.headers.get("x-mbx-used-weight-1m")), 1 + 1 + 50);
  // The snapshot is the book as of the newest diff event: the next one starts right after it.
  const at = client.messages.length;
  await client.waitFor(at + 3);
  const events = client.messages.map((m) => JSON.parse(dataOf(m, stream)) as DiffPayload);
  assert.ok(events.some((e) => e.u === snapshot.lastUpdateId), "an event ends at the snapshot id");
  assert.ok(
    events.some((e) => e.U === snapshot.lastUpdateId + 1),
    "the next event starts after it",
  );

  const { body: info } = await getJson(`${ex.restUrl}/api/v3/exchangeInfo`);
  const symbols = (info as { symbols: { symbol: string; status: string }[] }).symbols;
  assert.deepEqual(symbols.map((s) => s.symbol).sort(), [
    "BNBUSDT",
    "BTCUSDT",
    "ETHUSDT",
    "SOLUSDT",
  ]);
  assert.ok(symbols.every((s) => s.status === "TRADING"));
  const { body: futuresInfo } = await getJson(`${ex.restUrl}/fapi/v1/exchangeInfo`);
  assert.deepEqual((futuresInfo as { symbols: unknown }).symbols, symbols);
  // BINANCE.md, REST limits: 6000 (spot) and 2400 (USD-M) weight per minute.
  const weightLimit = (body: unknown) =>
    (body as { rateLimits: { limit: number }[] }).rateLimits[0].limit;
  assert.equal(weightLimit(info), 6000);
  assert.equal(weightLimit(futuresInfo), 2400);

  const missing = await fetch(`${ex.restUrl}/api/v3/nope`);
  await missing.body?.cancel();
  assert.equal(missing.status, 404);

  // Without a diff feed the snapshot id is just a number.
  const { body: eth } = await getJson(`${ex.restUrl}/api/v3/depth?symbol=ETHUSDT&limit=5`);
  assert.equal(typeof (eth as BookPayload).lastUpdateId, "number");
  assert.equal((eth as BookPayload).bids.length, 5);

  assert.deepEqual(ex.restRequests.map((r) => r.path), [
    "/api/v3/ping",
    "/fapi/v1/ping",
    "/api/v3/depth",
    "/api/v3/exchangeInfo",
    "/fapi/v1/exchangeInfo",
    "/api/v3/nope",
    "/api/v3/depth",
  ]);
  assert.equal(ex.restRequests[2].query, "symbol=BTCUSDT&limit=1000");
});

Deno.test("fake exchange usdm depth snapshot has E and T and lines up with pu", async () => {
  await using ex = await FakeExchange.start();
  const stream = "btcusdt@depth@100ms";
  ex.setFeed(stream, diffDepthFeed({ rate: 100, symbol: "BTCUSDT", market: "usdm" }));
  await using client = await TestClient.connect(`${ex.wsUrl}/stream?streams=${stream}`);
  await client.waitFor(2);
  const response = await fetch(`${ex.restUrl}/fapi/v1/depth?symbol=BTCUSDT&limit=100`);
  const text = await response.text();
  assert.match(
    text,
    /^\{"lastUpdateId":\d+,"E":\d+,"T":\d+,"bids":\[\["\d+\.\d{2}","\d+\.\d{3}"\]/,
  );
  const snapshot = JSON.parse(text) as BookPayload;
  assert.equal(snapshot.bids.length, 100);
  await client.waitFor(client.messages.length + 3);
  const events = client.messages.map((m) => JSON.parse(dataOf(m, stream)) as DiffPayload);
  assert.ok(
    events.some((e) => e.pu === snapshot.lastUpdateId),
    "the next event's pu is the snapshot id",
  );
});

Deno.test("fake exchange failRest answers the next requests with the given status and headers", async () => {
  await using ex = await FakeExchange.start();
  ex.failRest(2, 429, { "retry-after": "1" });
  for (let i = 0; i < 2; i++) {
    const { response, body } = await getJson(
      `${ex.restUrl}/api/v3/depth?symbol=BTCUSDT&limit=1000`,
    );
    assert.equal(response.status, 429);
    assert.equal(response.headers.get("retry-after"), "1");
    assert.equal(response.headers.get("content-type"), "application/json");
    assert.equal((body as { code: number }).code, -1003);
  }
  const ok = await fetch(`${ex.restUrl}/api/v3/ping`);
  await ok.body?.cancel();
  assert.equal(ok.status, 200);
  // Failed requests still count as requests and weight, like on Binance.
  assert.equal(ex.restRequests.length, 3);
  assert.equal(ok.headers.get("x-mbx-used-weight-1m"), String(50 + 50 + 1));
});

Deno.test("fake exchange loadFixturePayloads returns each line's exact data substring", async () => {
  const mixedUrl = new URL("mixed_trimmed_messages.ndjson", FIXTURES);
  const lines = (await Deno.readTextFile(mixedUrl)).split("\n").filter((l) => l !== "");
  const messages = await loadFixtureMessages(mixedUrl);
  assert.equal(messages.length, 20);
  messages.forEach((message, i) => {
    // Wrapped lines rebuild exactly from stream + data; bare snapshot lines come back whole.
    const rebuilt = message.stream === undefined
      ? message.data
      : `{"stream":"${message.stream}","data":${message.data}}`;
    assert.equal(rebuilt, lines[i]);
  });
  assert.equal(messages[0].stream, "btcusdt@depth@100ms");
  assert.ok(messages[0].data.startsWith('{"e":"depthUpdate","E":1622363903670,'));

  const gz = new URL("spot_diff_btcusdt_2024-08-08.ndjson.gz", FIXTURES);
  const payloads = await loadFixturePayloads(gz);
  assert.equal(payloads.length, 6495);
  const file = await Deno.open(gz);
  const text = await new Response(file.readable.pipeThrough(new DecompressionStream("gzip")))
    .text();
  const firstLine = text.slice(0, text.indexOf("\n"));
  assert.equal(firstLine, `{"stream":"btcusdt@depth@100ms","data":${payloads[0]}}`);
  // Real data keeps the spot chain, which is what replay tests lean on.
  const events = payloads.slice(0, 500).map((p) => JSON.parse(p) as DiffPayload);
  for (let i = 1; i < events.length; i++) assert.equal(events[i].U, events[i - 1].u + 1);
});

Deno.test("fake exchange replayFeed sends fixture payloads byte for byte, then falls silent", async () => {
  await using ex = await FakeExchange.start();
  const stream = "btcusdt@depth@100ms";
  const payloads = (await loadFixturePayloads(
    new URL("spot_diff_btcusdt_2024-08-08.ndjson.gz", FIXTURES),
  )).slice(0, 40);
  await using combined = await TestClient.connect(`${ex.wsUrl}/stream?streams=${stream}`);
  await using raw = await TestClient.connect(`${ex.wsUrl}/ws/${stream}`);
  // Set after connecting so both clients see message 0.
  ex.setFeed(stream, replayFeed({ rate: 200, payloads }));
  await combined.waitFor(40);
  await raw.waitFor(40);
  await delay(50);
  assert.equal(ex.producedCount(stream), 40);
  assert.deepEqual(raw.messages, payloads);
  assert.deepEqual(combined.messages, payloads.map((p) => `{"stream":"${stream}","data":${p}}`));
  assert.deepEqual(
    ex.sentFor(stream).filter((f) => f.connId === 1).map((f) => f.text),
    combined.messages,
  );

  // The snapshot id follows a replayed real stream too.
  const depth = await getJson(`${ex.restUrl}/api/v3/depth?symbol=BTCUSDT&limit=5`);
  assert.equal(
    (depth.body as BookPayload).lastUpdateId,
    (JSON.parse(payloads[39]) as DiffPayload).u,
  );
});

Deno.test("fake exchange with record false keeps only counts", async () => {
  await using ex = await FakeExchange.start({ record: false });
  ex.setFeed("btcusdt@depth@100ms", diffDepthFeed({ rate: 200, symbol: "BTCUSDT" }));
  await using client = await TestClient.connect(`${ex.wsUrl}/stream?streams=btcusdt@depth@100ms`);
  await client.waitFor(10);
  assert.ok(ex.sentCount >= 10);
  assert.ok(ex.sentCountFor("btcusdt@depth@100ms") >= 10);
  assert.throws(() => ex.sent, /record: false/);
});

Deno.test("fake exchange close ends open clients with a clean 1001 and is idempotent", async () => {
  const ex = await FakeExchange.start();
  const client = await TestClient.connect(`${ex.wsUrl}/stream?streams=x@depth`);
  const feed: FakeStreamFeed = { rate: 100, next: (n) => `{"n":${n}}` };
  ex.setFeed("x@depth", feed);
  await client.waitFor(2);
  assert.equal(client.messages[0], '{"stream":"x@depth","data":{"n":0}}');
  await Promise.all([ex.close(), ex.close()]);
  const event = await client.closed;
  assert.equal(event.code, 1001);
  assert.equal(ex.connections[0].closedBy, "shutdown");
  await ex[Symbol.asyncDispose]();
});
