/**
 * A real S3 server (npm s3rver) for the tests, run as its own process by
 * tests/support/s3.ts so that s3rver and its web framework stay out of the
 * project's deno.json and deno.lock: a `deno task start` fetches only what
 * the collector runs. Pinned by its own lock file, s3rver.lock, beside it:
 *
 *   deno run -A --no-config --lock=tests/support/s3rver.lock tests/support/s3rver_main.ts \
 *     --port 0 --directory DIR --bucket NAME
 *
 * Prints `{"port":N}` once it listens on 127.0.0.1; SIGTERM closes it. The
 * import below is deliberately not a literal: `deno check` of the project
 * must not resolve (and lock) s3rver.
 */

import { parseArgs } from "node:util";
import "./s3rver_paging.ts";

/** The package, pinned here and in s3rver.lock. */
export const S3RVER = ["npm:s3rver", "3.7.1"].join("@");

interface S3rverServer {
  run(): Promise<{ port: number }>;
  close(): Promise<void>;
}

type S3rverClass = new (options: {
  address: string;
  port: number;
  silent: boolean;
  directory: string;
  configureBuckets: { name: string; configs: never[] }[];
}) => S3rverServer;

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      port: { type: "string" },
      directory: { type: "string" },
      bucket: { type: "string" },
    },
  });
  const S3rver = (await import(S3RVER)).default as S3rverClass;
  const server = new S3rver({
    address: "127.0.0.1",
    port: Number(values.port ?? 0),
    silent: true,
    directory: values.directory ?? ".",
    configureBuckets: [{ name: values.bucket ?? "bucket", configs: [] }],
  });
  const { port } = await server.run();
  await Deno.stdout.write(new TextEncoder().encode(JSON.stringify({ port }) + "\n"));
  const stop = async () => {
    await server.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
}
