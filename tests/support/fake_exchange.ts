/**
 * A fake Binance exchange for tests: WebSocket depth streams and the few REST
 * endpoints the collector calls, served on 127.0.0.1 with a random port.
 *
 * It exists so integration tests can run the collector against something that
 * behaves like Binance (broadcast streams at a rate, abrupt drops, dead links,
 * rate limits, 24 h disconnects compressed to seconds) and then compare the
 * archive with the exact frames the exchange wrote (`sent`).
 *
 * Layout: `Deno.serve` speaks HTTP and WebSocket on an internal port; clients
 * connect to a tiny TCP relay in front of it. The relay is there so that
 * `dropAll()` can cut TCP connections without a WebSocket close frame, and
 * so that pings can be sent and pongs read, neither of which
 * `Deno.upgradeWebSocket` sockets can do on their own.
 *
 * Written from Binance's documentation (../shared/reference/BINANCE.md), not
 * from the collector: it delivers only the stream names Binance publishes for
 * its market (any other name is acknowledged and stays silent), announces
 * `serverShutdown` in the shape of the connection kind, refuses over-long
 * URLs with 414, answers live `SUBSCRIBE` requests and drops a connection that
 * sends more than the market's message rate, lists symbol statuses and the
 * request-weight limit in `exchangeInfo` (and can change the listing at run
 * time: new feeds, `delistSymbol`, `setSymbolStatus`), reports the weight
 * used within the last minute, refuses REST calls during a ban (`banRest`:
 * 429 or 418 with `Retry-After`, a 429 ignored escalating to 418), tells
 * the time, pings every connection and cuts one that leaves a ping
 * unanswered (the `pings` option; fake_pings.ts), and can serve snapshots that
 * lag behind the diff stream. Besides depth it publishes `trade`, `aggTrade`
 * and `bookTicker`, on USD-M each on its own base (`/public`, `/market`).
 */

import { FakeBook, type InsideEvent } from "./fake_book.ts";
import { Pinger, type PingHooks, type PingSettings } from "./fake_pings.ts";

/** One stream's message source. */
export interface FakeStreamFeed {
  /** messages per second for this stream */
  rate: number;
  /**
   * Produces the payload (the `data` part, as JSON text) of message number n
   * (0-based) for this stream. The exchange calls it exactly once per n, in
   * order, when message n falls due, whether or not anyone listens; only a
   * kept book's diff stream (`keepBook` with `inside`) may be asked for the
   * next message before it is due, to serve a snapshot inside it.
   */
  next(n: number): string;
  /** How many messages the feed has; after that the stream falls silent. Unbounded when absent. */
  count?: number;
}

export interface FakeExchangeOptions {
  /** close every connection this many ms after it opened (Binance cuts at 24h; tests use seconds) */
  lifetimeMs?: number;
  /** when false, only counts are kept (benchmarks); default true */
  record?: boolean;
  /**
   * The market whose published stream names are delivered; by default each
   * connection's path decides (`/public/…`, `/market/…` → usdm, else spot).
   */
  market?: "spot" | "usdm";
  /** WebSocket URLs longer than this many characters get HTTP 414 (default 8000, BINANCE.md). */
  maxUrlLength?: number;
  /** Added to the local clock in `/time` answers, ms (default 0). */
  clockOffsetMs?: number;
  /**
   * Ping every WebSocket connection every `intervalMs` and cut one whose
   * oldest unanswered ping is older than `deadlineMs` (BINANCE.md,
   * "Connection rules"; `BINANCE_PINGS` has the documented values, which
   * tests would wait minutes for). Pongs count towards the message rate, as
   * Binance counts them. Default: no pings.
   */
  pings?: PingSettings;
}

/** Where a kept book's snapshots fall inside diff events (`keepBook`). */
export type SnapshotInside = "last" | "next" | "alternate";

export interface SentFrame {
  connId: number;
  /** the stream the frame belongs to; "" for `sendRaw` frames */
  stream: string;
  /** the exact text passed to `socket.send` */
  text: string;
  /** Date.now() when it was sent */
  at: number;
}

/** Why a connection ended, from the exchange's side. */
export type FakeCloseCause =
  /** `lifetimeMs` elapsed; the exchange sent a close frame */
  | "lifetime"
  /** `dropAll()` cut the TCP connection without a close frame */
  | "drop"
  /** `close()` of the exchange */
  | "shutdown"
  /** the client closed it, or the link failed */
  | "peer"
  /** `announceShutdown()`'s `closeAfterMs` elapsed; the exchange sent a close frame */
  | "announced"
  /** the client sent more messages per second than the market allows */
  | "message-rate"
  /** a ping went unanswered past `pings.deadlineMs`; the exchange cut the TCP connection */
  | "pong-timeout";

export interface FakeConnection {
  readonly id: number;
  readonly streams: string[];
  /** Date.now() when the WebSocket opened */
  readonly openedAt: number;
  /** Date.now() when the exchange stopped sending to it */
  readonly closedAt?: number;
  readonly closedBy?: FakeCloseCause;
  /** the URL the client connected to, e.g. `ws://127.0.0.1:1234/stream?streams=a/b` */
  readonly url: string;
  /** pings written to it (`pings` option) */
  readonly pings: number;
  /** pongs that answered a ping (carried its payload) */
  readonly pongs: number;
  /** pongs that answered no ping */
  readonly unsolicitedPongs: number;
}

export interface FakeRestRequest {
  readonly path: string;
  /** the query string without `?` */
  readonly query: string;
  /** Date.now() when it arrived */
  readonly at: number;
  /** the HTTP status it was answered with */
  readonly status: number;
  /** the answer's `Retry-After` header, seconds, when it had one */
  readonly retryAfter?: number;
}

/** A REST ban in force (`banRest`): every request until `until` is refused. */
interface RestBan {
  /** Date.now() when it ends */
  until: number;
  status: 429 | 418;
  /** 429 only: a request during the back-off escalates to a 418 ban this long */
  readonly escalateMs?: number;
  /** 429 only: whether a 429 was answered already (the next request ignored its Retry-After) */
  /** Date.now() of the first refusal: later requests had the chance to see it. */
  warnedAt?: number;
}

/** A live `SUBSCRIBE` request a client sent, as the exchange read it. */
export interface FakeSubscribe {
  readonly connId: number;
  readonly id: unknown;
  readonly params: readonly string[];
  /** performance.now() when it arrived */
  readonly at: number;
}

/**
 * BINANCE.md, "Stream names": the depth names each market publishes
 * (symbols lower case). Anything else is acknowledged and never sent.
 */
const PUBLISHED_NAME: Record<"spot" | "usdm", RegExp> = {
  spot: /^[^@A-Z]+@(?:depth(?:5|10|20)?(?:@100ms)?|trade|aggTrade|bookTicker)$/,
  usdm: /^[^@A-Z]+@(?:depth(?:5|10|20)?(?:@500ms|@100ms)?|aggTrade|bookTicker)$/,
};
/**
 * BINANCE.md, Endpoints: USD-M serves depth and book ticker on `/public`,
 * aggTrade on `/market`; a stream on the wrong base gets no data.
 */
const USDM_BASE_OF: Record<"aggTrade" | "other", "market" | "public"> = {
  aggTrade: "market",
  other: "public",
};
/** BINANCE.md, "Connection rules": incoming messages per second per connection. */
const MESSAGE_RATE: Record<"spot" | "usdm", number> = { spot: 5, usdm: 10 };
/** BINANCE.md, "REST limits": request weight per minute when exchangeInfo says nothing else. */
const WEIGHT_PER_MINUTE: Record<"spot" | "usdm", number> = { spot: 6000, usdm: 2400 };

