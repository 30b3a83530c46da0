/**
 * The operations stage of `run`: what watches the recorder rather than
 * records. The restart history, the power assertion (macOS), the health
 * tracker and the activity list from `Ops.open`; from `start`, the watch on
 * Binance's clock, the receive clock with its suspension handling, the HTTP
 * status server and the health loop with its alerts.
 *
 * It stops last: disposal releases the power assertion, stops the loops
 * (an alert in flight may not hold up the exit) and waits for the server.
 */

import { getLogger } from "@logtape/logtape";
import { watchClock } from "../../binance/clock.ts";
import type { RestLimiter } from "../../binance/rest.ts";
import type { Config } from "../../config_types.ts";
import { delay } from "../../delay.ts";
import type { ReceiveClock } from "../../feed/clock.ts";
import type { Activity } from "../../ops/activity.ts";
import { Telemetry } from "../../ops/events.ts";
import { AlertNotifier, watchHealth } from "../../ops/alerts.ts";
import { exposureWarning } from "../../ops/exposure.ts";
import { HealthTracker } from "../../ops/health.ts";
import {
  handler as opsHandler,
  observe,
  type OpsAddress,
  type OpsDeps,
  type OpsServer,
  type RecordingState,
  serveOps,
} from "../../ops/http.ts";
import type { Metrics } from "../../ops/metrics.ts";
import { preventSleep, type SleepGuard } from "../../ops/power.ts";
import { redactUrls } from "../../ops/redact.ts";
import { countRestarts, recordCleanStop, recordStart } from "../../ops/restarts.ts";
import { writeLastReceive } from "../../ops/receive_state.ts";
import type { Recorder } from "../../feed/recorder.ts";
import { clockStepped, startClock } from "../suspension.ts";
import { StartupError } from "./startup.ts";

const log = getLogger(["l2", "run"]);

export interface OpsOptions {
  /** Aborted by the supervisor once uploads are flushed: the loops and the server stop. */
  readonly signal: AbortSignal;
  readonly metrics: Metrics;
  /** Wall-clock ms for health, restart history and alerts. */
  readonly now: () => number;
  /** Clocks the receive clock reads (tests step the wall clock). */
  readonly wallMs?: () => number;
  readonly monotonicMs?: () => number;
  /** Shown by /status. */
  readonly version?: string;
}

/** What the status page reads of storage. */
export interface StorageView {
  backlog(): number;
  readonly spoolMaxBytes: number | undefined;
  openBatches(): { bytes: number; textBytes: number };
  /** The last receive time of the run before, µs: the receive clock continues after it. */
  readonly receivedUntil?: number;
}

/** What the status page and the receive clock need of the feeds. */
export interface FeedsView {
  readonly recorder: Recorder;
  /** The run's REST limiter: the clock watch's calls wait out a ban with the others. */
  readonly restLimiter: RestLimiter;
  streams(): readonly string[];
  recording(): RecordingState;
  /** The machine resumed: replace every connection, fresh snapshots. */
  suspended(): void;
}

type RestartHistory = Awaited<ReturnType<typeof recordStart>>;

export class Ops implements AsyncDisposable {
  /** Named events; their state is what health and /status read. */
  readonly telemetry: Telemetry;
  readonly #config: Config;
  readonly #options: OpsOptions;
  readonly #history: RestartHistory;
  readonly #startedAt: number;
  readonly #tracker: HealthTracker;
  readonly #awake: SleepGuard;
  readonly #stop = new AbortController();
  readonly #signal: AbortSignal;
  #clockLoop: Promise<void> | undefined;
  #healthLoop: Promise<void> | undefined;
  #server: OpsServer | undefined;
  #clock: ReceiveClock | undefined;
  /** Reports the wall clock found behind the run before's last receive time (see `start`). */
  #stepBack: (() => void) | undefined;

  /** The start noted in the restart history, the power assertion held. */
  static async open(config: Config, options: OpsOptions): Promise<Ops> {
    const startedAt = options.now();
    const history = await recordStart(config.dataDir, startedAt);
    if (history.restartsLastHour > 0) {
      log.warn("This is restart {restarts} within the last hour", {
        restarts: history.restartsLastHour,
      });
    }
    return new Ops(config, options, { startedAt, history });
  }

  /** Gaps, disconnects and the messages/s chart for the status page. */
  get activity(): Activity {
    return this.telemetry.activity;
  }

  private constructor(
    config: Config,
    options: OpsOptions,
    start: { startedAt: number; history: RestartHistory },
  ) {
    this.#config = config;
    this.#options = options;
    this.#history = start.history;
    this.#startedAt = start.startedAt;
    this.#tracker = new HealthTracker(start.startedAt);
    this.telemetry = new Telemetry({
      metrics: options.metrics,
      market: config.market,
      now: options.now,
      tracker: this.#tracker,
    });
    this.#signal = AbortSignal.any([options.signal, this.#stop.signal]);
    // macOS: a power assertion for as long as this process records.
    this.#awake = preventSleep({ enabled: config.preventSleep });
  }

