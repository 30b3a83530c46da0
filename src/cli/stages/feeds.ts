/**
 * The feed stage of `run`: everything between Binance and the batcher. It
 * checks the configured symbols against `exchangeInfo`, runs the recorder,
 * the snapshotter (diff mode), the symbol universe with its connections
 * (under one connection-attempt limiter), the `exchangeInfo` refresh, and
 * the tickers of the recorder and the receive clock.
 *
 * Start-up: `Feeds.open` (symbols checked, recorder ready, nothing connected)
 * → `record` (snapshots, connections, refresh, tickers).
 * Shutdown: the supervisor aborts the signal → `stopped` (every connection
 * closed, frames in flight delivered) → `sealAll`. Disposal after an error
 * stops what still runs.
 */

import { getLogger } from "@logtape/logtape";
import { type ExchangeInfo, readExchangeInfo, RestLimiter } from "../../binance/rest.ts";
import { isPattern, type Listing, matchesTerm, namedSymbols } from "../../binance/selection.ts";
import { sequenceRuleFor } from "../../binance/sequence.ts";
import { inShard } from "../../binance/shard.ts";
import { Snapshotter } from "../../binance/snapshots.ts";
import {
  depthStreamType,
  mayBeQuiet,
  parseStreamName,
  planConnection,
  streamBaseUrl,
  SUBSCRIBE_INTERVAL_MS,
  symbolStreams,
} from "../../binance/streams.ts";
import { intervalTicker, type Ticker } from "../../beat.ts";
import type { Config } from "../../config_types.ts";
import { TICK_MS } from "../../feed/clock.ts";
import { type Connection, startConnection, type WebSocketFactory } from "../../feed/connection.ts";
import { AttemptLimiter } from "../../feed/rate_limit.ts";
import { connectionHandlers } from "../../ops/connection_events.ts";
import type { Telemetry } from "../../ops/events.ts";
import type { RecordingState } from "../../ops/http.ts";
import type { Metrics } from "../../ops/metrics.ts";
import { Recorder, type StreamGroup } from "../../feed/recorder.ts";
import { snapshotStreamOf } from "../../archive/meta.ts";
import { Universe } from "../universe.ts";
import { DiffStreams } from "./diff_streams.ts";
import { START_WAIT_MS, StartupError } from "./startup.ts";
import { settledWithin } from "../../delay.ts";
import type { BatchStore } from "./storage.ts";

const EXCHANGE_INFO_TIMEOUT_MS = 20_000;

const log = getLogger(["l2", "run"]);

/** How often open batches are checked for their age: a batch seals at most this late. */
const SEAL_TICK_MS = 250;

export interface FeedsOptions {
  /** Aborted by the supervisor at shutdown: connections, snapshots and the refresh stop. */
  readonly signal: AbortSignal;
  /** A shutdown asked for during start-up: the symbol check stops waiting for Binance. */
  readonly interrupt?: AbortSignal;
  readonly store: BatchStore;
  readonly metrics: Metrics;
  /** Named events: log lines, metrics, and the state health reads. */
  readonly telemetry: Telemetry;
  /** Wall-clock ms. */
  readonly now: () => number;
  readonly webSocket?: WebSocketFactory;
  readonly fetch?: typeof fetch;
  /** Runs the seal tick and the receive clock's tick (default: a timer for each). */
  readonly ticker?: Ticker;
}

/** The receive clock as the feeds use it: stamps, and a tick to keep it current. */
export interface ReceiveTicks {
  readonly nowMicros: () => number;
  tick(): void;
}

export class Feeds implements AsyncDisposable {
  readonly recorder: Recorder;
  readonly #config: Config;
  readonly #options: FeedsOptions;
  readonly #restLimiter: RestLimiter;
  readonly #listing: readonly Listing[] | undefined;
  readonly #diffs: DiffStreams;
  readonly #stop = new AbortController();
  readonly #signal: AbortSignal;
  readonly #tickers: Disposable[] = [];
  #universe: Universe | undefined;
  #snapshotter: Snapshotter | undefined;
  #following: Promise<void> | undefined;