/**
 * Whether Binance publishes `name` on `market` (BINANCE.md, "Stream names"),
 * and on USD-M's `base` (`public`/`market`) when the connection names one.
 */
export function isPublishedName(
  market: "spot" | "usdm",
  name: string,
  base?: "public" | "market",
): boolean {
  if (!PUBLISHED_NAME[market].test(name)) return false;
  if (market !== "usdm" || base === undefined) return true;
  return USDM_BASE_OF[name.endsWith("@aggTrade") ? "aggTrade" : "other"] === base;
}

/** How often the single clock timer runs; short enough for 400 msg/s streams to stay smooth. */
const TICK_MS = 5;
/** On `close()`, how long open clients get to answer the close frame before their link is cut. */
const CLOSE_GRACE_MS = 250;
/** Symbols `exchangeInfo` always lists, so clients validating a default config find them. */
const DEFAULT_SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT"];
/** Combined-stream paths: spot uses `/stream`; USD-M's newer hosts use `/public/...` and `/market/...`. */
const COMBINED_PATHS = new Set(["/stream", "/public/stream", "/market/stream"]);
const RAW_PATH = /^(?:\/public|\/market)?\/ws\/(.+)$/;

interface StreamState {
  readonly feed: FakeStreamFeed;
  /** performance.now() when the feed was set: message n falls due (n + 1) / rate seconds later */
  readonly startedAt: number;
  produced: number;
  /** the newest payload, kept so REST snapshots can agree with the diff stream */
  lastPayload?: string;
  /** message `produced`, asked for early (a snapshot inside it); sent when it falls due */
  ahead?: string;
}

interface ConnectionRecord {
  id: number;
  streams: string[];
  openedAt: number;
  closedAt?: number;
  closedBy?: FakeCloseCause;
  url: string;
  pings: number;
  pongs: number;
  unsolicitedPongs: number;
}

interface LiveConnection {
  /** whose stream names it gets, and its message-rate limit */
  readonly market: "spot" | "usdm";
  /** USD-M's `/public` or `/market` base of the URL, when it has one */
  readonly base?: "public" | "market";
  /** performance.now() of the client's messages within the last second */
  readonly received: number[];
  /** `timeUnit=MICROSECOND` on the URL: event times `E`/`T` in µs (BINANCE.md, Endpoints) */
  readonly microseconds: boolean;
  readonly record: ConnectionRecord;
  readonly socket: WebSocket;
  /** combined endpoint frames wrap the payload; raw endpoint frames are the payload alone */
  readonly combined: boolean;
  /** performance.now() at open, for `lifetimeMs` */
  readonly openedPerf: number;
  /** settles when the socket's close event fired */
  readonly closed: Promise<void>;
  /** the client's port as the internal server sees it: the relay link's local port */
  readonly peerPort: number;
}

interface RestFailure {
  remaining: number;
  readonly status: number;
  readonly headers: Record<string, string>;
}

/**
 * How long after a 429 a request still counts as sent before the client saw
 * it (in flight, or a concurrent caller): only later ones escalate to 418.
 */
const ESCALATE_AFTER_MS = 1_000;

export class FakeExchange implements AsyncDisposable {
  readonly wsUrl: string;
  readonly restUrl: string;

  readonly #record: boolean;
  readonly #lifetimeMs: number | undefined;
  readonly #server: Deno.HttpServer<Deno.NetAddr>;
  readonly #relay: Relay;
  readonly #ticker: ReturnType<typeof setInterval>;

  readonly #streams = new Map<string, StreamState>();
  /** open connections by id; a connection leaves this map the moment the exchange stops sending to it */
  readonly #live = new Map<number, LiveConnection>();
  /** stream name -> open connections subscribed to it, so a broadcast does not scan every socket */
  readonly #subscribers = new Map<string, Set<LiveConnection>>();
  readonly #connections: ConnectionRecord[] = [];
  readonly #sent: SentFrame[] = [];
  readonly #sentCounts = new Map<string, number>();
  #sentTotal = 0;
  #nextConnId = 1;
  /** bumped by dropAll(), so a WebSocket whose upgrade raced a drop is not adopted afterwards */
  #dropEpoch = 0;
  /** performance.now() until which nothing is sent */
  #stalledUntil = 0;
  readonly #restFailures: RestFailure[] = [];
  #restBan: RestBan | undefined;
  readonly #restRequests: FakeRestRequest[] = [];
  /** Weight of the REST requests of the last minute (Date.now(), weight), oldest first. */
  readonly #weights: Array<{ at: number; weight: number }> = [];
  /** fallback snapshot id when no diff stream tells us a better one */
  #snapshotCounter = 1_000_000;
  /** symbol (upper case) -> the book kept from a real snapshot and the replayed diffs */
  readonly #books = new Map<string, FakeBook>();
  /** symbol (upper case) -> where its snapshots fall inside events, and how many were served */
  readonly #insideOf = new Map<string, { mode: SnapshotInside; served: number }>();
  #closing: Promise<void> | undefined;
  readonly #market: "spot" | "usdm" | undefined;
  readonly #maxUrlLength: number;
  readonly #clockOffsetMs: number;
  readonly #symbolStatus = new Map<string, string>();
  /** Symbols `delistSymbol` took off the listing. */
  readonly #delisted = new Set<string>();
  readonly #subscribes: FakeSubscribe[] = [];
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  /** ids behind the diff stream that the next snapshots lag, one entry per snapshot */
  readonly #snapshotLags: number[] = [];
  #weightLimit: number | undefined;
  #refused414 = 0;

  private constructor(
    server: Deno.HttpServer<Deno.NetAddr>,
    relay: Relay,
    options: FakeExchangeOptions,
  ) {
    this.#server = server;
    this.#relay = relay;
    this.#record = options.record ?? true;
    this.#lifetimeMs = options.lifetimeMs;
    this.#market = options.market;
    this.#maxUrlLength = options.maxUrlLength ?? 8000;
    this.#clockOffsetMs = options.clockOffsetMs ?? 0;
    if (options.pings) relay.pings = { settings: options.pings, hooks: this.#pingHooks() };
    this.wsUrl = `ws://127.0.0.1:${relay.port}`;
    this.restUrl = `http://127.0.0.1:${relay.port}`;
    this.#ticker = setInterval(() => this.#tick(), TICK_MS);
  }

  static async start(options: FakeExchangeOptions = {}): Promise<FakeExchange> {
    // The handler needs the instance and the instance needs the server, so the
    // handler forwards to a slot filled right after construction (before any
    // request can arrive: clients only know the relay's port, returned below).
    const slot: { exchange?: FakeExchange } = {};
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (request, info) =>
        slot.exchange
          ? slot.exchange.#handle(request, info.remoteAddr.port)
          : new Response(null, { status: 503 }),
    );
    let relay: Relay;
    try {
      relay = Relay.start(server.addr.port);
    } catch (error) {
      await server.shutdown();
      throw error;
    }
    slot.exchange = new FakeExchange(server, relay, options);
    return slot.exchange;
  }

