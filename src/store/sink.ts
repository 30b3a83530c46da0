/**
 * The one interface every archive destination implements: put an object
 * under a fixed key, all or nothing. A put to a key that exists replaces it
 * with the same bytes (keys are fixed at sealing), so retries are safe.
 */

import type { ObjectMeta } from "../archive/meta.ts";

export interface Sink {
  /** Label for logs and metrics: "local" or "s3". */
  readonly kind: "local" | "s3";
  /** Where objects go, for people: a directory or `s3://bucket/prefix`. */
  readonly location: string;
  put(key: string, body: Uint8Array, meta: ObjectMeta, signal?: AbortSignal): Promise<void>;
  /**
   * Stores the object only if its key is absent; false (nothing written)
   * when it exists. For batches rebuilt from the crash journal, which may be
   * shorter than a copy already stored: they must never replace it.
   * Required of every sink and wrapper, so none can fall back to `put`.
   */
  putNew(key: string, body: Uint8Array, meta: ObjectMeta, signal?: AbortSignal): Promise<boolean>;
  /**
   * Stores the finished object in the file at `path` (the crash journal's
   * batch file: store/journal.ts) without writing its bytes again, where the
   * sink can: the local sink links it into place. `ifAbsent`: as `putNew`
   * (false when the key exists). Optional; without it, or when it throws,
   * the object is stored from its bytes. The file must not change afterwards.
   */
  putFile?(key: string, path: string, meta: ObjectMeta, ifAbsent: boolean): Promise<boolean>;
}

/** Stores `entry` only where its key is absent; false when it exists. */
export function putIfAbsent(
  sink: Sink,
  entry: { key: string; body: Uint8Array; meta: ObjectMeta },
  signal?: AbortSignal,
): Promise<boolean> {
  return sink.putNew(entry.key, entry.body, entry.meta, signal);
}
