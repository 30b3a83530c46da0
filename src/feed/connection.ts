/**
 * One logical WebSocket connection (a fixed set of streams) kept alive for
 * as long as `signal` is not aborted: open, watch for silence, reconnect with
 * backoff, and rotate before Binance's 24-hour cut without a hole.
 *
 * Every frame is handed over synchronously with the receive time taken the
 * moment it arrived and the id of the socket it came on; nothing here waits
 * on storage.
 *
 * Reconnect policy: the first attempt after a socket that stayed up for
 * `healthyAfterMs` is immediate (the hole should be as short as possible);
 * each further failure waits an exponential backoff with full jitter, 1 s
 * doubling up to 5 min (cockatiel's generator, not hand-rolled maths).
 *
 * Rotation: `rotateAfterMs` after the primary socket opened, or when
 * `rotate()` is called (Binance announced `serverShutdown`), a successor
 * socket opens for the same streams while the primary keeps running. The
 * caller watches both and calls `retire(primaryId)` once the successor has
 * caught up on every stream; the successor then becomes the primary and the
 * old socket is closed. If that does not happen within `maxOverlapMs`, the
 * old socket is retired anyway.
 *
 * Live subscriptions: streams that do not fit in the URL (Binance refuses
 * long ones) are added on every socket right after it opens, one `SUBSCRIBE`
 * message at a time, each sent only after the previous one was acknowledged
 * and at most one per `subscribeIntervalMs` (Binance counts every incoming
 * message against 5/s spot, 10/s USD-M). A refusal or a missing answer
 * closes the socket ("subscribe-failed") and the usual reconnect follows.
 */

import { getLogger } from "@logtape/logtape";
import { ExponentialBackoff, fullJitterGenerator, type IBackoff } from "cockatiel";
import { delay } from "../delay.ts";

const log = getLogger(["l2", "feed"]);

export type WebSocketFactory = (url: string) => WebSocket;

export type CloseCause =
  | "server"
  | "stale"
  | "error"
  | "shutdown"
  | "open-timeout"
  | "rotated"
  | "subscribe-failed"
  | "suspended";

/** Why a socket was opened. */
export type SocketRole = "initial" | "reconnect" | "successor";

export interface OpenInfo {
  readonly url: string;
  /** Sockets opened so far by this connection, this one included. */
  readonly opened: number;
  readonly socketId: number;
  readonly role: SocketRole;
}

export interface CloseInfo {
  readonly cause: CloseCause;
  readonly code: number;
  readonly reason: string;
  /** How long the socket was open, ms (0 when it never opened). */
  readonly uptimeMs: number;
  /** Delay before the next attempt, ms (absent when no attempt follows). */
  readonly retryInMs?: number;
  readonly socketId?: number;
  readonly role?: SocketRole;
  /** A successor took over the streams: this close leaves no hole. */
  readonly replaced?: boolean;
}

export interface ConnectionHandlers {
  /** A text frame; `recvTs` is µs since the epoch on the local clock. */
  onFrame(text: string, recvTs: number, socketId: number): void;
  onOpen(info: OpenInfo): void;
  /** Only for sockets that had opened. */
  onClose(info: CloseInfo): void;
  /** An attempt that never opened. */
  onConnectFailed?(info: CloseInfo): void;
  /** Binance acknowledged a live `SUBSCRIBE` of `streams` on a socket. */
  onSubscribed?(info: { socketId: number; role: SocketRole; streams: readonly string[] }): void;
}