  /** Sets (or replaces, restarting its clock at message 0) the feed of a stream. */
  setFeed(stream: string, feed: FakeStreamFeed): void {
    if (!(feed.rate > 0)) throw new RangeError(`feed rate must be > 0, got ${feed.rate}`);
    this.#delisted.delete(stream.slice(0, stream.indexOf("@")).toUpperCase());
    this.#streams.set(stream, { feed, startedAt: performance.now(), produced: 0 });
  }

  /**
   * Cuts every TCP connection (WebSocket and REST) without a close frame, like
   * a network failure. Clients get an abnormal close (1006 by the spec; Deno
   * 2.9's WebSocket reports code 0, wasClean false, after an error event).
   */
  dropAll(): void {
    this.#dropEpoch++;
    for (const conn of [...this.#live.values()]) this.#retire(conn, "drop");
    this.#relay.dropAll();
  }

  /**
   * For `ms`, sends nothing on any socket while keeping them open, like a dead
   * link. Stream clocks keep running: messages due meanwhile are skipped, not queued.
   */
  stall(ms: number): void {
    this.#stalledUntil = Math.max(this.#stalledUntil, performance.now() + ms);
  }

  /**
   * For `ms`, the network between the exchange and its clients is dead: no
   * byte gets through either way (frames, a close frame's answer, a new
   * connection's handshake), where `stall` only stops the exchange writing.
   * What is lost meanwhile stays lost: a handshake sent into it never completes.
   */
  blackhole(ms: number): void {
    this.stall(ms);
    this.#relay.deadUntil = Math.max(this.#relay.deadUntil, performance.now() + ms);
  }

  /**
   * Writes one arbitrary frame to every open socket (recorded with stream "").
   * Returns how many sockets got it: none while stalled.
   */
  sendRaw(text: string): number {
    if (this.#isStalled(performance.now())) return 0;
    let delivered = 0;
    for (const conn of this.#live.values()) {
      if (this.#send(conn, "", text)) delivered++;
    }
    return delivered;
  }

  /** The next `count` REST requests answer `status` with these headers; calls queue up in order. */
  failRest(count: number, status: number, headers: Record<string, string> = {}): void {
    if (count > 0) this.#restFailures.push({ remaining: count, status, headers });
  }

  /**
   * For `ms` from now, every REST request is refused with `status` and a
   * `Retry-After` header of the whole seconds left until the ban ends
   * (rounded up), as Binance documents (BINANCE.md, "REST limits": 429 = over
   * the limit, honour `Retry-After`; repeated 429s lead to 418, an IP ban,
   * also with `Retry-After`). With `status` 429 and `escalateMs`, a request
   * that comes more than `ESCALATE_AFTER_MS` after the first 429 was
   * answered, while the back-off is still running (the client saw it and
   * ignored `Retry-After`; requests already on their way are not held
   * against it), turns the ban into a 418 ban of `escalateMs` from then. Takes precedence over `failRest`; a new ban replaces the old one.
   */
  banRest(ms: number, status: 429 | 418 = 429, options: { escalateMs?: number } = {}): void {
    this.#restBan = {
      until: Date.now() + ms,
      status,
      escalateMs: options.escalateMs,
    };
  }

  /**
   * Announces `serverShutdown` on every open socket in the shape of its kind
   * (BINANCE.md, serverShutdown): raw `{"e":"serverShutdown","E":…}`, combined
   * `{"stream":"!serverShutdown","data":{…}}` (recorded with stream ""). With
   * `closeAfterMs`, each of those sockets is closed that much later;
   * `shape: "raw"` sends the raw shape on every socket. Returns how many
   * sockets got it.
   */
  announceShutdown(
    options: { closeAfterMs?: number; eventTime?: number; shape?: "raw" } = {},
  ): number {
    const event = `{"e":"serverShutdown","E":${options.eventTime ?? Date.now()}}`;
    let delivered = 0;
    for (const conn of [...this.#live.values()]) {
      const wrap = conn.combined && options.shape !== "raw";
      const text = wrap ? `{"stream":"!serverShutdown","data":${event}}` : event;
      if (!this.#send(conn, "", text)) continue;
      delivered++;
      if (options.closeAfterMs === undefined) continue;
      const timer = setTimeout(() => {
        this.#timers.delete(timer);
        this.#retire(conn, "announced");
      }, options.closeAfterMs);
      this.#timers.add(timer);
    }
    return delivered;
  }

  /** `exchangeInfo` lists `symbol` (upper case) with this status from now on (default TRADING). */
  setSymbolStatus(symbol: string, status: string): void {
    this.#delisted.delete(symbol.toUpperCase());
    this.#symbolStatus.set(symbol.toUpperCase(), status);
  }

  /**
   * `exchangeInfo` no longer lists `symbol` (a delisting), and its streams fall
   * silent (their feeds end). `setSymbolStatus` or a new feed lists it again.
   */
  delistSymbol(symbol: string): void {
    const upper = symbol.toUpperCase();
    this.#delisted.add(upper);
    this.#symbolStatus.delete(upper);
    for (const name of [...this.#streams.keys()]) {
      if (name.slice(0, name.indexOf("@")).toUpperCase() === upper) this.#streams.delete(name);
    }
  }

  /** `exchangeInfo.rateLimits` lists this request weight per minute (default: the market's documented one). */
  /**
   * Latency of the WebSocket handshake: a new connection reaches the server
   * only `ms` later (a far-away exchange), from now on.
   */
  setConnectDelay(ms: number): void {
    this.#relay.connectDelayMs = ms;
  }

  setWeightLimit(perMinute: number): void {
    this.#weightLimit = perMinute;
  }

  /**
   * The next `count` depth snapshots are `behind` update ids older than the
   * diff stream (as a slow REST cache would serve them); later ones line up again.
   */
  lagSnapshots(count: number, behind = 1_000_000): void {
    for (let i = 0; i < count; i++) this.#snapshotLags.push(behind);
  }

  /** Live `SUBSCRIBE` requests received, in order. */
  get subscribes(): ReadonlyArray<FakeSubscribe> {
    return this.#subscribes;
  }

  /** WebSocket upgrades refused with 414 because the URL was too long. */
  get refusedLongUrls(): number {
    return this.#refused414;
  }

  /**
   * Keeps `symbol`'s book from now on: starting from `snapshotText` (a real
   * `/depth` response of the capture being replayed), every diff the
   * symbol's diff stream produces is applied, and REST snapshots of the
   * symbol are that book (`limit` levels a side), so a snapshot at update id
   * N is the true book at N. Before the replay reaches the snapshot's id, the
   * snapshot itself is served.
   *
   * By default a snapshot's id is the `u` of the newest diff event. With
   * `inside`, it falls strictly inside an event, as Binance's may (BINANCE.md,
   * "Keeping a book": spot `U <= lastUpdateId + 1 <= u`, USD-M
   * `U <= lastUpdateId <= u` for the first event applied): `"last"` inside
   * the newest event sent (the straddling frame arrives before the REST
   * answer), `"next"` inside the event the stream sends next (it arrives
   * after), `"alternate"` each in turn, starting with `"last"`. The book at
   * that id is modelled as fake_book.ts describes; an event of one new id
   * cannot hold a snapshot, which then falls on the boundary.
   */
  keepBook(
    symbol: string,
    snapshotText: string,
    market: "spot" | "usdm" = "spot",
    options: { inside?: SnapshotInside } = {},
  ): void {
    const upper = symbol.toUpperCase();
    this.#books.set(upper, new FakeBook(snapshotText, market));
    if (options.inside) this.#insideOf.set(upper, { mode: options.inside, served: 0 });
    else this.#insideOf.delete(upper);
  }

  /** Every frame written, in order. Throws when the exchange was started with `record: false`. */
  get sent(): readonly SentFrame[] {
    this.#requireRecording();
    return this.#sent;
  }

  sentFor(stream: string): SentFrame[] {
    this.#requireRecording();
    return this.#sent.filter((frame) => frame.stream === stream);
  }

  /** How many frames were written in total; kept even with `record: false`. */
  get sentCount(): number {
    return this.#sentTotal;
  }

  /** How many frames of one stream were written (summed over connections); kept even with `record: false`. */
  sentCountFor(stream: string): number {
    return this.#sentCounts.get(stream) ?? 0;
  }

  /** How many messages a stream's clock has produced so far, sent or not. */
  producedCount(stream: string): number {
    return this.#streams.get(stream)?.produced ?? 0;
  }

  get connections(): ReadonlyArray<FakeConnection> {
    return this.#connections;
  }

  get openCount(): number {
    return this.#live.size;
  }

  get restRequests(): ReadonlyArray<FakeRestRequest> {
    return this.#restRequests;
  }

  /** Stops the clock, closes sockets (close frame, then the link), stops the server. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #shutdown(): Promise<void> {
    clearInterval(this.#ticker);
    for (const timer of this.#timers) clearTimeout(timer);
    const closing = [...this.#live.values()];
    for (const conn of closing) this.#retire(conn, "shutdown");
    // Give clients a moment to answer the close frame so they see a clean 1001,
    // then cut whatever is left so shutdown never hangs on a silent client.
    let grace: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all(closing.map((conn) => conn.closed)),
      new Promise<void>((resolve) => grace = setTimeout(resolve, CLOSE_GRACE_MS)),
    ]);
    clearTimeout(grace);
    await this.#relay.close();
    await this.#server.shutdown();
  }

  #requireRecording(): void {
    if (!this.#record) {
      throw new Error("FakeExchange was started with record: false; use sentCount");
    }
  }

  #isStalled(now: number): boolean {
    return now < this.#stalledUntil;
  }

  /** The one timer: produce what each stream owes by now, and enforce `lifetimeMs`. */
  #tick(): void {
    const now = performance.now();
    const stalled = this.#isStalled(now);
    for (const [name, state] of this.#streams) {
      let due = Math.floor((now - state.startedAt) * state.feed.rate / 1000);
      if (state.feed.count !== undefined) due = Math.min(due, state.feed.count);
      while (state.produced < due) {
        const payload = state.ahead ?? state.feed.next(state.produced);
        state.ahead = undefined;
        state.produced++;
        state.lastPayload = payload;
        this.#bookOf(name)?.apply(payload);
        if (!stalled) this.#broadcast(name, payload);
      }
    }
    if (this.#lifetimeMs !== undefined) {
      for (const conn of [...this.#live.values()]) {
        if (now - conn.openedPerf >= this.#lifetimeMs) this.#retire(conn, "lifetime");
      }
    }
  }

  #broadcast(stream: string, payload: string): void {
    const subscribers = this.#subscribers.get(stream);
    if (!subscribers || subscribers.size === 0) return;
    // Built once per message, shared by every combined subscriber.
    const combined = `{"stream":${JSON.stringify(stream)},"data":${payload}}`;
    let micro: { payload: string; combined: string } | undefined;
    for (const conn of subscribers) {
      if (conn.microseconds) {
        // The same event with its times in µs (the fake knows them only to the ms).
        const payloadUs = payload.replace(/"([ET])":(\d+)/g, (_, key, ms) => `"${key}":${ms}000`);
        micro ??= {
          payload: payloadUs,
          combined: `{"stream":${JSON.stringify(stream)},"data":${payloadUs}}`,
        };
        this.#send(conn, stream, conn.combined ? micro.combined : micro.payload);
        continue;
      }
      this.#send(conn, stream, conn.combined ? combined : payload);
    }
  }

  /** Writes one frame and records it; false when the socket could not take it. */
  #send(conn: LiveConnection, stream: string, text: string): boolean {
    if (conn.socket.readyState !== WebSocket.OPEN) return false;
    try {
      conn.socket.send(text);
    } catch {
      return false;
    }
    this.#sentTotal++;
    this.#sentCounts.set(stream, (this.#sentCounts.get(stream) ?? 0) + 1);
    if (this.#record) this.#sent.push({ connId: conn.record.id, stream, text, at: Date.now() });
    return true;
  }

  /** Stops sending to a connection and ends it the way `cause` says. */
  #retire(conn: LiveConnection, cause: FakeCloseCause): void {
    if (!this.#live.delete(conn.record.id)) return;
    for (const stream of conn.record.streams) this.#subscribers.get(stream)?.delete(conn);
    conn.record.closedAt = Date.now();
    conn.record.closedBy = cause;
    if (cause === "lifetime" || cause === "shutdown" || cause === "announced") {
      try {
        conn.socket.close(cause === "shutdown" ? 1001 : 1000, cause);
      } catch {
        // already closing: nothing to do
      }
    }
    // "drop" is done by the relay cutting TCP; "peer" means the socket is already gone.
  }

  #handle(request: Request, peerPort: number): Response | Promise<Response> {
    const url = new URL(request.url);
    // Combined: `/stream?streams=a/b`; raw: `/ws/a` (Binance also takes `/ws/a/b`).
    const combined = COMBINED_PATHS.has(url.pathname);
    const streamList = combined
      ? url.searchParams.get("streams") ?? ""
      : RAW_PATH.exec(url.pathname)?.[1];
    if (streamList === undefined) return this.#rest(request, url);
    const streams = streamList.split("/").filter((s) => s !== "");
    const clientUrl = `${this.wsUrl}${url.pathname}${url.search}`;
    if (clientUrl.length > this.#maxUrlLength) {
      this.#refused414++;
      return new Response("URI Too Long", { status: 414 });
    }
    const market = this.#market ?? (/^\/(?:public|market)\//.test(url.pathname) ? "usdm" : "spot");
    const microseconds = url.searchParams.get("timeUnit")?.toUpperCase() === "MICROSECOND";
    const base = /^\/(public|market)\//.exec(url.pathname)?.[1] as "public" | "market" | undefined;
    return this.#upgrade(request, {
      streams,
      combined,
      url: clientUrl,
      market,
      microseconds,
      base,
      peerPort,
    });
  }

  #upgrade(
    request: Request,
    target: {
      streams: string[];
      combined: boolean;
      url: string;
      market: "spot" | "usdm";
      microseconds: boolean;
      base?: "public" | "market";
      peerPort: number;
    },
  ): Response {
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return json(400, { code: -1, msg: "expected a WebSocket upgrade" });
    }
    const { socket, response } = Deno.upgradeWebSocket(request);
    const epoch = this.#dropEpoch;
    let markClosed = () => {};
    const closed = new Promise<void>((resolve) => markClosed = resolve);
    let conn: LiveConnection | undefined;
    socket.onopen = () => {
      // A drop or shutdown between the upgrade and now means this link is already dead.
      if (this.#closing || epoch !== this.#dropEpoch) {
        socket.close(1001, "gone");
        return;
      }
      const record: ConnectionRecord = {
        id: this.#nextConnId++,
        streams: target.streams,
        openedAt: Date.now(),
        url: target.url,
        pings: 0,
        pongs: 0,
        unsolicitedPongs: 0,
      };
      conn = {
        record,
        socket,
        combined: target.combined,
        openedPerf: performance.now(),
        closed,
        market: target.market,
        base: target.base,
        received: [],
        microseconds: target.microseconds,
        peerPort: target.peerPort,
      };
      this.#connections.push(record);
      this.#live.set(record.id, conn);
      for (const stream of target.streams) this.#subscribe(conn, stream);
    };
    socket.onmessage = (event) => {
      if (conn && typeof event.data === "string") this.#request(conn, event.data);
    };
    socket.onclose = () => {
      if (conn) this.#retire(conn, "peer");
      markClosed();
    };
    // Errors always come with a close event, which does the bookkeeping.
    socket.onerror = () => {};
    return response;
  }

  /** Delivers `stream` to `conn` from now on, if Binance publishes that name on its market. */
  #subscribe(conn: LiveConnection, stream: string): void {
    if (!isPublishedName(conn.market, stream, conn.base)) return;
    let set = this.#subscribers.get(stream);
    if (!set) this.#subscribers.set(stream, set = new Set());
    set.add(conn);
  }