  /** The symbols checked (unknown ones stop the start), the recorder ready; nothing connected yet. */
  static async open(config: Config, options: FeedsOptions): Promise<Feeds> {
    const restLimiter = new RestLimiter({ market: config.market, fetch: options.fetch });
    const listing = await checkConfiguredSymbols(config, restLimiter, options.interrupt);
    return new Feeds(config, options, restLimiter, listing);
  }

  /** Every REST call of the run goes through it (clock readings too: a ban holds them all). */
  get restLimiter(): RestLimiter {
    return this.#restLimiter;
  }

  private constructor(
    config: Config,
    options: FeedsOptions,
    restLimiter: RestLimiter,
    listing: readonly Listing[] | undefined,
  ) {
    this.#config = config;
    this.#options = options;
    this.#restLimiter = restLimiter;
    this.#listing = listing;
    this.#signal = AbortSignal.any([options.signal, this.#stop.signal]);
    this.#diffs = new DiffStreams(depthStreamType(config.market, config));
    const { metrics, telemetry, store } = options;
    this.recorder = new Recorder({
      batcher: store.batcher,
      metrics,
      submit: (b) => store.submit(b),
      ruleFor: (stream) => {
        const spec = parseStreamName(stream);
        return spec ? sequenceRuleFor(config.market, spec.type) : undefined;
      },
      // Only the diff depth stream needs a book snapshot (not trades, not the ticker).
      onChainStart: (stream) => this.#diffs.chainStarted(stream),
      eventTimeUnit: config.timeUnit,
      onExchangeLag: (seconds) => telemetry.exchangeLagSampled(seconds),
      onGap: (stream, gap) => telemetry.gapDetected(stream, gap),
    });
  }

  /** Streams recorded now ([] before `record`). */
  streams(): readonly string[] {
    return this.#universe?.streams ?? [];
  }

  /** The recorded set for /status (status may be asked before recording starts). */
  recording(): RecordingState {
    return {
      symbols: this.#universe?.symbols.length ?? 0,
      streams: this.#universe?.streams.length ?? 0,
      awaitingFirstSnapshot: this.#config.depthLevel === "full" ? this.#diffs.awaiting() : [],
    };
  }

  /**
   * After a suspension every connection is replaced at once (not after
   * STALE_AFTER_SECONDS), and diff streams get fresh snapshots.
   */
  suspended(): void {
    this.#universe?.replaceAll("suspended");
    this.#diffs.suspended();
  }

  /** Snapshots (diff mode), the selected symbols' connections, the refresh, the tickers. */
  record(clock: ReceiveTicks): void {
    const config = this.#config;
    if (config.depthLevel === "full") {
      this.#snapshotter = this.#newSnapshotter(clock.nowMicros);
      this.#diffs.requestFrom(this.#snapshotter);
    }
    const universe = this.#newUniverse(clock.nowMicros);
    this.#universe = universe;
    if (this.#listing) {
      universe.update(this.#listing, { quiet: true });
    } else {
      // exchangeInfo unread: the named symbols of this shard now, patterns at the first refresh.
      universe.startUnlisted(
        namedSymbols(config.symbols).filter((s) =>
          inShard(s, config.shard) && !config.symbolExclude.some((t) => matchesTerm(s, t))
        ),
      );
    }
    const { sink } = this.#options.store;
    log.info("Recording {count} {market} streams ({first}…) to {sink} {location}", {
      count: universe.streams.length,
      market: config.market,
      first: universe.streams[0],
      sink: sink.kind,
      location: sink.location,
      instanceId: config.instanceId,
      shard: `${config.shard.index}/${config.shard.count}`,
    });
    this.#following = this.#followExchangeInfo(universe);
    const ticker = this.#options.ticker ?? intervalTicker;
    this.#tickers.push(ticker.every(SEAL_TICK_MS, () => this.recorder.tick()));
    clock.tick();
    this.#tickers.push(ticker.every(TICK_MS, () => clock.tick()));
  }