export interface ConnectionOptions {
  readonly url: string;
  readonly handlers: ConnectionHandlers;
  readonly signal: AbortSignal;
  readonly staleAfterMs: number;
  readonly healthyAfterMs?: number;
  readonly openTimeoutMs?: number;
  readonly closeTimeoutMs?: number;
  readonly backoffInitialMs?: number;
  readonly backoffMaxMs?: number;
  /** Open a successor this long after the primary opened; default never. */
  readonly rotateAfterMs?: number;
  /** Longest a primary and its successor both run before the old one is retired. */
  readonly maxOverlapMs?: number;
  /** Streams to add by live `SUBSCRIBE` messages, one message per entry. */
  readonly subscribe?: readonly (readonly string[])[];
  /** Least time between two `SUBSCRIBE` messages, ms (default 250: 4/s). */
  readonly subscribeIntervalMs?: number;
  /** How long an acknowledgement may take, ms (default 10 s). */
  readonly subscribeTimeoutMs?: number;
  /** Awaited before every socket is opened (a shared connection-rate limit). */
  readonly beforeConnect?: (signal: AbortSignal) => Promise<void>;
  readonly webSocket?: WebSocketFactory;
  /** Wall clock for receive times, µs since the epoch. */
  readonly nowMicros?: () => number;
  /** Monotonic clock for ages and timeouts, ms. */
  readonly monotonicMs?: () => number;
}

export interface Connection {
  /** Resolves once the connection stopped and every socket is closed. */
  readonly done: Promise<void>;
  /** Opens a successor now (no-op when one is already opening or open). */
  rotate(): void;
  /** The successor caught up: close `socketId` (the primary) and promote it. */
  retire(socketId: number): void;
  /**
   * Closes every socket now and opens a new one at once (the process was
   * suspended: what the old sockets still hold sat in OS buffers meanwhile).
   */
  replace(cause: "suspended"): void;
}

export const defaultNowMicros = (): number =>
  Math.round((performance.timeOrigin + performance.now()) * 1000);

const decoder = new TextDecoder();
/** Process-wide and only growing: a later socket always has a larger id (the recorder relies on it). */
let nextSocketId = 1;

/** Runs until `signal` aborts; resolves once the last socket is closed. */
export function runConnection(options: ConnectionOptions): Promise<void> {
  return startConnection(options).done;
}

interface Socket {
  readonly id: number;
  readonly role: SocketRole;
  /** Closes the socket politely with this cause. */
  readonly close: (cause: CloseCause) => void;
  open: boolean;
  openedAt?: number;
}