  /**
   * A message from a client: over the market's rate the connection is
   * dropped; `SUBSCRIBE` is answered `{"result":null,"id":n}` (BINANCE.md,
   * Long URLs), `LIST_SUBSCRIPTIONS` `{"result":[…],"id":n}`; anything else
   * gets the error shape of Binance's WebSocket Streams docs ("Error
   * Messages": `{"code":2,"msg":"Invalid request: …","id":n}`). While the
   * exchange is stalled (a dead link) nothing is answered either.
   */
  #request(conn: LiveConnection, text: string): void {
    const now = performance.now();
    if (this.#isStalled(now)) return;
    if (this.#overRate(conn, now)) return;
    let message: { method?: unknown; params?: unknown; id?: unknown };
    try {
      message = JSON.parse(text);
    } catch {
      this.#send(conn, "", '{"code":3,"msg":"Invalid JSON: expected value at line 1 column 1"}');
      return;
    }
    if (message.method === "LIST_SUBSCRIPTIONS" && message.params === undefined) {
      const result = [...this.#subscribers].filter(([, set]) => set.has(conn)).map(([s]) => s);
      this.#send(conn, "", JSON.stringify({ result, id: message.id ?? null }));
      return;
    }
    const params = message.params;
    const valid = message.method === "SUBSCRIBE" && Array.isArray(params) &&
      params.every((p) => typeof p === "string");
    if (!valid) {
      this.#send(
        conn,
        "",
        JSON.stringify({ code: 2, msg: "Invalid request: unknown method", id: message.id ?? null }),
      );
      return;
    }
    this.#subscribes.push({ connId: conn.record.id, id: message.id, params, at: now });
    for (const stream of params as string[]) {
      if (!conn.record.streams.includes(stream)) conn.record.streams.push(stream);
      this.#subscribe(conn, stream);
    }
    this.#send(conn, "", JSON.stringify({ result: null, id: message.id ?? null }));
  }

  /**
   * Counts one incoming message (BINANCE.md, "Connection rules": pings, pongs
   * and JSON messages all count); over the market's rate the connection is
   * dropped and true returned.
   */
  #overRate(conn: LiveConnection, now: number): boolean {
    while (conn.received.length > 0 && conn.received[0] <= now - 1000) conn.received.shift();
    conn.received.push(now);
    if (conn.received.length <= MESSAGE_RATE[conn.market]) return false;
    this.#retire(conn, "message-rate");
    try {
      conn.socket.close(1008, "too many messages");
    } catch {
      // already closing
    }
    return true;
  }

