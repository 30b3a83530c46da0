/**
 * The fake exchange follows Binance's documentation (../shared/reference/
 * BINANCE.md, cited per test), so that it cannot agree with a mistake of the
 * collector: published names only, serverShutdown per connection kind, 414
 * for long URLs, SUBSCRIBE answers and the message-rate limit, symbol status,
 * weight limits, `/time`, lagging snapshots and REST bans.
 */

import assert from "node:assert/strict";
import { diffDepthFeed, FakeExchange, partialDepthFeed } from "./support/fake_exchange.ts";
import { delay, waitFor } from "./support/wait.ts";

/** A client that keeps every text frame and can send. */
class Client implements AsyncDisposable {
  readonly messages: string[] = [];
  readonly closed: Promise<CloseEvent>;
  readonly socket: WebSocket;

  private constructor(socket: WebSocket) {
    this.socket = socket;
    socket.onmessage = (event) => this.messages.push(event.data as string);
    this.closed = new Promise((resolve) => socket.addEventListener("close", resolve));
  }

  static async connect(url: string): Promise<Client> {
    const client = new Client(new WebSocket(url));
    await new Promise<void>((resolve, reject) => {
      client.socket.onopen = () => resolve();
      client.socket.onerror = () => reject(new Error(`could not connect to ${url}`));
    });
    return client;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.socket.readyState !== WebSocket.CLOSED) this.socket.close();
    await this.closed;
  }
}

Deno.test("fake exchange delivers only the names Binance publishes for the market (BINANCE.md, Stream names)", async () => {
  await using ex = await FakeExchange.start();
  const names = [
    "btcusdt@depth20", // both markets
    "btcusdt@depth20@1000ms", // published by neither
    "btcusdt@depth20@250ms", // published by neither
    "btcusdt@depth20@500ms", // USD-M only
    "btcusdt@depth20@100ms", // both
  ];
  for (const name of names) ex.setFeed(name, partialDepthFeed({ rate: 50, levels: 1 }));
  await using spot = await Client.connect(`${ex.wsUrl}/stream?streams=${names.join("/")}`);
  await using usdm = await Client.connect(`${ex.wsUrl}/public/stream?streams=${names.join("/")}`);
  await waitFor(() => spot.messages.length >= 20 && usdm.messages.length >= 30, 5000, "frames");
  const streamsOf = (client: Client) =>
    new Set(client.messages.map((m) => (JSON.parse(m) as { stream: string }).stream));
  assert.deepEqual([...streamsOf(spot)].sort(), ["btcusdt@depth20", "btcusdt@depth20@100ms"]);
  assert.deepEqual([...streamsOf(usdm)].sort(), [
    "btcusdt@depth20",
    "btcusdt@depth20@100ms",
    "btcusdt@depth20@500ms",
  ]);
});

Deno.test("fake exchange announces serverShutdown in the shape of the connection kind, then closes (BINANCE.md, serverShutdown)", async () => {
  await using ex = await FakeExchange.start();
  await using combined = await Client.connect(`${ex.wsUrl}/stream?streams=btcusdt@depth`);
  await using raw = await Client.connect(`${ex.wsUrl}/ws/btcusdt@depth`);
  assert.equal(ex.announceShutdown({ closeAfterMs: 300, eventTime: 1770123456789 }), 2);
  await waitFor(
    () => combined.messages.length >= 1 && raw.messages.length >= 1,
    2000,
    "announcements",
  );
  assert.deepEqual(combined.messages, [
    '{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1770123456789}}',
  ]);
  assert.deepEqual(raw.messages, ['{"e":"serverShutdown","E":1770123456789}']);
  const [a, b] = await Promise.all([combined.closed, raw.closed]);
  assert.equal(a.code, 1000);
  assert.equal(b.code, 1000);
  assert.deepEqual(ex.connections.map((c) => c.closedBy), ["announced", "announced"]);
});

