/**
 * One logical WebSocket connection kept alive for as long as `signal` is not
 * aborted: open, watch for silence, reconnect with backoff. Every frame is
 * handed over synchronously with the receive time taken the moment it
 * arrived; nothing here waits on storage.
 *
 * Reconnect policy: the first attempt after a connection that stayed up for
 * `healthyAfterMs` is immediate (the hole should be as short as possible);
 * each further failure waits an exponential backoff with full jitter, 1 s
 * doubling up to 5 min (cockatiel's generator, not hand-rolled maths).
 */

import { getLogger } from "@logtape/logtape";
import { ExponentialBackoff, fullJitterGenerator, type IBackoff } from "cockatiel";
import { delay } from "../delay.ts";

const log = getLogger(["l2", "feed"]);

export type WebSocketFactory = (url: string) => WebSocket;

export type CloseCause = "server" | "stale" | "error" | "shutdown" | "open-timeout";

export interface OpenInfo {
  readonly url: string;
  /** Connections opened so far by this loop, this one included. */
  readonly opened: number;
}

export interface CloseInfo {
  readonly cause: CloseCause;
  readonly code: number;
  readonly reason: string;
  /** How long the connection was open, ms (0 when it never opened). */
  readonly uptimeMs: number;
  /** Delay before the next attempt, ms (absent on shutdown). */
  readonly retryInMs?: number;
}

export interface ConnectionHandlers {
  /** A text frame; `recvTs` is µs since the epoch on the local clock. */
  onFrame(text: string, recvTs: number): void;
  onOpen(info: OpenInfo): void;
  /** Only for connections that had opened. */
  onClose(info: CloseInfo): void;
  /** An attempt that never opened. */
  onConnectFailed?(info: CloseInfo): void;
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
  readonly webSocket?: WebSocketFactory;
  /** Wall clock for receive times, µs since the epoch. */
  readonly nowMicros?: () => number;
  /** Monotonic clock for ages and timeouts, ms. */
  readonly monotonicMs?: () => number;
}

export const defaultNowMicros = (): number =>
  Math.round((performance.timeOrigin + performance.now()) * 1000);

const decoder = new TextDecoder();

/** Runs until `signal` aborts; resolves once the last socket is closed. */
export async function runConnection(options: ConnectionOptions): Promise<void> {
  const { signal } = options;
  const factory = new ExponentialBackoff({
    generator: fullJitterGenerator,
    initialDelay: options.backoffInitialMs ?? 1000,
    maxDelay: options.backoffMaxMs ?? 300_000,
  });
  let backoff: IBackoff<unknown> | undefined;
  let opened = 0;
  while (!signal.aborted) {
    const outcome = await connectOnce(options, opened + 1);
    if (outcome.opened) opened++;
    if (signal.aborted) {
      if (outcome.opened) options.handlers.onClose({ ...outcome.close, cause: "shutdown" });
      break;
    }
    const healthy = outcome.opened &&
      outcome.close.uptimeMs >= (options.healthyAfterMs ?? 10_000);
    let waitMs = 0;
    if (healthy) {
      backoff = undefined;
    } else {
      backoff = backoff ? backoff.next(undefined) : factory.next();
      waitMs = backoff.duration;
    }
    const info = { ...outcome.close, retryInMs: waitMs };
    if (outcome.opened) options.handlers.onClose(info);
    else options.handlers.onConnectFailed?.(info);
    await delay(waitMs, signal);
  }
}

interface Outcome {
  readonly opened: boolean;
  readonly close: CloseInfo;
}

/** Opens one socket and resolves when it has closed (for whatever reason). */
function connectOnce(options: ConnectionOptions, attempt: number): Promise<Outcome> {
  const nowMicros = options.nowMicros ?? defaultNowMicros;
  const monotonic = options.monotonicMs ?? (() => performance.now());
  const { handlers, signal } = options;
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
      clearInterval(watchdog);
      signal.removeEventListener("abort", onAbort);
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
    const onAbort = () => closeWith("shutdown");
    signal.addEventListener("abort", onAbort, { once: true });

    timers.push(setTimeout(() => {
      if (openedAt === undefined) closeWith("open-timeout");
    }, options.openTimeoutMs ?? 10_000));

    const watchdog = setInterval(() => {
      if (openedAt === undefined || cause !== undefined) return;
      if (monotonic() - lastFrameAt >= options.staleAfterMs) {
        log.warn("No frame for {silentMs} ms on {url}; replacing the connection", {
          silentMs: Math.round(monotonic() - lastFrameAt),
          url: options.url,
        });
        closeWith("stale", 4000);
      }
    }, Math.max(50, Math.min(1000, options.staleAfterMs / 4)));

    ws.onopen = () => {
      openedAt = monotonic();
      lastFrameAt = openedAt;
      handlers.onOpen({ url: options.url, opened: attempt });
    };
    ws.onmessage = (event: MessageEvent) => {
      const recvTs = nowMicros();
      lastFrameAt = monotonic();
      const data = event.data;
      const text = typeof data === "string"
        ? data
        : decoder.decode(data instanceof ArrayBuffer ? data : new Uint8Array(0));
      handlers.onFrame(text, recvTs);
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
