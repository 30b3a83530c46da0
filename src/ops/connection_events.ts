/**
 * What happens when one connection of a stream group opens, subscribes,
 * closes or fails to open: the recorder hears of it (open and close lines,
 * the hand-over of streams to a successor) and the named event is told
 * (log line, metrics, health state: events.ts).
 */

import type { CloseInfo, ConnectionHandlers } from "../feed/connection.ts";
import type { SocketRole } from "../feed/connection.ts";
import type { Telemetry } from "./events.ts";

/** The streams one connection carries, under its number (recorder.ts's StreamGroup). */
export interface ConnectionGroup {
  readonly conn: number;
  readonly names: readonly string[];
}

/** What the recorder is told about a group's sockets (recorder.ts's Recorder). */
export interface SocketListener<G extends ConnectionGroup> {
  frame(group: G, text: string, recvTs: number, socketId: number): void;
  opened(
    group: G,
    socketId: number,
    role: SocketRole,
    recvTs: number,
    streams: readonly string[],
  ): void;
  closed(group: G, socketId: number, close: {
    replaced?: boolean;
    recvTs: number;
    details: Record<string, unknown>;
  }): void;
}

export interface ConnectionContext<G extends ConnectionGroup> {
  readonly group: G;
  /** The group's streams named in the URL; the others come by SUBSCRIBE. */
  readonly inUrl: readonly string[];
  readonly recorder: SocketListener<G>;
  readonly telemetry: Telemetry;
  readonly nowMicros: () => number;
}

/** The handlers `startConnection` calls for `context.group`. */
export function connectionHandlers<G extends ConnectionGroup>(
  context: ConnectionContext<G>,
): ConnectionHandlers {
  const { group, inUrl, recorder, telemetry, nowMicros } = context;
  const name = { conn: group.conn, streams: group.names.length };
  return {
    onFrame: (text, recvTs, socketId) => recorder.frame(group, text, recvTs, socketId),
    onOpen: (info) => {
      telemetry.connectionOpened(name, info);
      recorder.opened(group, info.socketId, info.role, nowMicros(), inUrl);
    },
    onSubscribed: (info) => {
      telemetry.connectionSubscribed(name, info);
      recorder.opened(group, info.socketId, info.role, nowMicros(), info.streams);
    },
    onClose: (info) => {
      recorder.closed(group, info.socketId ?? 0, {
        replaced: info.replaced,
        recvTs: nowMicros(),
        details: closeDetails(group.conn, info),
      });
      telemetry.connectionClosed(name, info);
    },
    onConnectFailed: (info) => telemetry.connectFailed(name, info),
  };
}

/** The details of the recorder's `disconnected` event line. */
function closeDetails(conn: number, info: CloseInfo): Record<string, unknown> {
  return {
    conn,
    socket: info.socketId,
    cause: info.cause,
    code: info.code,
    reason: info.reason,
    uptime_ms: Math.round(info.uptimeMs),
  };
}