Deno.test("fake exchange refuses a URL longer than maxUrlLength with 414 (BINANCE.md, Long URLs)", async () => {
  await using ex = await FakeExchange.start({ maxUrlLength: 200 });
  const names = Array.from({ length: 20 }, (_, i) => `sym${i}usdt@depth`);
  const url = `${ex.wsUrl}/stream?streams=${names.join("/")}`;
  assert.ok(url.length > 200);
  const response = await fetch(url.replace(/^ws/, "http"), {
    headers: { upgrade: "websocket", connection: "Upgrade" },
  });
  await response.body?.cancel();
  assert.equal(response.status, 414);
  assert.equal(ex.refusedLongUrls, 1);
  await using _ok = await Client.connect(
    `${ex.wsUrl}/stream?streams=${names.slice(0, 2).join("/")}`,
  );
  assert.equal(ex.openCount, 1);
});

Deno.test("fake exchange answers SUBSCRIBE with {result:null,id} and then delivers the stream (BINANCE.md, Long URLs)", async () => {
  await using ex = await FakeExchange.start();
  ex.setFeed("ethusdt@depth@100ms", diffDepthFeed({ rate: 50, symbol: "ETHUSDT" }));
  ex.setFeed("nopeusdt@depth@250ms", diffDepthFeed({ rate: 50, symbol: "NOPEUSDT" }));
  await using client = await Client.connect(`${ex.wsUrl}/stream?streams=btcusdt@depth`);
  client.socket.send(
    JSON.stringify({
      method: "SUBSCRIBE",
      params: ["ethusdt@depth@100ms", "nopeusdt@depth@250ms"],
      id: 7,
    }),
  );
  await waitFor(() => client.messages.length >= 5, 3000, "the answer and data");
  assert.equal(client.messages[0], '{"result":null,"id":7}');
  const streams = new Set(client.messages.slice(1).map((m) => JSON.parse(m).stream));
  // An unpublished name is acknowledged and stays silent.
  assert.deepEqual([...streams], ["ethusdt@depth@100ms"]);
  assert.deepEqual(ex.subscribes.map((s) => [s.connId, s.id, s.params.length]), [[1, 7, 2]]);
  assert.deepEqual(ex.connections[0].streams, [
    "btcusdt@depth",
    "ethusdt@depth@100ms",
    "nopeusdt@depth@250ms",
  ]);
});

Deno.test("fake exchange drops a spot connection that sends more than 5 messages a second (BINANCE.md, Connection rules)", async () => {
  await using ex = await FakeExchange.start();
  await using client = await Client.connect(`${ex.wsUrl}/stream?streams=btcusdt@depth`);
  for (let id = 1; id <= 6; id++) {
    client.socket.send(JSON.stringify({ method: "SUBSCRIBE", params: [], id }));
  }
  const event = await client.closed;
  assert.equal(event.code, 1008);
  assert.equal(ex.connections[0].closedBy, "message-rate");
  assert.equal(client.messages.length, 5, "the first five were answered");
});

Deno.test("fake exchange allows 10 messages a second on USD-M", async () => {
  await using ex = await FakeExchange.start();
  await using client = await Client.connect(`${ex.wsUrl}/public/stream?streams=btcusdt@depth`);
  for (let id = 1; id <= 10; id++) {
    client.socket.send(JSON.stringify({ method: "SUBSCRIBE", params: [], id }));
  }
  await waitFor(() => client.messages.length >= 10, 3000, "ten answers");
  await delay(100);
  assert.equal(client.socket.readyState, WebSocket.OPEN);
});