  /** What the relay's pingers report, applied to the connection behind the link's port. */
  #pingHooks(): PingHooks {
    const connOf = (port: number) => [...this.#live.values()].find((c) => c.peerPort === port);
    return {
      canPing: () => !this.#isStalled(performance.now()),
      ping: (port) => {
        const conn = connOf(port);
        if (conn) conn.record.pings++;
      },
      pong: (port, answered) => {
        const conn = connOf(port);
        if (!conn) return;
        if (answered) conn.record.pongs++;
        else conn.record.unsolicitedPongs++;
        this.#overRate(conn, performance.now());
      },
      timeout: (port) => {
        const conn = connOf(port);
        if (conn) this.#retire(conn, "pong-timeout");
      },
    };
  }

  #rest(request: Request, url: URL): Response {
    const path = url.pathname;
    const at = Date.now();
    const record: { -readonly [K in keyof FakeRestRequest]: FakeRestRequest[K] } = {
      path,
      query: url.search.replace(/^\?/, ""),
      at,
      status: 0,
    };
    this.#restRequests.push(record);
    // The weight used within the last minute (BINANCE.md, REST limits: per minute).
    this.#weights.push({ at, weight: requestWeight(path, url.searchParams) });
    while (this.#weights[0].at <= at - 60_000) this.#weights.shift();
    const used = this.#weights.reduce((sum, w) => sum + w.weight, 0);
    const weight = {
      "x-mbx-used-weight": String(used),
      "x-mbx-used-weight-1m": String(used),
    };
    const response = this.#refusal(at, weight) ?? this.#answer(request, url, weight);
    record.status = response.status;
    const retryAfter = response.headers.get("retry-after");
    if (retryAfter !== null) record.retryAfter = Number(retryAfter);
    return response;
  }