  /** After the signal aborted: every connection closed, the refresh and the snapshots ended. */
  async stopped(): Promise<void> {
    await this.#following;
    await this.#universe?.done;
    await this.#snapshotter?.done;
    this.#clearTickers();
  }

  /** Seals every open batch (frames in flight have arrived). */
  sealAll(): void {
    this.recorder.sealAll();
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.#stop.abort();
    this.#clearTickers();
    return Promise.resolve();
  }

  #clearTickers(): void {
    for (const ticker of this.#tickers.splice(0)) ticker[Symbol.dispose]();
  }

  #newSnapshotter(nowMicros: () => number): Snapshotter {
    const config = this.#config;
    const diffs = this.#diffs;
    return new Snapshotter({
      restUrl: config.restUrl,
      market: config.market,
      limit: config.snapshotLimit,
      intervalMs: config.snapshotIntervalSeconds * 1000,
      limiter: this.#restLimiter,
      nowMicros,
      signal: this.#signal,
      chainStart: (symbol) => {
        const stream = diffs.streamOf(symbol);
        return stream === undefined ? undefined : this.recorder.chainStart(stream);
      },
      onSnapshot: (symbol, text, recvTs) => {
        const stream = diffs.streamOf(symbol);
        if (stream) {
          this.recorder.snapshot(stream, snapshotStreamOf(symbol), text, recvTs);
          diffs.stored(symbol);
        }
      },
    });
  }

  #newUniverse(nowMicros: () => number): Universe {
    const config = this.#config;
    const { store } = this.#options;
    // Binance allows 300 connection attempts per 5 minutes per IP; keep well under.
    const attempts = new AttemptLimiter({ max: 250, windowMs: 300_000 });
    return new Universe({
      rules: { include: config.symbols, exclude: config.symbolExclude, shard: config.shard },
      streamsOf: (symbol: string) => symbolStreams(symbol, config),
      streamsPerConnection: config.streamsPerConnection,
      baseOf: (stream) => streamBaseUrl(config.wsUrl, config.market, stream),
      recorder: this.recorder,
      signal: this.#signal,
      nowMicros,
      onStreams: (change) => {
        this.#diffs.changed(change);
        this.#options.telemetry.streamsChanged({
          added: change.added,
          count: this.#universe?.streams.length ?? 0,
          sink: store.sink.kind,
        });
      },
      connect: (group, signal) => this.#connect(group, signal, { attempts, nowMicros }),
    });
  }

  /** One connection of a stream group, its events wired to the recorder and the telemetry. */
  #connect(
    group: StreamGroup,
    signal: AbortSignal,
    context: { attempts: AttemptLimiter; nowMicros: () => number },
  ): Connection {
    const config = this.#config;
    const { attempts, nowMicros } = context;
    const base = streamBaseUrl(config.wsUrl, config.market, group.names[0]);
    const plan = planConnection(base, group.names, { timeUnit: config.timeUnit });
    return startConnection({
      url: plan.url,
      subscribe: plan.subscribe,
      subscribeIntervalMs: SUBSCRIBE_INTERVAL_MS[config.market],
      signal,
      staleAfterMs: config.staleAfterSeconds * 1000,
      ticker: this.#options.ticker,
      // Trades and book tickers alone may be silent for minutes: a silent socket is asked first.
      quietAllowed: mayBeQuiet(group.names),
      rotateAfterMs: config.wsRotateSeconds * 1000,
      beforeConnect: (signal) => attempts.take(signal),
      webSocket: this.#options.webSocket,
      nowMicros,
      handlers: connectionHandlers({
        group,
        inUrl: plan.inUrl,
        recorder: this.recorder,
        telemetry: this.#options.telemetry,
        nowMicros,
      }),
    });
  }

  #followExchangeInfo(universe: Universe): Promise<void> {
    const config = this.#config;
    return universe.follow({
      read: async (signal) =>
        (await readExchangeInfo({
          restUrl: config.restUrl,
          market: config.market,
          limiter: this.#restLimiter,
          signal: AbortSignal.any([signal, AbortSignal.timeout(20_000)]),
        })).listed,
      intervalMs: config.exchangeInfoRefreshSeconds * 1000,
      signal: this.#signal,
    });
  }
}