Deno.test("fake exchange lists symbol status, the weight limit and the time; snapshots can lag", async () => {
  await using ex = await FakeExchange.start({ clockOffsetMs: 5000 });
  ex.setSymbolStatus("ETHUSDT", "BREAK");
  ex.setWeightLimit(1200);
  const info = await (await fetch(`${ex.restUrl}/api/v3/exchangeInfo`)).json();
  const status = Object.fromEntries(
    (info.symbols as { symbol: string; status: string }[]).map((s) => [s.symbol, s.status]),
  );
  assert.equal(status.ETHUSDT, "BREAK");
  assert.equal(status.BTCUSDT, "TRADING");
  assert.equal(info.rateLimits[0].rateLimitType, "REQUEST_WEIGHT");
  assert.equal(info.rateLimits[0].limit, 1200);

  const before = Date.now();
  const time = await (await fetch(`${ex.restUrl}/api/v3/time`)).json();
  assert.ok(time.serverTime >= before + 5000 && time.serverTime <= Date.now() + 5000);

  ex.setFeed("btcusdt@depth@100ms", diffDepthFeed({ rate: 50, symbol: "BTCUSDT" }));
  await waitFor(() => ex.producedCount("btcusdt@depth@100ms") >= 2, 2000, "diffs");
  ex.lagSnapshots(1, 500);
  const lagged = await (await fetch(`${ex.restUrl}/api/v3/depth?symbol=BTCUSDT&limit=5`)).json();
  const current = await (await fetch(`${ex.restUrl}/api/v3/depth?symbol=BTCUSDT&limit=5`)).json();
  assert.ok(current.lastUpdateId - lagged.lastUpdateId >= 500, "the first one lags 500 ids");
});

Deno.test("fake exchange sends event times in µs on a timeUnit=MICROSECOND connection (BINANCE.md, Endpoints)", async () => {
  await using ex = await FakeExchange.start();
  ex.setFeed("btcusdt@depth@100ms", diffDepthFeed({ rate: 50, symbol: "BTCUSDT" }));
  const url = `${ex.wsUrl}/stream?streams=btcusdt@depth@100ms`;
  await using ms = await Client.connect(url);
  await using us = await Client.connect(`${url}&timeUnit=MICROSECOND`);
  await waitFor(() => ms.messages.length >= 3 && us.messages.length >= 3, 3000, "frames");
  const eventTime = (m: string) => (JSON.parse(m) as { data: { E: number } }).data.E;
  const now = Date.now();
  assert.ok(Math.abs(eventTime(ms.messages[0]) - now) < 5000);
  assert.ok(Math.abs(eventTime(us.messages[0]) / 1000 - now) < 5000);
});

Deno.test("fake exchange refuses every REST request during a ban with Retry-After the seconds left (BINANCE.md, REST limits)", async () => {
  await using ex = await FakeExchange.start();
  const get = async (path: string) => {
    const response = await fetch(`${ex.restUrl}${path}`);
    const body = await response.json() as { code?: number };
    return { status: response.status, retryAfter: response.headers.get("retry-after"), body };
  };
  ex.banRest(1500, 429);
  const first = await get("/api/v3/depth?symbol=BTCUSDT&limit=100");
  assert.equal(first.status, 429);
  assert.equal(first.retryAfter, "2", "1.5 s left, rounded up");
  assert.equal(first.body.code, -1003);
  // Every path is refused, not only depth; the seconds left shrink.
  await delay(700);
  const time = await get("/api/v3/time");
  assert.deepEqual([time.status, time.retryAfter], [429, "1"]);
  await delay(900);
  assert.equal((await get("/api/v3/time")).status, 200);
  assert.deepEqual(ex.restRequests.map((r) => [r.status, r.retryAfter]), [
    [429, 2],
    [429, 1],
    [200, undefined],
  ]);

  // Called again during a 429's back-off: the ban escalates to a 418 of its own length;
  // requests that left before the client could see the 429 (concurrent ones) do not.
  ex.banRest(2500, 429, { escalateMs: 3000 });
  const together = await Promise.all([get("/api/v3/ping"), get("/api/v3/depth?symbol=BTCUSDT")]);
  assert.deepEqual(together.map((r) => r.status), [429, 429]);
  await delay(1100);
  const banned = await get("/api/v3/ping");
  assert.equal(banned.status, 418);
  assert.equal(banned.retryAfter, "3");
  await delay(1500);
  assert.equal((await get("/api/v3/ping")).status, 418, "the 418 outlasts the 429 back-off");
  ex.banRest(0, 418);
  assert.equal((await get("/api/v3/ping")).status, 200, "a ban of 0 ms lifts it");
});

