/**
 * One logical WebSocket connection (a fixed set of streams) kept alive for
 * as long as `signal` is not aborted: open, watch for silence, reconnect with
 * backoff, and rotate before Binance's 24-hour cut without a hole.
 *
 * Every frame is handed over synchronously with the receive time taken the
 * moment it arrived and the id of the socket it came on; nothing here waits
 * on storage.
 *
 * Reconnect policy (reconnect.ts, pure): the first attempt after a socket
 * that stayed up for `healthyAfterMs` is immediate (the hole should be as
 * short as possible); each further failure waits an exponential backoff with
 * full jitter, 1 s doubling up to 5 min.
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
 *
 * One socket's life is socket.ts (with subscribe.ts); this file keeps the
 * primary and its successor in a class with private state.
 */

import { getLogger } from "@logtape/logtape";
import { delay } from "../delay.ts";
import {
  afterPrimaryEnded,
  afterSuccessorFailed,
  type BackoffSettings,
  FRESH,
  onPrimaryEnd,
  type ReconnectState,
  retiredCause,
} from "./reconnect.ts";
import { connectOnce, type Outcome } from "./socket.ts";

export { defaultNowMicros } from "./socket.ts";
export type {
  CloseCause,
  CloseInfo,
  ConnectionHandlers,
  ConnectionOptions,
  OpenInfo,
  SocketRole,
  WebSocketFactory,
} from "./connection_types.ts";
import type {
  CloseCause,
  CloseInfo,
  ConnectionHandlers,
  ConnectionOptions,
  SocketRole,
} from "./connection_types.ts";

const log = getLogger(["l2", "feed"]);

export interface Connection {
  /** Resolves once the connection stopped and every socket is closed. */
  readonly done: Promise<void>;
  /**
   * Opens a successor now (no-op when one is already opening or open).
   * `socketId`: the socket that asked (a `serverShutdown` on it); when that is
   * the successor, it is rotated in turn once it becomes the primary.
   */
  rotate(socketId?: number): void;
  /** The successor caught up: close `socketId` (the primary) and promote it. */
  retire(socketId: number): void;
  /**
   * Closes every socket now and opens a new one at once (the process was
   * suspended: what the old sockets still hold sat in OS buffers meanwhile).
   */
  replace(cause: "suspended"): void;
}

/** Process-wide and only growing: a later socket always has a larger id (the recorder relies on it). */
let nextSocketId = 1;

/** Runs until `signal` aborts; resolves once the last socket is closed. */
export function runConnection(options: ConnectionOptions): Promise<void> {
  return startConnection(options).done;
}

/** Starts the connection: its first socket opens at once. */
export function startConnection(options: ConnectionOptions): Connection {
  return new FeedConnection(options);
}

interface Socket {
  readonly id: number;
  readonly role: SocketRole;
  /** Closes the socket politely with this cause. */
  readonly close: (cause: CloseCause) => void;
  open: boolean;
  /** Its outcome came: it delivers nothing more. */
  ended: boolean;
  /** Retired by a rotation: the successor that took its place. */
  replacedBy?: Socket;
}

/** The id of the stand-in for a successor whose socket does not exist yet. */
const PENDING_ID = -1;

class FeedConnection implements Connection {
  readonly done: Promise<void>;
  readonly #options: ConnectionOptions;
  readonly #signal: AbortSignal;
  readonly #handlers: ConnectionHandlers;
  readonly #backoff: BackoffSettings;
  readonly #random: () => number = Math.random;
  #policy: ReconnectState = FRESH;
  #primary: Socket | undefined;
  #successor: Socket | undefined;
  /** The successor on which Binance announced a shutdown (`rotate(socketId)`). */
  #announced: number | undefined;
  /** Sockets opened so far. */
  #opened = 0;
  /** Sockets created and not yet closed. */
  #live = 0;
  #rotateTimer: ReturnType<typeof setTimeout> | undefined;
  #overlapTimer: ReturnType<typeof setTimeout> | undefined;
  #resolveDone!: () => void;