/**
 * Reads `exchangeInfo` for the start. Unknown symbols named in SYMBOL stop
 * the start (exit 2); patterns name none. A listed symbol that is not
 * trading (HALT, BREAK, CANCEL_ONLY…) still exists and may trade again, so a
 * named one is recorded, with one WARN (BINANCE.md, Payloads). An exchange
 * that cannot be asked does not stop the start either (the named symbols are
 * recorded; patterns resolve at the first refresh that succeeds), nor one
 * that has not begun to answer within `START_WAIT_MS` when SYMBOL names
 * every symbol (its late answer is judged in the log; an answer begun in
 * time is read to its end, so a slow link still refuses unknown symbols).
 * The weight limit `exchangeInfo` lists replaces the documented default.
 */
async function checkConfiguredSymbols(
  config: Config,
  limiter: RestLimiter,
  interrupt?: AbortSignal,
): Promise<readonly Listing[] | undefined> {
  const timeout = AbortSignal.timeout(EXCHANGE_INFO_TIMEOUT_MS);
  let answered = () => {};
  const answer = new Promise<void>((resolve) => answered = resolve);
  const reading: Promise<{ info: ExchangeInfo } | { error: unknown }> = readExchangeInfo({
    restUrl: config.restUrl,
    market: config.market,
    limiter,
    signal: interrupt ? AbortSignal.any([timeout, interrupt]) : timeout,
    onAnswer: answered,
  }).then((info) => ({ info }), (error) => ({ error }));
  // Named symbols only: a REST that has not begun to answer within START_WAIT_MS is
  // not waited for; one that has (a slow link, a large listing) is, as a refusal must be.
  const namesAll = config.symbols.every((term) => !isPattern(term));
  const begun = namesAll
    ? await settledWithin(Promise.race([answer, reading]).then(() => true), START_WAIT_MS)
    : true;
  const read = begun ? await reading : undefined;
  if (interrupt?.aborted) return undefined;
  if (read === undefined) {
    log.warn(
      "Binance has not answered exchangeInfo in {seconds} s; recording the named symbols anyway",
      { seconds: START_WAIT_MS / 1000 },
    );
    reading.then((late) => {
      if (interrupt?.aborted || !("info" in late)) return;
      try {
        judgeListing(config, limiter, late.info);
      } catch (error) {
        log.error("{message}; recording them anyway", { message: (error as Error).message });
      }
    });
    return undefined;
  }
  if ("error" in read) {
    const { error } = read;
    log.warn("Could not check the symbols against exchangeInfo ({error}); recording anyway", {
      error: error instanceof Error ? error.message : String(error),
    });
    return undefined;
  }
  return judgeListing(config, limiter, read.info);
}

/** Applies the listing's weight limit; unknown named symbols throw, those not trading warn. */
function judgeListing(config: Config, limiter: RestLimiter, info: ExchangeInfo): Listing[] {
  if (info.weightLimit !== undefined) limiter.setWeightLimit(info.weightLimit);
  const status = new Map(info.listed.map((l) => [l.symbol, l.status]));
  const named = namedSymbols(config.symbols);
  const unknown = named.filter((s) => !status.has(s));
  if (unknown.length > 0) {
    const listed = unknown.map((s) => `${s} (not listed on ${config.market})`);
    throw new StartupError(`SYMBOL lists symbols Binance does not list: ${listed.join(", ")}`);
  }
  for (const symbol of named) {
    if (status.get(symbol) === "TRADING") continue;
    log.warn("{symbol} is listed with status {status}, not TRADING; recording it anyway", {
      symbol,
      status: status.get(symbol),
    });
  }
  return [...info.listed];
}
