/**
 * Lets s3rver page a listing under Deno. s3rver_main.ts, the process the
 * tests' S3 server runs in, imports it for its side effect.
 *
 * s3rver 3.7.1 encrypts the ListObjectsV2 continuation token with DES
 * (`crypto.createCipheriv("des", …)`, lib/controllers/bucket.js), a cipher
 * Deno's node:crypto does not implement: every truncated listing (more keys
 * than `MaxKeys`) then fails with HTTP 500 InternalError instead of a page
 * and a token. The token only has to make the round trip through s3rver
 * itself, so where DES is missing it is replaced by a pass-through (the
 * token becomes base64 of IV + the plain `region/bucket/key`). Nothing
 * changes where the runtime has DES, and no other cipher is touched.
 */

import { Buffer } from "node:buffer";
import crypto from "node:crypto";

function hasDes(): boolean {
  try {
    crypto.createCipheriv("des", Buffer.alloc(8), Buffer.alloc(8));
    return true;
  } catch {
    return false;
  }
}

if (!hasDes()) {
  const passThrough = () => ({
    update: (data: string | Uint8Array, encoding?: BufferEncoding) =>
      typeof data === "string" ? Buffer.from(data, encoding ?? "utf8") : Buffer.from(data),
    final: () => Buffer.alloc(0),
  });
  const createCipheriv = crypto.createCipheriv;
  const createDecipheriv = crypto.createDecipheriv;
  // s3rver reaches these through the shared `require("crypto")` object.
  const patched = crypto as unknown as Record<string, unknown>;
  patched.createCipheriv = (algorithm: string, ...rest: unknown[]) =>
    algorithm === "des"
      ? passThrough()
      : (createCipheriv as (...args: unknown[]) => unknown)(algorithm, ...rest);
  patched.createDecipheriv = (algorithm: string, ...rest: unknown[]) =>
    algorithm === "des"
      ? passThrough()
      : (createDecipheriv as (...args: unknown[]) => unknown)(algorithm, ...rest);
}