  /** The answer of a ban (`banRest`) or a queued failure (`failRest`), if one is due. */
  #refusal(at: number, weight: Record<string, string>): Response | undefined {
    const ban = this.#restBan;
    if (ban && at < ban.until) {
      const ignored = ban.warnedAt !== undefined && at - ban.warnedAt > ESCALATE_AFTER_MS;
      if (ban.status === 429 && ignored && ban.escalateMs !== undefined) {
        // Called again during the back-off: Binance escalates to an IP ban (BINANCE.md, REST limits).
        ban.status = 418;
        ban.until = at + ban.escalateMs;
      }
      ban.warnedAt ??= at;
      const retryAfter = String(Math.ceil((ban.until - at) / 1000));
      return json(ban.status, failureBody(ban.status), { ...weight, "retry-after": retryAfter });
    }
    const failure = this.#restFailures[0];
    if (!failure) return undefined;
    if (--failure.remaining <= 0) this.#restFailures.shift();
    return json(failure.status, failureBody(failure.status), { ...weight, ...failure.headers });
  }

  #answer(request: Request, url: URL, weight: Record<string, string>): Response {
    const path = url.pathname;
    if (request.method !== "GET") return json(405, { code: -1, msg: "method not allowed" }, weight);

    switch (path) {
      case "/api/v3/ping":
      case "/fapi/v1/ping":
        return json(200, {}, weight);
      case "/api/v3/time":
      case "/fapi/v1/time":
        return json(200, { serverTime: Date.now() + this.#clockOffsetMs }, weight);
      case "/api/v3/exchangeInfo":
      case "/fapi/v1/exchangeInfo": {
        const market = path.startsWith("/fapi") ? "usdm" : "spot";
        return json(200, {
          rateLimits: [
            {
              rateLimitType: "REQUEST_WEIGHT",
              interval: "MINUTE",
              intervalNum: 1,
              limit: this.#weightLimit ?? WEIGHT_PER_MINUTE[market],
            },
          ],
          symbols: this.#symbols().map((symbol) => ({
            symbol,
            status: this.#symbolStatus.get(symbol) ?? "TRADING",
          })),
        }, weight);
      }
      case "/api/v3/depth":
      case "/fapi/v1/depth": {
        const symbol = url.searchParams.get("symbol");
        if (!symbol) {
          return json(
            400,
            { code: -1102, msg: "Mandatory parameter 'symbol' was not sent." },
            weight,
          );
        }
        const market = path.startsWith("/fapi") ? "usdm" : "spot";
        const limit = Number(url.searchParams.get("limit") ?? 100);
        const book = this.#books.get(symbol.toUpperCase());
        if (book) {
          const inside = this.#insideEvent(symbol.toUpperCase());
          return new Response(book.snapshotText(Number.isFinite(limit) ? limit : 100, { inside }), {
            status: 200,
            headers: { "content-type": "application/json", ...weight },
          });
        }
        const body = depthSnapshotText({
          market,
          lastUpdateId: this.#snapshotId(symbol) - (this.#snapshotLags.shift() ?? 0),
          levels: Math.max(
            1,
            Math.min(Number.isFinite(limit) ? limit : 100, market === "spot" ? 5000 : 1000),
          ),
        });
        return new Response(body, {
          status: 200,
          headers: { "content-type": "application/json", ...weight },
        });
      }
      default:
        return json(404, { code: -1, msg: `unknown path ${path}` }, weight);
    }
  }

  /**
   * Where a kept book's next snapshot falls (`keepBook`'s `inside`): inside the
   * newest event, or inside the next one, read early from the symbol's diff
   * stream (and sent when it falls due); undefined on the boundary.
   */
  #insideEvent(symbol: string): InsideEvent | undefined {
    const placement = this.#insideOf.get(symbol);
    if (!placement) return undefined;
    const turn = placement.served++;
    const mode = placement.mode === "alternate"
      ? (turn % 2 === 0 ? "last" : "next")
      : placement.mode;
    if (mode === "last") return "last";
    for (const [name, state] of this.#streams) {
      if (this.#books.get(symbol) !== this.#bookOf(name)) continue;
      const { feed, produced } = state;
      if (feed.count !== undefined && produced >= feed.count) return undefined;
      state.ahead ??= feed.next(produced);
      return { next: state.ahead };
    }
    return undefined;
  }

  /** The kept book a diff stream (`<sym>@depth` or `<sym>@depth@<speed>`) feeds, if any. */
  #bookOf(stream: string): FakeBook | undefined {
    const match = /^([^@]+)@depth(?:@\d+ms)?$/.exec(stream);
    return match ? this.#books.get(match[1].toUpperCase()) : undefined;
  }

  /** Symbols with a feed plus the defaults, upper-case, without duplicates. */
  #symbols(): string[] {
    const symbols = new Set([...DEFAULT_SYMBOLS, ...this.#symbolStatus.keys()]);
    for (const stream of this.#streams.keys()) {
      const at = stream.indexOf("@");
      if (at > 0) symbols.add(stream.slice(0, at).toUpperCase());
    }
    return [...symbols].filter((symbol) => !this.#delisted.has(symbol));
  }

  /**
   * The snapshot id that lines up with the symbol's diff stream: the `u` of its
   * newest message, so the next diff message starts right after the snapshot
   * (spot `U == lastUpdateId + 1`). Any number when there is no such stream.
   */
  #snapshotId(symbol: string): number {
    const prefix = `${symbol.toLowerCase()}@depth`;
    for (const [name, state] of this.#streams) {
      // `<sym>@depth` or `<sym>@depth@100ms`, not the partial `<sym>@depth20...`
      if (name !== prefix && !name.startsWith(`${prefix}@`)) continue;
      if (state.lastPayload === undefined) continue;
      try {
        const u = (JSON.parse(state.lastPayload) as { u?: unknown }).u;
        if (typeof u === "number") return u;
      } catch {
        // not JSON (a test feeding garbage): fall through to the counter
      }
    }
    return this.#snapshotCounter++;
  }
}

// ---------------------------------------------------------------------------
// TCP relay

/**
 * Forwards bytes between clients and the internal `Deno.serve` port. Owning the
 * client-side TCP connection is what lets `dropAll()` end it without a close frame.
 */
class Relay {
  readonly port: number;
  readonly #listener: Deno.TcpListener;
  readonly #innerPort: number;
  readonly #links = new Set<Link>();
  readonly #accepting: Promise<void>;
  /** How long a new link waits before it reaches the server. */
  connectDelayMs = 0;
  /** Until then (performance.now()), every byte either way is dropped. */
  deadUntil = 0;
  /** Server pings on every WebSocket link opened from now on (none when undefined). */
  pings: { settings: PingSettings; hooks: PingHooks } | undefined;

  private constructor(listener: Deno.TcpListener, innerPort: number) {
    this.#listener = listener;
    this.#innerPort = innerPort;
    this.port = listener.addr.port;
    this.#accepting = this.#acceptLoop();
  }

  static start(innerPort: number): Relay {
    return new Relay(Deno.listen({ hostname: "127.0.0.1", port: 0 }), innerPort);
  }

