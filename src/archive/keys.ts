/**
 * Object keys of the archive: Hive-style partitions, fixed when a batch is
 * sealed, so a retry or a replay writes the same key instead of a copy.
 * Pure: the time comes in as an argument.
 *
 * <prefix>/exchange=binance/market=<m>/channel=<type>/symbol=<SYM>/date=<YYYY-MM-DD>/hour=<HH>/
 *   <first recv µs>_<instance>_<seq>.ndjson.gz
 *
 * The partition is `channel=`, not `stream=`: Hive-partitioned readers
 * (DuckDB, Spark, Athena, Trino) let a partition column win over a line
 * field of the same name, and every line has a `stream` field. Archives
 * written before the change use `stream=`; parseKey reads both.
 */

export interface KeyParts {
  readonly prefix: string;
  readonly market: string;
  /** Stream name without the symbol, e.g. `depth20@100ms`. */
  readonly streamType: string;
  readonly symbol: string;
  /** Receive time of the batch's first line, µs since the epoch. */
  readonly firstRecvTs: number;
  readonly instanceId: string;
  /** Batch number within the stream and process; with the time it keeps names unique. */
  readonly seq: number;
  /** The partition's name: `channel` (the default) or, in older archives, `stream`. */
  readonly partition?: PartitionName;
}

/** The key's stream-type partition: `channel` now, `stream` in archives written before. */
export type PartitionName = "channel" | "stream";
export const PARTITION_NAME: PartitionName = "channel";
export const LEGACY_PARTITION_NAME: PartitionName = "stream";

/** The partition names of a stream type, the current one first: what a reader lists. */
export const PARTITION_NAMES: readonly PartitionName[] = [PARTITION_NAME, LEGACY_PARTITION_NAME];

export const OBJECT_SUFFIX = ".ndjson.gz";

/** The layout in one line, for people (error messages). */
export const KEY_LAYOUT = "exchange=binance/market=…/channel=…/symbol=…/date=…/hour=…/" +
  `<µs>_<instance>_<seq>${OBJECT_SUFFIX}`;

/** The first segment of every key (after the prefix). */
const EXCHANGE_SEGMENT = "exchange=binance";

/** The names of the partitions between the root and the stream type, and after it. */
export const MARKET_PARTITION = "market";
export const SYMBOL_PARTITION = "symbol";
export const DATE_PARTITION = "date";
/** What a `date=` value looks like. */
export const DATE_VALUE = /^\d{4}-\d{2}-\d{2}$/;
export const HOUR_PARTITION = "hour";
/** What an `hour=` value looks like. */
export const HOUR_VALUE = /^\d{2}$/;

/** Where every key under `prefix` (S3_PREFIX, `""` for none) starts: `<prefix>/exchange=binance/`. */
export function keyRoot(prefix: string): string {
  return `${prefix === "" ? "" : `${prefix.replace(/\/+$/, "")}/`}${EXCHANGE_SEGMENT}/`;
}

/**
 * The value of a `<name>=<value>` path segment when its name is one of
 * `names` (the first that fits), else undefined.
 */
export function partitionValue(
  segment: string,
  names: readonly string[],
): { name: string; rank: number; value: string } | undefined {
  const rank = names.findIndex((name) => segment.startsWith(`${name}=`));
  if (rank === -1) return undefined;
  return { name: names[rank], rank, value: segment.slice(names[rank].length + 1) };
}

/** The stream a key's objects hold: `<symbol lower-case>@<stream type>`. */
export function streamOfKey(parts: Pick<KeyParts, "symbol" | "streamType">): string {
  return `${parts.symbol.toLowerCase()}@${parts.streamType}`;
}

export function planKey(parts: KeyParts): string {
  const when = new Date(Math.floor(parts.firstRecvTs / 1000));
  const date = when.toISOString().slice(0, 10);
  const hour = when.toISOString().slice(11, 13);
  const file = `${parts.firstRecvTs}_${parts.instanceId}_${String(parts.seq).padStart(6, "0")}`;
  const path = [
    EXCHANGE_SEGMENT,
    `${MARKET_PARTITION}=${parts.market}`,
    `${parts.partition ?? PARTITION_NAME}=${parts.streamType}`,
    `${SYMBOL_PARTITION}=${parts.symbol}`,
    `${DATE_PARTITION}=${date}`,
    `${HOUR_PARTITION}=${hour}`,
    `${file}${OBJECT_SUFFIX}`,
  ].join("/");
  return parts.prefix === "" ? path : `${parts.prefix}/${path}`;
}

const KEY_PATTERN = new RegExp(
  "^(?:(.*)/)?exchange=binance/market=([^/]+)/(channel|stream)=([^/]+)/symbol=([^/]+)/" +
    "date=(\\d{4}-\\d{2}-\\d{2})/hour=(\\d{2})/(\\d+)_(.+)_(\\d+)\\.ndjson\\.gz$",
);

/** The inverse of planKey; undefined when the key does not follow the layout. */
export function parseKey(key: string): KeyParts | undefined {
  const m = KEY_PATTERN.exec(key);
  if (!m) return undefined;
  const parts: KeyParts = {
    prefix: m[1] ?? "",
    market: m[2],
    streamType: m[4],
    symbol: m[5],
    firstRecvTs: Number(m[8]),
    instanceId: m[9],
    seq: Number(m[10]),
    ...(m[3] === LEGACY_PARTITION_NAME ? { partition: LEGACY_PARTITION_NAME } : {}),
  };
  // A key whose partitions disagree with its own time is not ours.
  return planKey(parts) === key ? parts : undefined;
}