// deno-lint-ignore arch/max-function-lines -- issue 14: not yet split
export function startConnection(options: ConnectionOptions): Connection {
  const { signal, handlers } = options;
  const monotonic = options.monotonicMs ?? (() => performance.now());
  const factory = new ExponentialBackoff({
    generator: fullJitterGenerator,
    initialDelay: options.backoffInitialMs ?? 1000,
    maxDelay: options.backoffMaxMs ?? 300_000,
  });
  let backoff: IBackoff<unknown> | undefined;
  let successorBackoff: IBackoff<unknown> | undefined;
  let primary: Socket | undefined;
  let successor: Socket | undefined;
  let opened = 0;
  let live = 0;
  let rotateTimer: ReturnType<typeof setTimeout> | undefined;
  let overlapTimer: ReturnType<typeof setTimeout> | undefined;
  let resolveDone!: () => void;
  const done = new Promise<void>((resolve) => resolveDone = resolve);

  const scheduleRotation = (socket: Socket) => {
    clearTimeout(rotateTimer);
    if (options.rotateAfterMs === undefined || signal.aborted) return;
    rotateTimer = setTimeout(() => {
      if (primary === socket) rotate();
    }, options.rotateAfterMs);
  };

  const openSocket = async (role: SocketRole): Promise<Socket | undefined> => {
    await options.beforeConnect?.(signal);
    if (signal.aborted) return undefined;
    const id = nextSocketId++;
    const stop = new AbortController();
    const socket: Socket = {
      id,
      role,
      open: false,
      close: (cause) => {
        if (!stop.signal.aborted) stop.abort(cause);
      },
    };
    live++;
    connectOnce(options, {
      stop: AbortSignal.any([signal, stop.signal]),
      stopCause: () => (signal.aborted ? "shutdown" : stop.signal.reason as CloseCause),
      onOpen: () => {
        socket.open = true;
        socket.openedAt = monotonic();
        opened++;
        if (socket === primary) scheduleRotation(socket);
        handlers.onOpen({ url: options.url, opened, socketId: id, role });
      },
      onFrame: (text, recvTs) => handlers.onFrame(text, recvTs, id),
      onSubscribed: (streams) => handlers.onSubscribed?.({ socketId: id, role, streams }),
    }).then((outcome) => {
      live--;
      ended(socket, outcome);
      if (signal.aborted && live === 0) resolveDone();
    });
    return socket;
  };

  const openPrimary = async (role: SocketRole, waitMs: number) => {
    await delay(waitMs, signal);
    if (signal.aborted) {
      if (live === 0) resolveDone();
      return;
    }
    const socket = await openSocket(role);
    if (socket) primary = socket;
    else if (live === 0) resolveDone();
  };

  const ended = (socket: Socket, outcome: Outcome) => {
    const base = { ...outcome.close, socketId: socket.id, role: socket.role };
    if (socket === primary) {
      primary = undefined;
      clearTimeout(rotateTimer);
      if (signal.aborted) {
        if (outcome.opened) handlers.onClose({ ...base, cause: "shutdown" });
        return;
      }
      if (successor?.open) {
        // The successor takes over at once; whatever the old one missed is
        // the caller's to detect (update ids), not a reason to wait.
        promote();
        handlers.onClose({ ...base, replaced: true });
        return;
      }
      if (successor) {
        // Still connecting: drop it and reconnect as a primary, so that no
        // later retirement can close the socket the streams moved to.
        clearTimeout(overlapTimer);
        successor.close("shutdown");
        successor = undefined;
      }
      const healthy = outcome.close.cause === "suspended" || (outcome.opened &&
        outcome.close.uptimeMs >= (options.healthyAfterMs ?? 10_000));
      backoff = healthy ? undefined : backoff ? backoff.next(undefined) : factory.next();
      const waitMs = backoff?.duration ?? 0;
      const info = { ...base, retryInMs: waitMs };
      if (outcome.opened) handlers.onClose(info);
      else handlers.onConnectFailed?.(info);
      openPrimary("reconnect", waitMs);
      return;
    }
    if (socket === successor) {
      // A successor that failed: the primary still runs; try again later.
      successor = undefined;
      clearTimeout(overlapTimer);
      successorBackoff = successorBackoff ? successorBackoff.next(undefined) : factory.next();
      const waitMs = Math.max(1000, successorBackoff.duration);
      if (outcome.opened) handlers.onClose({ ...base, retryInMs: waitMs });
      else handlers.onConnectFailed?.({ ...base, retryInMs: waitMs });
      if (!signal.aborted) {
        delay(waitMs, signal).then(() => {
          if (!signal.aborted && primary?.open) rotate();
        });
      }
      return;
    }
    // A retired primary finished closing.
    if (outcome.opened) {
      const cause = signal.aborted
        ? "shutdown"
        : base.cause === "suspended"
        ? base.cause
        : "rotated";
      handlers.onClose({ ...base, cause, replaced: true });
    }
  };

  const promote = () => {
    clearTimeout(overlapTimer);
    primary = successor;
    successor = undefined;
    successorBackoff = undefined;
    backoff = undefined;
    if (primary) scheduleRotation(primary);
  };

  const rotate = () => {
    if (signal.aborted || successor || !primary?.open) return;
    log.info("Rotating {url}: opening a successor connection", { url: options.url });
    const pending: Socket = { id: -1, role: "successor", open: false, close: () => {} };
    successor = pending;
    openSocket("successor").then((socket) => {
      if (successor !== pending) {
        socket?.close("shutdown");
        return;
      }
      successor = socket;
      if (!socket) return;
      clearTimeout(overlapTimer);
      overlapTimer = setTimeout(() => {
        if (successor === socket && primary) {
          log.warn("Successor did not confirm continuity in time; retiring the old connection");
          retire(primary.id);
        }
      }, options.maxOverlapMs ?? 60_000);
    });
  };

  const retire = (socketId: number) => {
    if (!primary || primary.id !== socketId || !successor?.open) return;
    const old = primary;
    promote();
    old.close("rotated");
  };

  const replace = (cause: "suspended") => {
    if (signal.aborted) return;
    // A successor would take the primary's place: it goes first.
    const pending = successor;
    successor = undefined;
    clearTimeout(overlapTimer);
    pending?.close(cause);
    primary?.close(cause);
  };

  signal.addEventListener("abort", () => {
    clearTimeout(rotateTimer);
    clearTimeout(overlapTimer);
    if (live === 0) resolveDone();
  }, { once: true });

  openPrimary("initial", 0);
  return { done, rotate, retire, replace };
}

