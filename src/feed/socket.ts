/**
 * One WebSocket from open to close: frames handed over with their receive
 * time, a watchdog for silence, live subscriptions, and a polite close that
 * still delivers frames already in flight. Resolves with how it ended; what
 * follows (reconnect, rotation) is the connection's business.
 */

import { getLogger } from "@logtape/logtape";
import { tickerFor } from "../beat.ts";
import { isStale, watchEveryMs, watchRound } from "./reconnect.ts";
import { controlReply, Subscriber } from "./subscribe.ts";
import type { CloseCause, CloseInfo, ConnectionOptions } from "./connection_types.ts";

const log = getLogger(["l2", "feed"]);

const decoder = new TextDecoder();

export const defaultNowMicros = (): number =>
  Math.round((performance.timeOrigin + performance.now()) * 1000);

export interface Outcome {
  readonly opened: boolean;
  /** A frame came (or a liveness question was answered): the socket delivered. */
  readonly delivered?: boolean;
  readonly close: CloseInfo;
}

export interface SocketHooks {
  /** Aborts to close the socket politely. */
  readonly stop: AbortSignal;
  readonly stopCause: () => CloseCause;
  readonly onOpen: () => void;
  readonly onFrame: (text: string, recvTs: number) => void;
  readonly onSubscribed: (streams: readonly string[]) => void;
}

/** Opens one socket and resolves when it has closed (for whatever reason). */
export function connectOnce(options: ConnectionOptions, hooks: SocketHooks): Promise<Outcome> {
  let ws: WebSocket;
  try {
    ws = (options.webSocket ?? ((url) => new WebSocket(url)))(options.url);
  } catch (error) {
    // A URL the constructor refuses (a stream name with `#`, say). Reported on
    // a later turn, as a socket's own failure is: the caller has kept the
    // socket it was opening by then, so it is retried like any other.
    const outcome: Outcome = {
      opened: false,
      close: { cause: "error", code: 0, reason: String(error), uptimeMs: 0 },
    };
    return new Promise((resolve) => setTimeout(() => resolve(outcome), 0));
  }
  return new SocketRun(ws, options, hooks).outcome;
}

/**
 * Ids of liveness questions: far above the ids of `SUBSCRIBE` messages (one
 * per batch, from 1), unique within the process.
 */
let nextProbeId = 1_000_000_000;
/** Questions whose answers are still awaited, per socket, at most. */
const MAX_UNANSWERED = 16;

class SocketRun {
  readonly outcome: Promise<Outcome>;
  readonly #ws: WebSocket;
  readonly #options: ConnectionOptions;
  readonly #hooks: SocketHooks;
  readonly #monotonic: () => number;
  readonly #nowMicros: () => number;
  readonly #timers: ReturnType<typeof setTimeout>[] = [];
  readonly #onStop = () => this.#closeWith(this.#hooks.stopCause());
  #resolve!: (outcome: Outcome) => void;
  #openedAt: number | undefined;
  /**
   * When the last frame came, monotonic ms (moved on by time the process did
   * not run), as the watchdog saw it: the round after a frame, not the frame
   * itself, so a frame costs no clock reading. A stale socket is then found
   * up to one round later (a quarter of `staleAfterMs`, at most 1 s), never
   * earlier.
   */
  #lastFrameAt: number;
  /** A frame came since the watchdog last looked. */
  #framed = false;
  /** A frame came at all (an acknowledged `SUBSCRIBE` is not one). */
  #delivered = false;
  /** When the watchdog last looked. */
  #watchedAt: number;
  #cause: CloseCause | undefined;
  #lastError = "";
  #settled = false;
  #watchdog: Disposable | undefined;
  #subscriber: Subscriber | undefined;
  /** `quietAllowed`: the liveness question in flight (its id and when it went), if any. */
  #probe: { id: number; sentAt: number } | undefined;
  /** Ids of questions whose answers are still to come (a frame answered them first). */
  readonly #unanswered = new Set<number>();

  constructor(ws: WebSocket, options: ConnectionOptions, hooks: SocketHooks) {
    this.outcome = new Promise((resolve) => this.#resolve = resolve);
    this.#ws = ws;
    this.#options = options;
    this.#hooks = hooks;
    this.#monotonic = options.monotonicMs ?? (() => performance.now());
    this.#nowMicros = options.nowMicros ?? defaultNowMicros;
    this.#lastFrameAt = this.#watchedAt = this.#monotonic();
    // Binance sends text frames only. Should a binary one come, it is read as
    // UTF-8 (a leading BOM dropped, invalid bytes as U+FFFD), not lost.
    ws.binaryType = "arraybuffer";
    hooks.stop.addEventListener("abort", this.#onStop, { once: true });
    if (hooks.stop.aborted) this.#onStop();
    this.#timers.push(setTimeout(() => {
      if (this.#openedAt === undefined) this.#closeWith("open-timeout");
    }, options.openTimeoutMs ?? 10_000));
    const everyMs = watchEveryMs(options.staleAfterMs);
    // On the recorder's beat when it can run it: a quiet process wakes once less a second per socket.
    this.#watchdog = tickerFor(everyMs, options.ticker).every(everyMs, () => this.#watch(everyMs));
    ws.onopen = () => this.#opened();
    ws.onmessage = (event: MessageEvent) => this.#message(event);
    ws.onerror = (event: Event) => this.#error(event);
    ws.onclose = (event: CloseEvent) => this.#finish(event.code, event.reason);
  }