  /**
   * Notes in the restart history that this run stopped cleanly, so the next
   * start is not counted as a restart, and stores its last receive time for
   * the next run to continue from: called once the shutdown ran to the end
   * and every stage is disposed (it needs nothing of them).
   */
  get noteCleanStop(): () => Promise<void> {
    const { dataDir } = this.#config;
    const startedAt = this.#startedAt;
    return async () => {
      const lastRecvTs = this.#clock?.lastGivenUs;
      if (lastRecvTs !== undefined) await writeLastReceive(dataDir, lastRecvTs);
      await recordCleanStop(dataDir, startedAt);
    };
  }

  /** Where the status server listens (the real port when METRICS_ADDR asked for 0); undefined when off. */
  get address(): OpsAddress | undefined {
    return this.#server?.addr;
  }

  /** Clock watch, receive clock, status server (a bad METRICS_ADDR stops the start), health loop. */
  start(storage: StorageView, feeds: FeedsView): ReceiveClock {
    const config = this.#config;
    this.#clockLoop = watchClock({
      restUrl: config.restUrl,
      market: config.market,
      limiter: feeds.restLimiter,
      signal: this.#signal,
      onOffset: (seconds) => this.telemetry.clockOffsetMeasured(seconds),
    });
    const wiring = {
      config,
      streams: () => feeds.streams(),
      recorder: feeds.recorder,
      telemetry: this.telemetry,
      wallMs: this.#options.wallMs,
      monotonicMs: this.#options.monotonicMs,
      onSuspended: () => feeds.suspended(),
    };
    const clock = startClock(wiring);
    this.#clock = clock;
    const until = storage.receivedUntil;
    const stepBack = until === undefined ? undefined : clock.continueFrom(until);
    if (stepBack) this.#stepBack = () => clockStepped(wiring, stepBack);
    const deps = this.#deps(storage, feeds);
    this.#serve(deps);
    this.#watchHealth(deps);
    return clock;
  }

  /**
   * The feeds record: the streams are known. A wall clock found at start
   * behind the last receive time of the run before is reported now, with a
   * `clock_step` line in every stream.
   */
  recordingStarted(): void {
    this.#stepBack?.();
    this.#stepBack = undefined;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#awake.release();
    this.#stop.abort();
    // An alert POST in flight (10 s timeout) must not hold up the exit.
    await Promise.race([this.#healthLoop, delay(1000)]);
    await Promise.race([this.#clockLoop, delay(1000)]);
    await this.#server?.finished;
  }

  #deps(storage: StorageView, feeds: FeedsView): OpsDeps {
    const { metrics, now } = this.#options;
    return {
      metrics,
      telemetry: this.telemetry,
      tracker: this.#tracker,
      version: this.#options.version ?? "dev",
      instanceId: this.#config.instanceId,
      backlog: () => storage.backlog(),
      spoolMaxBytes: storage.spoolMaxBytes,
      restartsLastHour: (at) => countRestarts(this.#history, at),
      messageAges: () => feeds.recorder.messageAges(),
      openBatches: () => storage.openBatches(),
      recording: () => feeds.recording(),
      now,
      activity: this.telemetry.activity,
    };
  }

  /** The status page, /metrics, /healthz and /status, when METRICS_ADDR is not off. */
  #serve(deps: OpsDeps): void {
    const addr = this.#config.metrics;
    if (!addr) return;
    const exposed = exposureWarning(addr);
    if (exposed) log.warn("{warning}", { warning: exposed });
    try {
      this.#server = serveOps(addr, redactingHandler(opsHandler(deps)), this.#signal);
    } catch (error) {
      throw new StartupError((error as Error).message);
    }
  }

  /** Also with METRICS_ADDR=off: health changes are still logged and alerted. */
  #watchHealth(deps: OpsDeps): void {
    const config = this.#config;
    this.#healthLoop = watchHealth({
      evaluate: async (at) => (await observe(deps, at)).health,
      notifier: config.alertWebhookUrl
        ? new AlertNotifier({ url: config.alertWebhookUrl, instanceId: config.instanceId })
        : undefined,
      signal: this.#signal,
      now: this.#options.now,
    });
  }
}

/** The ops endpoint's answers, with no URL password in them whatever they come to quote. */
function redactingHandler(
  handle: (req: Request) => Response | Promise<Response>,
): (req: Request) => Promise<Response> {
  return async (req) => {
    const response = await handle(req);
    if (response.body === null) return response;
    const text = await response.text();
    const headers = new Headers(response.headers);
    headers.delete("content-length");
    return new Response(redactUrls(text), {
      status: response.status,
      statusText: response.statusText,
      headers,
    });
  };
}
