/**
 * The resolved configuration: every option of docs/DESIGN.md with its default
 * applied, validated, readonly. Produced only by `parseConfig` in config.ts.
 */

export type Market = "spot" | "usdm";
export type DepthLevel = 5 | 10 | 20 | "full";
export type LogLevel = "trace" | "debug" | "info" | "warning" | "error" | "fatal";
export type LogFormat = "text" | "json";
/** What is recorded per symbol (`STREAMS`). */
export type StreamKind = "depth" | "trade" | "aggTrade" | "bookTicker";

export interface S3Config {
  readonly bucket: string;
  readonly prefix: string;
  /** `AWS_REGION` (environment or env file); undefined: us-east-1. */
  readonly region?: string;
  /**
   * `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` when the
   * keys are set (environment or env file); undefined: the SDK's chain. A
   * secret: never printed.
   */
  readonly credentials?: {
    readonly accessKeyId: string;
    readonly secretAccessKey: string;
    readonly sessionToken?: string;
  };
  /** `AWS_PROFILE` (environment or env file): the profile the SDK's chain reads. */
  readonly profile?: string;
  readonly endpoint?: string;
  readonly forcePathStyle: boolean;
  readonly sse?: "AES256" | "aws:kms";
  readonly sseKmsKeyId?: string;
  readonly storageClass?: string;
}

export interface Config {
  /**
   * `SYMBOL` terms, upper case (NFC), de-duplicated, in the order given:
   * symbol names and patterns with `*` (`ALL` is kept as `*`). See binance/selection.ts.
   */
  readonly symbols: readonly string[];
  /** `SYMBOL_EXCLUDE` terms, same syntax; empty by default. */
  readonly symbolExclude: readonly string[];
  /** `SHARD=k/N`: this instance records shard k of N (default 0/1, everything). */
  readonly shard: { readonly index: number; readonly count: number };
  /** How often exchangeInfo is read again to follow listings, delistings and statuses. */
  readonly exchangeInfoRefreshSeconds: number;
  /** `STREAMS`: the kinds recorded per symbol, in the order given (default depth only). */
  readonly streamKinds: readonly StreamKind[];
  readonly market: Market;
  readonly depthLevel: DepthLevel;
  readonly updateSpeedMs: number;
  /** Event times in ms, or in µs (spot only: `timeUnit=MICROSECOND` on the URL). */
  readonly timeUnit: "ms" | "us";
  readonly batchSeconds: number;
  readonly maxMessagesPerBatch: number;
  /** Key prefix, used by both sinks (`S3_PREFIX`, default `binance`). */
  readonly prefix: string;
  /** Present only when `S3_BUCKET_NAME` is set. */
  readonly s3?: S3Config;
  readonly uploadConcurrency: number;
  readonly uploadQueueMaxBytes: number;
  readonly gzipLevel: number;
  /** Absolute or relative as given; not resolved against the cwd. */
  readonly dataDir: string;
  readonly spoolMaxBytes: number;
  readonly wsUrl: string;
  readonly restUrl: string;
  readonly wsRotateSeconds: number;
  readonly staleAfterSeconds: number;
  readonly snapshotIntervalSeconds: number;
  readonly snapshotLimit: number;
  readonly streamsPerConnection: number;
  /** The 1 s ticker late by more than this: the process was suspended (the Mac slept). */
  readonly suspendThresholdSeconds: number;
  /** macOS: hold a `caffeinate` power assertion while recording. */
  readonly preventSleep: boolean;
  /** `undefined` when `METRICS_ADDR=off`. */
  readonly metrics?: { readonly hostname: string; readonly port: number };
  /** METRICS_PER_STREAM: label the per-stream metrics by stream, not by market and type. */
  readonly metricsPerStream?: boolean;
  readonly alertWebhookUrl?: string;
  readonly instanceId: string;
  readonly logFile?: string;
  readonly logLevel: LogLevel;
  readonly logFormat: LogFormat;
  readonly logMaxBytes: number;
  readonly logMaxFiles: number;
}
