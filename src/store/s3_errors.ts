/**
 * How an S3 failure is read: its code, HTTP status, and whether another
 * attempt may succeed. Pure, and free of the AWS SDK, so that the collector
 * with a local archive never loads the SDK (about 18 MB of memory).
 */

/** Error codes that are transient although S3 may send them with a 4xx status. */
const TRANSIENT_CODES = new Set([
  "RequestTimeout",
  "SlowDown",
  "Throttling",
  "ThrottlingException",
  "RequestLimitExceeded",
  "TooManyRequestsException",
  "RequestThrottled",
  "PriorRequestNotComplete",
  // HTTP 409: another conditional write or operation on the key is in progress; try again.
  "ConditionalRequestConflict",
  "OperationAborted",
  "InternalError",
  "ServiceUnavailable",
]);

/** Error codes that another attempt cannot fix: wrong bucket, credentials or request. */
const PERMANENT_CODES = new Set([
  "AccessDenied",
  "AllAccessDisabled",
  "AccountProblem",
  "InvalidAccessKeyId",
  "InvalidBucketName",
  "InvalidSecurity",
  "NoSuchBucket",
  "NotFound",
  "SignatureDoesNotMatch",
  "InvalidArgument",
  "InvalidStorageClass",
  "KMS.NotFoundException",
  "KMS.DisabledException",
  "PermanentRedirect",
  "AuthorizationHeaderMalformed",
  "CredentialsProviderError",
  // Deno refused an operation the SDK needed: a missing permission, not an outage.
  "NotCapable",
  "PermissionDenied",
]);

/**
 * Whether a failed S3 call may succeed if tried again. Pure. Unknown errors
 * count as transient: retrying and spooling costs little, dropping data does.
 */
export function isRetryableS3Error(error: unknown): boolean {
  const code = s3ErrorCode(error);
  if (TRANSIENT_CODES.has(code)) return true;
  if (PERMANENT_CODES.has(code)) return false;
  const status = httpStatus(error);
  if (status === undefined) return true;
  // S3 answers 301 (HeadBucket without a body, so without a code) when the
  // bucket is in another region than the one asked: the configuration is wrong.
  if (status === 301) return false;
  if (status === 429 || status >= 500 || status === 408) return true;
  // Other 4xx answers mean the request itself is wrong.
  return !(status >= 400 && status < 500);
}

/** The S3 error code (`NoSuchBucket`…), or the error's name. */
export function s3ErrorCode(error: unknown): string {
  if (typeof error !== "object" || error === null) return String(error);
  const e = error as { Code?: unknown; code?: unknown; name?: unknown };
  for (const candidate of [e.Code, e.name, e.code]) {
    if (typeof candidate === "string" && candidate !== "" && candidate !== "Error") {
      return candidate;
    }
  }
  return "Error";
}

export function httpStatus(error: unknown): number | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const status = (error as { $metadata?: { httpStatusCode?: unknown } }).$metadata?.httpStatusCode;
  return typeof status === "number" ? status : undefined;
}