Deno.test("fake exchange pings every connection; Deno's WebSocket answers each ping itself and the data goes on between them (BINANCE.md, Connection rules)", async () => {
  // Pongs count towards spot's 5 messages a second: one ping each 250 ms leaves room.
  await using ex = await FakeExchange.start({ pings: { intervalMs: 250, deadlineMs: 3000 } });
  ex.setFeed("btcusdt@depth@100ms", diffDepthFeed({ rate: 200, symbol: "BTCUSDT" }));
  await using client = await Client.connect(`${ex.wsUrl}/stream?streams=btcusdt@depth@100ms`);
  await waitFor(
    () => ex.connections[0].pings >= 8 || ex.connections[0].closedBy !== undefined,
    5000,
    "eight pings",
  );
  await delay(100);
  const [conn] = ex.connections;
  assert.equal(client.socket.readyState, WebSocket.OPEN);
  assert.equal(conn.closedBy, undefined);
  assert.ok(conn.pongs >= conn.pings - 1, `${conn.pongs} pongs to ${conn.pings} pings`);
  assert.equal(conn.unsolicitedPongs, 0);
  // Pings went between frames: every data frame arrived whole, in order.
  const ids = client.messages.map((m) =>
    (JSON.parse(m) as { data: { U: number; u: number } }).data
  );
  assert.ok(ids.length >= 100);
  for (let i = 1; i < ids.length; i++) assert.equal(ids[i].U, ids[i - 1].u + 1);
});

Deno.test("fake exchange cuts a connection that leaves a ping unanswered past the deadline; a pong without the ping's payload answers nothing (BINANCE.md, Connection rules)", async () => {
  await using ex = await FakeExchange.start({ pings: { intervalMs: 100, deadlineMs: 300 } });
  const port = Number(new URL(ex.wsUrl).port);
  // A client that speaks WebSocket by hand and never answers a ping.
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  await tcp.write(new TextEncoder().encode(
    "GET /stream?streams=btcusdt@depth HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n" +
      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
      "Sec-WebSocket-Version: 13\r\n\r\n",
  ));
  const opened = performance.now();
  const received: number[] = [];
  const buffer = new Uint8Array(4096);
  let pongSent = false;
  while (true) {
    const n = await tcp.read(buffer).catch(() => null);
    if (n === null) break;
    received.push(...buffer.subarray(0, n));
    if (!pongSent && ex.connections.length === 1) {
      // A masked pong whose payload is no ping's (RFC 6455 §5.5.3).
      const mask = [1, 2, 3, 4];
      const payload = [..."hello"].map((c, i) => c.charCodeAt(0) ^ mask[i % 4]);
      await tcp.write(Uint8Array.of(0x8a, 0x80 | payload.length, ...mask, ...payload));
      pongSent = true;
    }
  }
  const cutAfter = performance.now() - opened;
  tcp.close();
  const [conn] = ex.connections;
  assert.equal(conn.closedBy, "pong-timeout");
  assert.equal(conn.pongs, 0);
  assert.equal(conn.unsolicitedPongs, 1);
  assert.ok(conn.pings >= 3 && conn.pings <= 5, `${conn.pings} pings`);
  // The first ping came one interval after the 101 and the cut one deadline after it.
  assert.ok(cutAfter >= 380 && cutAfter < 1500, `cut after ${cutAfter} ms`);
  const text = String.fromCharCode(...received);
  assert.match(text, /^HTTP\/1\.1 101 /);
  const frames = received.slice(text.indexOf("\r\n\r\n") + 4);
  // An unmasked, final ping frame with payload "ping 1", then the next.
  assert.deepEqual(frames.slice(0, 8), [0x89, 6, ...new TextEncoder().encode("ping 1")]);
  assert.deepEqual(frames.slice(8, 16), [0x89, 6, ...new TextEncoder().encode("ping 2")]);
});
