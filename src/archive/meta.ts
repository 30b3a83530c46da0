/**
 * The one definition of what an archive object says about itself, and of the
 * words used for its lines, shared by the batcher and the crash journal (that
 * count), the sinks (that store the metadata: S3 user metadata
 * `x-amz-meta-<name>`, or the local sidecar `<object>.meta.json`), `verify`
 * (that counts the same way) and README (whose table a test compares with
 * META_FIELDS).
 *
 * A line is one of:
 * - a **message**: a data line whose payload came from the exchange's stream
 *   (a diff or a partial book);
 * - a **snapshot**: a data line holding a REST depth snapshot, whose `stream`
 *   is `<symbol>@depthSnapshot`; counted apart from messages;
 * - an **event**: a line the collector wrote about its own recording (`event`
 *   field: connected, gap, …).
 */

/** The `stream` field of a snapshot line ends with this: `btcusdt@depthSnapshot`. */
export const SNAPSHOT_STREAM_SUFFIX = "@depthSnapshot";

export type LineKind = "message" | "snapshot" | "event";

/** The snapshot line's `stream` for a symbol. */
export function snapshotStreamOf(symbol: string): string {
  return `${symbol.toLowerCase()}${SNAPSHOT_STREAM_SUFFIX}`;
}

/** What kind of line a line with this `stream` field is (`isEvent`: it has an `event` field). */
export function lineKindOf(stream: unknown, isEvent: boolean): LineKind {
  if (isEvent) return "event";
  return typeof stream === "string" && stream.endsWith(SNAPSHOT_STREAM_SUFFIX)
    ? "snapshot"
    : "message";
}

/** What an object says about its contents. */
export interface ObjectMeta {
  /** Messages from the exchange's stream (snapshots not included). */
  readonly messages: number;
  /**
   * REST snapshot lines. Absent in objects (and spooled batches) written
   * before snapshots were counted apart: their `messages` include them.
   */
  readonly snapshots?: number;
  /** Event lines. */
  readonly events: number;
  /** µs since the epoch: the first and the latest receive time of any line. */
  readonly firstRecvTs: number;
  readonly lastRecvTs: number;
  /** The first message's first update id (diff `U`, partial `lastUpdateId`); none without one. */
  readonly firstUpdateId?: number;
  /** The last message's last update id (diff `u`, partial `lastUpdateId`). */
  readonly lastUpdateId?: number;
}

/** The stored names of the fields, in the order README lists them, and what each means. */
export const META_FIELDS: ReadonlyArray<
  { readonly field: keyof ObjectMeta; readonly name: string; readonly meaning: string }
> = [
  { field: "messages", name: "messages", meaning: "messages from the exchange's stream" },
  { field: "snapshots", name: "snapshots", meaning: "REST snapshot lines" },
  { field: "events", name: "events", meaning: "event lines" },
  { field: "firstRecvTs", name: "first-recv-ts", meaning: "first line's receive time, µs" },
  { field: "lastRecvTs", name: "last-recv-ts", meaning: "latest receive time, µs" },
  { field: "firstUpdateId", name: "first-update-id", meaning: "first message's first id" },
  { field: "lastUpdateId", name: "last-update-id", meaning: "last message's last id" },
];

/** Metadata as flat string pairs, the form S3 user metadata and sidecars share. */
export function metaToRecord(meta: ObjectMeta): Record<string, string> {
  const record: Record<string, string> = {};
  for (const { field, name } of META_FIELDS) {
    const value = meta[field];
    if (value !== undefined) record[name] = String(value);
  }
  return record;
}

/**
 * An object's metadata as read back (`verify`): none (no field of
 * META_FIELDS: an object stored without it, or a sidecar lost), the fields,
 * or why they cannot be read.
 */
export type StoredMeta =
  | { readonly kind: "none" }
  | { readonly kind: "meta"; readonly meta: ObjectMeta }
  | { readonly kind: "unreadable"; readonly reason: string };

const REQUIRED_FIELDS: ReadonlySet<keyof ObjectMeta> = new Set([
  "messages",
  "events",
  "firstRecvTs",
  "lastRecvTs",
]);

/**
 * The inverse of `metaToRecord`: S3 user metadata or a sidecar's fields
 * (values as text; other names, e.g. another tool's metadata, are ignored).
 */
export function metaFromRecord(record: Readonly<Record<string, unknown>> | undefined): StoredMeta {
  const values: Partial<Record<keyof ObjectMeta, number>> = {};
  const problems: string[] = [];
  let found = 0;
  for (const { field, name } of META_FIELDS) {
    const text = record?.[name];
    if (text === undefined) {
      if (REQUIRED_FIELDS.has(field)) problems.push(`no ${name}`);
      continue;
    }
    found++;
    if (typeof text === "string" && /^\d{1,16}$/.test(text) && Number.isSafeInteger(Number(text))) {
      values[field] = Number(text);
    } else problems.push(`${name} is not a whole number: ${JSON.stringify(text)}`);
  }
  if (found === 0) return { kind: "none" };
  if (problems.length > 0) return { kind: "unreadable", reason: problems.join("; ") };
  return { kind: "meta", meta: values as ObjectMeta };
}

/** Counts an object's lines into the metadata stored with them, as the batcher counts. */
export class MetaTally {
  #messages = 0;
  #snapshots = 0;
  #events = 0;
  #firstRecvTs: number | undefined;
  #lastRecvTs = 0;
  #firstUpdateId: number | undefined;
  #lastUpdateId: number | undefined;

  /** One line; `ids` a message's (snapshots carry none in the metadata). */
  add(kind: LineKind, recvTs: number, ids?: { firstUpdateId?: number; lastUpdateId?: number }) {
    if (kind === "message") this.#messages++;
    else if (kind === "snapshot") this.#snapshots++;
    else this.#events++;
    this.#firstRecvTs ??= recvTs;
    this.#lastRecvTs = Math.max(this.#lastRecvTs, recvTs);
    if (kind !== "message" || !ids) return;
    if (ids.firstUpdateId !== undefined) this.#firstUpdateId ??= ids.firstUpdateId;
    if (ids.lastUpdateId !== undefined) this.#lastUpdateId = ids.lastUpdateId;
  }

  /** The metadata of the lines added; undefined before the first. */
  meta(): ObjectMeta | undefined {
    if (this.#firstRecvTs === undefined) return undefined;
    return {
      messages: this.#messages,
      snapshots: this.#snapshots,
      events: this.#events,
      firstRecvTs: this.#firstRecvTs,
      lastRecvTs: this.#lastRecvTs,
      firstUpdateId: this.#firstUpdateId,
      lastUpdateId: this.#lastUpdateId,
    };
  }
}

/**
 * Where stored metadata and the object's lines (`counted`) disagree, one
 * `<name> <stored> (the lines: <counted>)` each. Metadata without `snapshots`
 * (written before snapshots were counted apart) counts them in `messages`.
 */
export function metaDifferences(stored: ObjectMeta, counted: ObjectMeta | undefined): string[] {
  if (!counted) return ["the object has no line"];
  const lines: ObjectMeta = stored.snapshots === undefined
    ? { ...counted, messages: counted.messages + (counted.snapshots ?? 0), snapshots: undefined }
    : counted;
  const differences: string[] = [];
  for (const { field, name } of META_FIELDS) {
    if (stored[field] !== lines[field]) {
      differences.push(
        `${name} ${stored[field] ?? "(none)"} (the lines: ${lines[field] ?? "none"})`,
      );
    }
  }
  return differences;
}
