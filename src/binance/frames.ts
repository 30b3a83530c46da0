/**
 * Classifies one WebSocket text frame from a combined-stream connection.
 * Pure. The payload of a data frame is returned as the exact substring the
 * exchange sent, so the archive keeps Binance's bytes, not a re-encoding.
 */

export type Frame =
  | {
    readonly kind: "data";
    readonly stream: string;
    /** The `data` value as JSON text, byte-identical to the frame where possible. */
    readonly dataText: string;
    /** First and last update id the payload covers, when it carries any. */
    readonly firstUpdateId?: number;
    readonly lastUpdateId?: number;
    /** USD-M diff depth: the previous update id (`pu`). */
    readonly prevUpdateId?: number;
  }
  | { readonly kind: "malformed"; readonly reason: string; readonly stream?: string }
  | { readonly kind: "control"; readonly event: string; readonly payload: Record<string, unknown> };

const STREAM_PREFIX = '{"stream":';

export function parseFrame(text: string): Frame {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    return {
      kind: "malformed",
      reason: `not JSON: ${(error as Error).message}`,
      stream: guessStream(text),
    };
  }
  if (!isRecord(parsed)) return { kind: "malformed", reason: "not a JSON object" };
  if (typeof parsed.stream === "string" && isRecord(parsed.data)) {
    const data = parsed.data;
    // The splice is exact only when `data` is the last and only other key.
    const exact = Object.keys(parsed).length === 2 ? rawDataText(text, parsed.stream) : undefined;
    return {
      kind: "data",
      stream: parsed.stream,
      dataText: exact ?? JSON.stringify(data),
      ...updateIds(data),
    };
  }
  // Binance sends a few non-stream messages on a connection, e.g.
  // {"e":"serverShutdown",...} before a planned disconnect.
  if (typeof parsed.e === "string" && parsed.stream === undefined) {
    return { kind: "control", event: parsed.e, payload: parsed };
  }
  return {
    kind: "malformed",
    reason: "unknown shape: expected {stream, data}",
    stream: typeof parsed.stream === "string" ? parsed.stream : undefined,
  };
}

/**
 * The exact `data` text of a frame shaped `{"stream":"<name>","data":<payload>}`,
 * which is how Binance writes every combined-stream frame. Undefined for any
 * other layout (then the caller re-encodes the parsed value).
 */
function rawDataText(text: string, stream: string): string | undefined {
  const head = `${STREAM_PREFIX}${JSON.stringify(stream)},"data":`;
  if (!text.startsWith(head) || !text.endsWith("}")) return undefined;
  return text.slice(head.length, -1);
}

/** The update ids a depth payload (diff or partial) carries. */
export function updateIds(
  data: Record<string, unknown>,
): { firstUpdateId?: number; lastUpdateId?: number; prevUpdateId?: number } {
  if (typeof data.U === "number" && typeof data.u === "number") {
    return {
      firstUpdateId: data.U,
      lastUpdateId: data.u,
      ...(typeof data.pu === "number" ? { prevUpdateId: data.pu } : {}),
    };
  }
  if (typeof data.lastUpdateId === "number") {
    return { firstUpdateId: data.lastUpdateId, lastUpdateId: data.lastUpdateId };
  }
  return {};
}

/** Best effort: the stream a broken frame was meant for, if its text names one. */
function guessStream(text: string): string | undefined {
  const match = /^\{"stream":"([a-z0-9_]+@[a-z0-9@]+)"/.exec(text);
  return match?.[1];
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