  #opened(): void {
    this.#lastFrameAt = this.#openedAt = this.#monotonic();
    this.#hooks.onOpen();
    const batches = this.#options.subscribe ?? [];
    if (batches.length === 0) return;
    this.#subscriber = new Subscriber({
      url: this.#options.url,
      batches,
      intervalMs: this.#options.subscribeIntervalMs ?? 334,
      timeoutMs: this.#options.subscribeTimeoutMs ?? 10_000,
      monotonic: this.#monotonic,
      stop: this.#hooks.stop,
      alive: () => !this.#settled && this.#cause === undefined,
      send: (text) => this.#ws.send(text),
      onSubscribed: this.#hooks.onSubscribed,
      onFailed: () => this.#closeWith("subscribe-failed", 4001),
    });
    this.#subscriber.run();
  }

  #message(event: MessageEvent): void {
    const recvTs = this.#nowMicros();
    this.#framed = true;
    const data = event.data;
    const text = typeof data === "string"
      ? data
      : decoder.decode(data instanceof ArrayBuffer ? data : new Uint8Array(0));
    if (this.#subscriber?.isAnswer(text)) return;
    this.#delivered = true;
    if (this.#unanswered.size > 0 && this.#isProbeAnswer(text)) return;
    this.#hooks.onFrame(text, recvTs);
  }

  #error(event: Event): void {
    this.#cause ??= "error";
    const message = (event as ErrorEvent).message || "websocket error";
    this.#lastError = message;
    log.debug("WebSocket error on {url}: {message}", { url: this.#options.url, message });
  }

  /** A watchdog round: a socket silent for `staleAfterMs` is closed as stale. */
  #watch(everyMs: number): void {
    const now = this.#monotonic();
    const round = watchRound(
      { lastFrameAt: this.#lastFrameAt, watchedAt: this.#watchedAt },
      now,
      everyMs,
    );
    const silence = this.#framed ? { ...round, lastFrameAt: now } : round;
    // Any frame (an answer too) shows the socket alive: a question in flight is settled.
    if (this.#framed) this.#probe = undefined;
    this.#framed = false;
    this.#lastFrameAt = silence.lastFrameAt;
    this.#watchedAt = silence.watchedAt;
    if (this.#openedAt === undefined || this.#cause !== undefined) return;
    if (!isStale(silence, now, this.#options.staleAfterMs)) return;
    if (this.#options.quietAllowed && this.#askAlive(now)) return;
    log.warn("No frame for {silentMs} ms on {url}; replacing the connection", {
      silentMs: Math.round(now - silence.lastFrameAt),
      url: this.#options.url,
    });
    this.#closeWith("stale", 4000);
  }

  /**
   * A silent socket whose streams may be quiet: sends `LIST_SUBSCRIPTIONS`
   * (Binance answers `{"result":[…],"id":n}`) and gives it `probeTimeoutMs`
   * to answer. False when the question went unanswered: the socket is stale.
   */
  #askAlive(now: number): boolean {
    const probe = this.#probe;
    if (probe) return now - probe.sentAt < (this.#options.probeTimeoutMs ?? 10_000);
    const id = nextProbeId++;
    try {
      this.#ws.send(JSON.stringify({ method: "LIST_SUBSCRIPTIONS", id }));
    } catch {
      return false;
    }
    this.#probe = { id, sentAt: now };
    this.#unanswered.add(id);
    if (this.#unanswered.size > MAX_UNANSWERED) {
      this.#unanswered.delete(this.#unanswered.values().next().value!);
    }
    log.debug("No frame on {url} for a while; asking whether it is alive", {
      url: this.#options.url,
    });
    return true;
  }

  /** Whether `text` answers one of the liveness questions (then it is not a frame to record). */
  #isProbeAnswer(text: string): boolean {
    const reply = controlReply(text);
    const id = reply?.id;
    if (typeof id !== "number" || !this.#unanswered.delete(id)) return false;
    if (this.#probe?.id === id) this.#probe = undefined;
    // Alive, but subscribed to nothing (Binance dropped the streams): as good as stale.
    if (Array.isArray(reply?.result) && reply.result.length === 0 && this.#cause === undefined) {
      log.warn("{url} answers but carries no stream any more; replacing the connection", {
        url: this.#options.url,
      });
      this.#closeWith("stale", 4000);
    }
    return true;
  }

  /**
   * Closing politely still delivers frames already in flight (the socket
   * keeps dispatching while CLOSING); a peer that never answers the close
   * is given up on after a short wait.
   */
  #closeWith(why: CloseCause, code = 1000): void {
    this.#cause ??= why;
    try {
      this.#ws.close(code);
    } catch {
      // already closing
    }
    this.#timers.push(
      setTimeout(
        () => this.#finish(1006, `no close from peer (${why})`),
        this.#options.closeTimeoutMs ?? 2000,
      ),
    );
  }

  #finish(code: number, reason: string): void {
    if (this.#settled) return;
    this.#settled = true;
    for (const t of this.#timers) clearTimeout(t);
    this.#subscriber?.close("the socket closed");
    this.#watchdog?.[Symbol.dispose]();
    this.#hooks.stop.removeEventListener("abort", this.#onStop);
    const ws = this.#ws;
    ws.onmessage =
      ws.onopen =
      ws.onerror =
      ws.onclose =
        null;
    const openedAt = this.#openedAt;
    const uptimeMs = openedAt === undefined ? 0 : this.#monotonic() - openedAt;
    this.#resolve({
      opened: openedAt !== undefined,
      delivered: this.#delivered,
      close: {
        cause: this.#cause ?? "server",
        code,
        reason: reason || this.#lastError,
        uptimeMs,
      },
    });
  }
}