  /** Cuts every link once what the server already wrote has reached its client. */
  dropAll(): void {
    for (const link of this.#links) link.drainThenCut();
  }

  async close(): Promise<void> {
    try {
      this.#listener.close();
    } catch {
      // already closed
    }
    await this.#accepting;
    for (const link of this.#links) link.cut();
    await Promise.all([...this.#links].map((link) => link.done));
  }

  async #acceptLoop(): Promise<void> {
    try {
      for await (const client of this.#listener) {
        const link = new Link(client, {
          innerPort: this.#innerPort,
          delayMs: this.connectDelayMs,
          deadUntil: () => this.deadUntil,
          pings: this.pings,
        });
        this.#links.add(link);
        link.done.then(() => this.#links.delete(link));
      }
    } catch {
      // the listener was closed: no more clients
    }
  }
}

/** One client connection and its twin on the internal server. */
class Link {
  readonly done: Promise<void>;
  readonly #client: Deno.TcpConn;
  #inner: Deno.TcpConn | undefined;
  #cut = false;
  /** When bytes last went from the server to the client (performance.now()). */
  #forwardedAt = performance.now();
  /** Writes to the client in order: the server's bytes and the pings between them. */
  #toClient: Promise<void> = Promise.resolve();
  #pinger: Pinger | undefined;

  readonly #deadUntil: () => number;
  readonly #pings: { settings: PingSettings; hooks: PingHooks } | undefined;

  constructor(
    client: Deno.TcpConn,
    options: {
      innerPort: number;
      delayMs: number;
      deadUntil: () => number;
      pings?: { settings: PingSettings; hooks: PingHooks };
    },
  ) {
    this.#client = client;
    this.#deadUntil = options.deadUntil;
    this.#pings = options.pings;
    this.done = this.#run(options.innerPort, options.delayMs);
  }

  /**
   * A drop after the bytes in flight: what the server wrote before it (the
   * fake counts it as sent) is forwarded, then the connection is cut. On
   * loopback they pass within milliseconds; the server writes nothing new.
   */
  async drainThenCut(): Promise<void> {
    const start = performance.now();
    // 20 ms with nothing forwarded, counted from the drop at the earliest.
    const quiet = () => performance.now() - Math.max(this.#forwardedAt, start) >= 20;
    while (!this.#cut && performance.now() - start < 250 && !quiet()) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    this.cut();
  }

  /** Closes both ends at once; the client sees the TCP connection end mid-stream. */
  cut(): void {
    if (this.#cut) return;
    this.#cut = true;
    this.#pinger?.stop();
    closeQuietly(this.#client);
    if (this.#inner) closeQuietly(this.#inner);
  }

  async #run(innerPort: number, delayMs: number): Promise<void> {
    try {
      if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
      if (this.#cut) return;
      const inner = await Deno.connect({ hostname: "127.0.0.1", port: innerPort });
      this.#inner = inner;
      if (this.#cut) {
        closeQuietly(inner);
        return;
      }
      // Small frames should leave at once, not wait for Nagle.
      this.#client.setNoDelay(true);
      inner.setNoDelay(true);
      if (this.#pings) this.#pinger = this.#startPinger(this.#pings, inner.localAddr.port);
      await Promise.all([this.#pumpToServer(inner), this.#pumpToClient(inner)]);
    } catch {
      // connect failed (server shutting down): just end the client
    } finally {
      this.cut();
    }
  }

  /** Pings this link's client (fake_pings.ts); a ping into a dead network is lost. */
  #startPinger(pings: { settings: PingSettings; hooks: PingHooks }, port: number): Pinger {
    const hooks: PingHooks = {
      ...pings.hooks,
      timeout: (timedOut) => {
        pings.hooks.timeout(timedOut);
        this.cut();
      },
    };
    return new Pinger({
      settings: pings.settings,
      hooks,
      port,
      write: (bytes) => {
        if (performance.now() >= this.#deadUntil()) this.#queueToClient(bytes);
      },
    });
  }

  /** Queues bytes behind those queued before; a failed write (the link was cut) cuts it. */
  #queueToClient(bytes: Uint8Array): void {
    this.#toClient = this.#toClient.then(() => writeAll(this.#client, bytes)).catch(() =>
      this.cut()
    );
  }

  /** Copies client bytes to the server until either side ends, then cuts both. */
  async #pumpToServer(inner: Deno.Conn): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await this.#client.read(buffer);
        if (n === null) break;
        if (performance.now() < this.#deadUntil()) continue; // lost on a dead network
        this.#pinger?.fromClient(buffer.subarray(0, n));
        await writeAll(inner, buffer.subarray(0, n));
      }
    } catch {
      // a cut closes the conns under a pending read or write
    } finally {
      this.cut();
    }
  }

  /** Copies server bytes to the client (with any ping due between two frames), then cuts both. */
  async #pumpToClient(inner: Deno.Conn): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await inner.read(buffer);
        if (n === null) break;
        if (performance.now() < this.#deadUntil()) continue; // lost on a dead network
        const chunk = buffer.subarray(0, n);
        for (const piece of this.#pinger?.fromServer(chunk) ?? [chunk]) {
          if (piece.length > 0) this.#queueToClient(piece);
        }
        // The buffer is read again only once its bytes are written.
        await this.#toClient;
        this.#forwardedAt = performance.now();
      }
    } catch {
      // a cut closes the conns under a pending read or write
    } finally {
      this.cut();
    }
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await conn.write(bytes.subarray(written));
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

// ---------------------------------------------------------------------------
// REST helpers

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

/** Error bodies shaped like Binance's, so clients that read `code` find one. */
function failureBody(status: number): { code: number; msg: string } {
  if (status === 429) return { code: -1003, msg: "Too many requests; current limit is exceeded." };
  if (status === 418) return { code: -1003, msg: "Way too many requests; IP banned." };
  return { code: -1000, msg: `fake failure ${status}` };
}

/** Request weights as Binance documents them, so the weight header grows realistically. */
function requestWeight(path: string, params: URLSearchParams): number {
  const limit = Number(params.get("limit") ?? 100);
  switch (path) {
    case "/api/v3/depth":
      return limit <= 100 ? 5 : limit <= 500 ? 25 : limit <= 1000 ? 50 : 250;
    case "/fapi/v1/depth":
      return limit <= 50 ? 2 : limit <= 100 ? 5 : limit <= 500 ? 10 : 20;
    case "/api/v3/exchangeInfo":
      return 20;
    default:
      return 1;
  }
}

/** A `/depth` body: spot `{"lastUpdateId","bids","asks"}`; USD-M adds `"E"` and `"T"` like Binance. */
function depthSnapshotText(
  opts: { market: "spot" | "usdm"; lastUpdateId: number; levels: number },
): string {
  const format = opts.market === "spot" ? SPOT_FORMAT : USDM_FORMAT;
  const mid = 6_000_000; // 60,000.00 in cents
  const bids: string[] = [];
  const asks: string[] = [];
  for (let i = 0; i < opts.levels; i++) {
    bids.push(level(format, mid - 1 - i, hash(opts.lastUpdateId, 2 * i)));
    asks.push(level(format, mid + i, hash(opts.lastUpdateId, 2 * i + 1)));
  }
  const now = Date.now();
  const times = opts.market === "usdm" ? `"E":${now},"T":${now - 3},` : "";
  return `{"lastUpdateId":${opts.lastUpdateId},${times}"bids":[${bids.join(",")}],"asks":[${
    asks.join(",")
  }]}`;
}

// ---------------------------------------------------------------------------
// Feeds

/**
 * Partial book (`<sym>@depth<N>@100ms`). Spot: `{"lastUpdateId":N,"bids":[...],"asks":[...]}`
 * with strictly increasing lastUpdateId and 8-decimal strings (~1.3 KB at 20 levels, like the
 * real thing). USD-M (BINANCE.md, "Payloads"; fixture mixed_trimmed_messages.ndjson):
 * `{"e":"depthUpdate","E","T","s","U","u","pu","b","a"}`, where `pu` is the diff chain's
 * previous id (not the previous push's `u`), and every fifth push repeats the last one's ids,
 * as Binance does while the book stands still.
 */
export function partialDepthFeed(
  opts: {
    rate: number;
    levels?: number;
    startId?: number;
    market?: "spot" | "usdm";
    symbol?: string;
  },
): FakeStreamFeed {
  const levels = opts.levels ?? 20;
  const startId = opts.startId ?? 40_000_000_000;
  const usdm = opts.market === "usdm";
  const format = usdm ? USDM_FORMAT : SPOT_FORMAT;
  return {
    rate: opts.rate,
    next(n) {
      // Ids advance by 1..5 per message, as several updates land between snapshots.
      const step = usdm ? n - Math.floor((n + 1) / 5) : n; // USD-M: push 4, 9, 14… repeat
      const id = startId + spanSum(step + 1) - 1;
      const mid = midPrice(step);
      const bids: string[] = [];
      const asks: string[] = [];
      for (let i = 0; i < levels; i++) {
        bids.push(level(format, mid - 1 - i, hash(step, 2 * i)));
        asks.push(level(format, mid + i, hash(step, 2 * i + 1)));
      }
      if (!usdm) {
        return `{"lastUpdateId":${id},"bids":[${bids.join(",")}],"asks":[${asks.join(",")}]}`;
      }
      const first = startId + spanSum(step);
      const now = Date.now();
      const symbol = (opts.symbol ?? "BTCUSDT").toUpperCase();
      return `{"e":"depthUpdate","E":${now},"T":${now - 7},"s":"${symbol}","U":${first},` +
        `"u":${id},"pu":${first - 3},"b":[${bids.join(",")}],"a":[${asks.join(",")}]}`;
    },
  };
}

/**
 * Diff depth (`<sym>@depth@100ms`). Spot: `{"e":"depthUpdate","E","s","U","u","b","a"}`
 * with `U == previous u + 1`. USD-M: adds `"T"` and `"pu" == previous u`, and
 * like the real futures stream `U` sometimes skips ahead, so a client must chain on `pu`.
 * Ids are a pure function of n, so skipped messages still leave a visible gap.
 */
export function diffDepthFeed(
  opts: { rate: number; symbol: string; market?: "spot" | "usdm"; startId?: number },
): FakeStreamFeed {
  const market = opts.market ?? "spot";
  const symbol = opts.symbol.toUpperCase();
  const startId = opts.startId ?? (market === "spot" ? 50_000_000_000 : 5_000_000_000_000);
  const format = market === "spot" ? SPOT_FORMAT : USDM_FORMAT;
  // USD-M: before event i, (i % 3) ids are skipped; spot never skips.
  const skipped = (n: number) => market === "usdm" ? periodicSum(n, 3) : 0;
  /** ids used by events 0..n-1 */
  const consumed = (n: number) => spanSum(n) + skipped(n);
  return {
    rate: opts.rate,
    next(n) {
      const first = startId + consumed(n) + (market === "usdm" ? n % 3 : 0);
      const last = startId + consumed(n + 1) - 1;
      const previousLast = startId + consumed(n) - 1;
      const mid = midPrice(n);
      // 1..6 changed levels per side; every fourth one is a removal (qty 0).
      const bids: string[] = [];
      const asks: string[] = [];
      for (let i = 0; i < 1 + (n % 6); i++) {
        const h = hash(n, i);
        bids.push(level(format, mid - 1 - (h % 200), i % 4 === 3 ? 0 : h));
        asks.push(
          level(format, mid + (hash(n, i + 100) % 200), i % 4 === 3 ? 0 : hash(n, i + 100)),
        );
      }
      const now = Date.now();
      const ids = market === "usdm"
        ? `"E":${now},"T":${now - 1},"s":"${symbol}","U":${first},"u":${last},"pu":${previousLast}`
        : `"E":${now},"s":"${symbol}","U":${first},"u":${last}`;
      return `{"e":"depthUpdate",${ids},"b":[${bids.join(",")}],"a":[${asks.join(",")}]}`;
    },
  };
}

/** Sends the given payload texts in order, byte for byte; when exhausted the stream falls silent. */
export function replayFeed(opts: { rate: number; payloads: readonly string[] }): FakeStreamFeed {
  const payloads = opts.payloads;
  return {
    rate: opts.rate,
    count: payloads.length,
    next(n) {
      if (n >= payloads.length) {
        throw new RangeError(`replay feed has ${payloads.length} payloads, asked for #${n}`);
      }
      return payloads[n];
    },
  };
}

/** One fixture line: its stream (absent for a bare payload line) and its exact `data` text. */
export interface FixtureMessage {
  stream?: string;
  data: string;
}

const COMBINED_LINE = /^\{"stream":"([^"\\]*)","data":/;

/**
 * Reads a tests/fixtures file (`.ndjson` or `.ndjson.gz`) of combined-stream
 * lines `{"stream":"<name>","data":<payload>}` and returns each line's stream
 * and `data` as the exact original substring: archives are compared byte for
 * byte, so re-stringifying (which would change number formatting) is not an
 * option. A line that is not wrapped (a REST snapshot in the mixed file) is
 * returned whole, without a stream.
 */
export async function loadFixtureMessages(path: string | URL): Promise<FixtureMessage[]> {
  const text = await readFixtureText(path);
  const messages: FixtureMessage[] = [];
  for (const rawLine of text.split("\n")) {
    const line = rawLine.endsWith("\r") ? rawLine.slice(0, -1) : rawLine;
    if (line === "") continue;
    const head = COMBINED_LINE.exec(line);
    if (head && line.endsWith("}")) {
      messages.push({ stream: head[1], data: line.slice(head[0].length, -1) });
    } else {
      messages.push({ data: line });
    }
  }
  return messages;
}

/** `loadFixtureMessages` without the stream names: the payloads to hand to `replayFeed`. */
export async function loadFixturePayloads(path: string | URL): Promise<string[]> {
  return (await loadFixtureMessages(path)).map((message) => message.data);
}

async function readFixtureText(path: string | URL): Promise<string> {
  const name = path instanceof URL ? path.pathname : path;
  if (!name.endsWith(".gz")) return await Deno.readTextFile(path);
  // Response.text() drains the stream (which closes the file) and decodes UTF-8.
  const file = await Deno.open(path);
  return await new Response(file.readable.pipeThrough(new DecompressionStream("gzip"))).text();
}

// ---------------------------------------------------------------------------
// Number formatting and deterministic noise

/** Prices are integers in ticks of 10^-priceDecimals; quantities are derived from a hash. */
interface LevelFormat {
  priceDecimals: number;
  priceWidth: number;
  qtyDecimals: number;
  qtyWidth: number;
}
/** Spot writes every number with 8 decimals: "61837.63000000". */
const SPOT_FORMAT: LevelFormat = { priceDecimals: 2, priceWidth: 8, qtyDecimals: 5, qtyWidth: 8 };
/** USD-M writes the instrument's own precision: "61496.50", "0.010". */
const USDM_FORMAT: LevelFormat = { priceDecimals: 2, priceWidth: 2, qtyDecimals: 3, qtyWidth: 3 };

/** `["price","qty"]`; a zero `noise` means a removed level (qty 0). */
function level(format: LevelFormat, priceTicks: number, noise: number): string {
  // qty up to ~5 units, never zero unless asked
  const qty = noise === 0 ? 0 : 1 + (noise % (5 * 10 ** format.qtyDecimals));
  return `["${fixed(priceTicks, format.priceDecimals, format.priceWidth)}","${
    fixed(qty, format.qtyDecimals, format.qtyWidth)
  }"]`;
}

/**
 * Formats an integer count of 10^-decimals units with `width` decimals, using
 * string arithmetic so no float rounding can creep into the text.
 */
function fixed(units: number, decimals: number, width: number): string {
  const digits = Math.abs(Math.trunc(units)).toString().padStart(decimals + 1, "0");
  const whole = digits.slice(0, digits.length - decimals);
  const fraction = digits.slice(digits.length - decimals).padEnd(width, "0");
  return `${units < 0 ? "-" : ""}${whole}.${fraction}`;
}

/** A slow wander around 60,000.00 so consecutive messages look like one market. */
function midPrice(n: number): number {
  return 6_000_000 + Math.round(5_000 * Math.sin(n / 200));
}

/** sum over i < n of (i % m), in O(1) */
function periodicSum(n: number, m: number): number {
  const full = Math.floor(n / m);
  const rest = n % m;
  return full * (m * (m - 1)) / 2 + (rest * (rest - 1)) / 2;
}

/** Message i covers 1 + (i % 5) update ids; this is how many messages 0..n-1 cover. */
function spanSum(n: number): number {
  return n + periodicSum(n, 5);
}

/** A small integer hash: deterministic "random" quantities without a seeded RNG. */
function hash(a: number, b: number): number {
  let h = Math.imul((a % 0x7fffffff) ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 1, 0xc2b2ae35);
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
  return (h ^ (h >>> 16)) >>> 0;
}