interface Outcome {
  readonly opened: boolean;
  readonly close: CloseInfo;
}

interface SocketHooks {
  /** Aborts to close the socket politely. */
  readonly stop: AbortSignal;
  readonly stopCause: () => CloseCause;
  readonly onOpen: () => void;
  readonly onFrame: (text: string, recvTs: number) => void;
  readonly onSubscribed: (streams: readonly string[]) => void;
}

/** Opens one socket and resolves when it has closed (for whatever reason). */
// deno-lint-ignore arch/max-function-lines -- issue 14: not yet split
function connectOnce(options: ConnectionOptions, hooks: SocketHooks): Promise<Outcome> {
  const nowMicros = options.nowMicros ?? defaultNowMicros;
  const monotonic = options.monotonicMs ?? (() => performance.now());
  // deno-lint-ignore arch/max-function-lines -- issue 14: not yet split
  return new Promise<Outcome>((resolve) => {
    let ws: WebSocket;
    try {
      ws = (options.webSocket ?? ((url) => new WebSocket(url)))(options.url);
    } catch (error) {
      resolve({
        opened: false,
        close: { cause: "error", code: 0, reason: String(error), uptimeMs: 0 },
      });
      return;
    }
    // Binance sends text frames only; should a binary one come, keep its bytes.
    ws.binaryType = "arraybuffer";
    let openedAt: number | undefined;
    let lastFrameAt = monotonic();
    let cause: CloseCause | undefined;
    let lastError = "";
    let settled = false;
    const timers: ReturnType<typeof setTimeout>[] = [];

    const finish = (code: number, reason: string) => {
      if (settled) return;
      settled = true;
      for (const t of timers) clearTimeout(t);
      awaiting?.settle("the socket closed");
      clearInterval(watchdog);
      hooks.stop.removeEventListener("abort", onStop);
      ws.onmessage =
        ws.onopen =
        ws.onerror =
        ws.onclose =
          null;
      const uptimeMs = openedAt === undefined ? 0 : monotonic() - openedAt;
      resolve({
        opened: openedAt !== undefined,
        close: { cause: cause ?? "server", code, reason: reason || lastError, uptimeMs },
      });
    };

    // Closing politely still delivers frames already in flight (the socket
    // keeps dispatching while CLOSING); a peer that never answers the close
    // is given up on after a short wait.
    const closeWith = (why: CloseCause, code = 1000) => {
      cause ??= why;
      try {
        ws.close(code);
      } catch {
        // already closing
      }
      timers.push(
        setTimeout(
          () => finish(1006, `no close from peer (${why})`),
          options.closeTimeoutMs ?? 2000,
        ),
      );
    };
    const onStop = () => closeWith(hooks.stopCause());
    hooks.stop.addEventListener("abort", onStop, { once: true });
    if (hooks.stop.aborted) onStop();

    timers.push(setTimeout(() => {
      if (openedAt === undefined) closeWith("open-timeout");
    }, options.openTimeoutMs ?? 10_000));

    const watchEveryMs = Math.max(50, Math.min(1000, options.staleAfterMs / 4));
    let watchedAt = monotonic();
    const watchdog = setInterval(() => {
      // A round more than a second late means the process did not run (it
      // was suspended): that time is not the socket's silence.
      const late = monotonic() - watchedAt - watchEveryMs;
      watchedAt = monotonic();
      if (late > 1000) lastFrameAt += late;
      if (openedAt === undefined || cause !== undefined) return;
      if (monotonic() - lastFrameAt >= options.staleAfterMs) {
        log.warn("No frame for {silentMs} ms on {url}; replacing the connection", {
          silentMs: Math.round(monotonic() - lastFrameAt),
          url: options.url,
        });
        closeWith("stale", 4000);
      }
    }, watchEveryMs);

    // The live SUBSCRIBE waiting for its answer, if any.
    let awaiting: { id: number; settle: (error?: string) => void } | undefined;
    const subscribeAll = async () => {
      const batches = options.subscribe ?? [];
      const interval = options.subscribeIntervalMs ?? 250;
      let lastSentAt = -Infinity;
      for (let i = 0; i < batches.length; i++) {
        await delay(lastSentAt + interval - monotonic(), hooks.stop);
        if (settled || cause !== undefined || hooks.stop.aborted) return;
        const id = i + 1;
        const answer = new Promise<string | undefined>((resolve) => {
          const timer = setTimeout(
            () => resolve("no answer"),
            options.subscribeTimeoutMs ?? 10_000,
          );
          timers.push(timer);
          awaiting = {
            id,
            settle: (error) => {
              clearTimeout(timer);
              resolve(error);
            },
          };
        });
        lastSentAt = monotonic();
        try {
          ws.send(JSON.stringify({ method: "SUBSCRIBE", params: batches[i], id }));
        } catch (error) {
          awaiting?.settle(String(error));
        }
        const error = await answer;
        awaiting = undefined;
        if (settled || cause !== undefined) return;
        if (error !== undefined) {
          log.warn("SUBSCRIBE {id} of {streams} streams on {url} failed: {error}", {
            id,
            streams: batches[i].length,
            url: options.url,
            error,
          });
          closeWith("subscribe-failed", 4001);
          return;
        }
        hooks.onSubscribed(batches[i]);
      }
    };
    /** Whether `text` answers the SUBSCRIBE in flight (then it is not a frame to record). */
    const isAnswer = (text: string): boolean => {
      if (!awaiting || text.startsWith('{"stream":')) return false;
      let reply: unknown;
      try {
        reply = JSON.parse(text);
      } catch {
        return false;
      }
      if (typeof reply !== "object" || reply === null) return false;
      const { id, result, error } = reply as { id?: unknown; result?: unknown; error?: unknown };
      if (id !== awaiting.id || (!("result" in reply) && error === undefined)) return false;
      awaiting.settle(error === undefined && result === null ? undefined : JSON.stringify(reply));
      return true;
    };

    ws.onopen = () => {
      openedAt = monotonic();
      lastFrameAt = openedAt;
      hooks.onOpen();
      if (options.subscribe && options.subscribe.length > 0) subscribeAll();
    };
    ws.onmessage = (event: MessageEvent) => {
      const recvTs = nowMicros();
      lastFrameAt = monotonic();
      const data = event.data;
      const text = typeof data === "string"
        ? data
        : decoder.decode(data instanceof ArrayBuffer ? data : new Uint8Array(0));
      if (awaiting && isAnswer(text)) return;
      hooks.onFrame(text, recvTs);
    };
    ws.onerror = (event: Event) => {
      cause ??= "error";
      const message = (event as ErrorEvent).message || "websocket error";
      lastError = message;
      log.debug("WebSocket error on {url}: {message}", { url: options.url, message });
    };
    ws.onclose = (event: CloseEvent) => finish(event.code, event.reason);
  });
}
