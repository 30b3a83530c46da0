/**
 * Picks the archive destination from the configuration: S3 when a bucket is
 * set, else the local directory `DATA_DIR/archive`. The S3 sink (and with it
 * the AWS SDK, ~18 MB of memory) is loaded only when a bucket is set.
 */

import { join } from "node:path";
import type { Config } from "../config_types.ts";
import { localSink } from "./local.ts";
import type { S3Sink } from "./s3.ts";
import { httpStatus, isRetryableS3Error, s3ErrorCode } from "./s3_errors.ts";
import type { Sink } from "./sink.ts";

export interface SelectedSink {
  readonly sink: Sink;
  /** Present when the sink is S3. */
  readonly s3?: S3Sink;
  readonly isRetryable: (error: unknown) => boolean;
  close(): void;
}

export async function selectSink(config: Config): Promise<SelectedSink> {
  if (config.s3) {
    // A literal specifier: `deno compile` still embeds the module.
    const { s3Sink } = await import("./s3.ts");
    const s3 = s3Sink(config.s3);
    return { sink: s3, s3, isRetryable: isRetryableS3Error, close: () => s3.close() };
  }
  return {
    sink: localSink(join(config.dataDir, "archive")),
    isRetryable: () => true,
    close: () => {},
  };
}

export type BucketCheck =
  | { readonly ok: true }
  | {
    readonly ok: false;
    readonly permanent: boolean;
    readonly code: string;
    readonly message: string;
  };

/** HeadBucket, classified: a permanent failure means the configuration is wrong. */
export async function checkBucket(s3: S3Sink, signal?: AbortSignal): Promise<BucketCheck> {
  try {
    await s3.headBucket(signal ?? AbortSignal.timeout(15_000));
    return { ok: true };
  } catch (error) {
    const code = s3ErrorCode(error);
    const status = httpStatus(error);
    const permanent = !isRetryableS3Error(error);
    // Without an HTTP answer the error's own message is the useful part.
    const detail = status === undefined
      ? `${code}: ${error instanceof Error ? error.message : String(error)}`
      : `${code}, HTTP ${status}`;
    const why = permanent
      ? status === 404 || code === "NoSuchBucket" || code === "NotFound"
        ? "the bucket does not exist"
        : status === 403
        ? "access denied: check the credentials and the bucket policy"
        : status === 301 || code === "PermanentRedirect"
        ? "the bucket is in another region: set AWS_REGION to the bucket's region"
        : status === undefined
        ? "the S3 client could not make the request"
        : "S3 refused the request"
      : "S3 could not be reached";
    return {
      ok: false,
      permanent,
      code,
      message: `${s3.describe()}: ${why} (${detail})`,
    };
  }
}