  constructor(options: ConnectionOptions) {
    this.#options = options;
    this.#signal = options.signal;
    this.#handlers = options.handlers;
    this.#backoff = {
      initialMs: options.backoffInitialMs ?? 1000,
      maxMs: options.backoffMaxMs ?? 300_000,
      healthyAfterMs: options.healthyAfterMs ?? 10_000,
    };
    this.done = new Promise<void>((resolve) => this.#resolveDone = resolve);
    this.#signal.addEventListener("abort", () => {
      clearTimeout(this.#rotateTimer);
      clearTimeout(this.#overlapTimer);
      this.#doneIfIdle();
    }, { once: true });
    this.#openPrimary("initial", 0);
  }

  rotate(socketId?: number): void {
    if (socketId !== undefined && socketId !== this.#primary?.id) {
      // The successor will be cut too: it gets a successor of its own once promoted.
      if (socketId === this.#successor?.id) this.#announced = socketId;
      return;
    }
    if (this.#signal.aborted || this.#successor || !this.#primary?.open) return;
    log.info("Rotating {url}: opening a successor connection", { url: this.#options.url });
    // Stands for the successor until its socket exists; one per request, so
    // that a request overtaken by `replace` is recognised as stale.
    const pending: Socket = {
      id: PENDING_ID,
      role: "successor",
      open: false,
      ended: false,
      close: () => {},
    };
    this.#successor = pending;
    this.#openSocket("successor").then((socket) => {
      if (this.#successor !== pending) {
        socket?.close("shutdown");
        return;
      }
      this.#successor = socket;
      if (socket) this.#watchOverlap(socket);
    });
  }

  retire(socketId: number): void {
    const old = this.#primary;
    if (!old || old.id !== socketId || !this.#successor?.open) return;
    old.replacedBy = this.#successor;
    this.#promote();
    old.close("rotated");
  }

  replace(cause: "suspended"): void {
    if (this.#signal.aborted) return;
    // A successor would take the primary's place: it goes first.
    const pending = this.#successor;
    this.#successor = undefined;
    clearTimeout(this.#overlapTimer);
    pending?.close(cause);
    this.#primary?.close(cause);
  }

  /** Retires the primary anyway if the successor has not taken every stream within `maxOverlapMs`. */
  #watchOverlap(socket: Socket): void {
    clearTimeout(this.#overlapTimer);
    this.#overlapTimer = setTimeout(() => {
      if (this.#successor === socket && this.#primary) {
        log.warn("Successor did not confirm continuity in time; retiring the old connection");
        this.retire(this.#primary.id);
      }
    }, this.#options.maxOverlapMs ?? 60_000);
  }

  #scheduleRotation(socket: Socket): void {
    clearTimeout(this.#rotateTimer);
    const after = this.#options.rotateAfterMs;
    if (after === undefined || this.#signal.aborted) return;
    this.#rotateTimer = setTimeout(() => {
      if (this.#primary === socket) this.rotate();
    }, after);
  }

  async #openPrimary(role: SocketRole, waitMs: number): Promise<void> {
    await delay(waitMs, this.#signal);
    if (this.#signal.aborted) return this.#doneIfIdle();
    const socket = await this.#openSocket(role);
    if (socket) this.#primary = socket;
    else this.#doneIfIdle();
  }

  async #openSocket(role: SocketRole): Promise<Socket | undefined> {
    await this.#options.beforeConnect?.(this.#signal);
    if (this.#signal.aborted) return undefined;
    const id = nextSocketId++;
    const stop = new AbortController();
    const socket: Socket = {
      id,
      role,
      open: false,
      ended: false,
      close: (cause) => {
        if (!stop.signal.aborted) stop.abort(cause);
      },
    };
    this.#live++;
    const handlers = this.#handlers;
    connectOnce(this.#options, {
      stop: AbortSignal.any([this.#signal, stop.signal]),
      stopCause: () => (this.#signal.aborted ? "shutdown" : stop.signal.reason as CloseCause),
      onOpen: () => this.#socketOpened(socket),
      onFrame: (text, recvTs) => handlers.onFrame(text, recvTs, id),
      onSubscribed: (streams) => handlers.onSubscribed?.({ socketId: id, role, streams }),
    }).then((outcome) => {
      this.#live--;
      this.#ended(socket, outcome);
      if (this.#signal.aborted) this.#doneIfIdle();
    });
    return socket;
  }

  #socketOpened(socket: Socket): void {
    socket.open = true;
    this.#opened++;
    if (socket === this.#primary) this.#scheduleRotation(socket);
    this.#rotateIfAnnounced();
    const { id: socketId, role } = socket;
    this.#handlers.onOpen({ url: this.#options.url, opened: this.#opened, socketId, role });
  }

  #ended(socket: Socket, outcome: Outcome): void {
    socket.ended = true;
    const base = { ...outcome.close, socketId: socket.id, role: socket.role };
    if (socket === this.#primary) this.#primaryEnded(outcome, base);
    else if (socket === this.#successor) this.#successorEnded(outcome, base);
    else if (outcome.opened) {
      // A retired primary finished closing. Replaced only while a socket its rotation
      // handed over to still runs: when that one failed first, a reconnect follows a hole.
      const cause = retiredCause(this.#signal.aborted, base.cause);
      const replaced = this.#signal.aborted || carriedOn(socket);
      this.#handlers.onClose({ ...base, cause, replaced });
    }
  }

  #primaryEnded(outcome: Outcome, base: CloseInfo): void {
    this.#primary = undefined;
    clearTimeout(this.#rotateTimer);
    if (this.#signal.aborted) {
      if (outcome.opened) this.#handlers.onClose({ ...base, cause: "shutdown" });
      return;
    }
    const successor = this.#successor;
    const where = !successor
      ? "none"
      : successor.open
      ? "open"
      : successor.id === PENDING_ID
      ? "requested"
      : "opening";
    if (onPrimaryEnd(where) === "promote") {
      this.#promote();
      this.#handlers.onClose({ ...base, replaced: true });
      return;
    }
    if (successor) {
      clearTimeout(this.#overlapTimer);
      successor.close("shutdown");
      this.#successor = undefined;
    }
    const end = {
      opened: outcome.opened,
      delivered: outcome.delivered,
      uptimeMs: outcome.close.uptimeMs,
      cause: base.cause,
    };
    const next = afterPrimaryEnded(this.#policy, end, this.#backoff, this.#random);
    this.#policy = next.state;
    const info = { ...base, retryInMs: next.waitMs };
    if (outcome.opened) this.#handlers.onClose(info);
    else this.#handlers.onConnectFailed?.(info);
    this.#openPrimary("reconnect", next.waitMs);
  }

  /** A successor that failed: the primary still runs; try again later. */
  #successorEnded(outcome: Outcome, base: CloseInfo): void {
    this.#successor = undefined;
    clearTimeout(this.#overlapTimer);
    const next = afterSuccessorFailed(this.#policy, this.#backoff, this.#random);
    this.#policy = next.state;
    const info = { ...base, retryInMs: next.waitMs };
    if (outcome.opened) this.#handlers.onClose(info);
    else this.#handlers.onConnectFailed?.(info);
    if (this.#signal.aborted) return;
    // Only for the primary this successor was to replace: a primary that took
    // its place since (a reconnect) has a rotation of its own.
    const forPrimary = this.#primary;
    delay(next.waitMs, this.#signal).then(() => {
      if (!this.#signal.aborted && this.#primary === forPrimary && forPrimary?.open) {
        this.rotate();
      }
    });
  }

  #promote(): void {
    clearTimeout(this.#overlapTimer);
    this.#primary = this.#successor;
    this.#successor = undefined;
    this.#policy = FRESH;
    if (this.#primary) this.#scheduleRotation(this.#primary);
    this.#rotateIfAnnounced();
  }

  /** A primary whose `serverShutdown` came while it was the successor is rotated now. */
  #rotateIfAnnounced(): void {
    const primary = this.#primary;
    if (primary === undefined || primary.id !== this.#announced || !primary.open) return;
    this.#announced = undefined;
    log.info("The new connection to {url} was announced to shut down: rotating it", {
      url: this.#options.url,
    });
    this.rotate();
  }

  /** After the abort: done once the last socket closed. */
  #doneIfIdle(): void {
    if (this.#live === 0) this.#resolveDone();
  }
}

/** Whether a socket its rotations handed over to (directly, or through later rotations) still runs. */
function carriedOn(retired: Socket): boolean {
  let next = retired.replacedBy;
  while (next?.ended) next = next.replacedBy;
  return next !== undefined;
}
