/**
 * The types of a connection's options and events (connection.ts), apart so
 * that one socket's life (socket.ts) can name them without importing the
 * connection that drives it.
 */

import type { Ticker } from "../beat.ts";

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
  /**
   * What runs each socket's watchdog rounds: the recorder's beat, so they
   * cost no wakeup of their own (a `setInterval` per socket when absent, or
   * when the round's period is not a whole number of beats).
   */
  readonly ticker?: Ticker;
  /**
   * Every stream may be silent for minutes (trades, the book ticker of a
   * quiet symbol): after `staleAfterMs` of silence the socket is asked
   * whether it is alive (`LIST_SUBSCRIPTIONS`) and replaced only when no
   * answer comes within `probeTimeoutMs`, instead of at once.
   */
  readonly quietAllowed?: boolean;
  /** How long the answer to that question may take, ms (default 10 s). */
  readonly probeTimeoutMs?: number;
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
