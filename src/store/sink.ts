/**
 * The one interface every archive destination implements: put an object
 * under a fixed key, all or nothing. A put to a key that exists replaces it
 * with the same bytes (keys are fixed at sealing), so retries are safe.
 */

/** What an object says about its contents (S3 user metadata, or a sidecar file). */
export interface ObjectMeta {
  readonly messages: number;
  readonly events: number;
  /** µs since the epoch. */
  readonly firstRecvTs: number;
  readonly lastRecvTs: number;
  readonly firstUpdateId?: number;
  readonly lastUpdateId?: number;
}

export interface Sink {
  /** Label for logs and metrics: "local" or "s3". */
  readonly kind: "local" | "s3";
  /** Where objects go, for people: a directory or `s3://bucket/prefix`. */
  readonly location: string;
  put(key: string, body: Uint8Array, meta: ObjectMeta, signal?: AbortSignal): Promise<void>;
  /**
   * Stores the object only if its key is absent; false (nothing written)
   * when it exists. For batches rebuilt from the crash journal, which may be
   * shorter than a copy already stored: they must never replace it. Both
   * real sinks have it; a sink without it (a test's) gets `put`.
   */
  putNew?(key: string, body: Uint8Array, meta: ObjectMeta, signal?: AbortSignal): Promise<boolean>;
}

/** `putNew` where the sink has it, else `put` (reported as stored). */
export async function putIfAbsent(
  sink: Sink,
  entry: { key: string; body: Uint8Array; meta: ObjectMeta },
  signal?: AbortSignal,
): Promise<boolean> {
  if (sink.putNew) return await sink.putNew(entry.key, entry.body, entry.meta, signal);
  await sink.put(entry.key, entry.body, entry.meta, signal);
  return true;
}

/** Metadata as flat string pairs, the form S3 user metadata and sidecars share. */
export function metaToRecord(meta: ObjectMeta): Record<string, string> {
  const record: Record<string, string> = {
    "messages": String(meta.messages),
    "events": String(meta.events),
    "first-recv-ts": String(meta.firstRecvTs),
    "last-recv-ts": String(meta.lastRecvTs),
  };
  if (meta.firstUpdateId !== undefined) record["first-update-id"] = String(meta.firstUpdateId);
  if (meta.lastUpdateId !== undefined) record["last-update-id"] = String(meta.lastUpdateId);
  return record;
}
