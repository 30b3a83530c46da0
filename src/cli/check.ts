/**
 * `l2-uploader check`: does the real operations the collector depends on,
 * once each, and prints one line per check. Exit 0 only when all pass.
 *
 *   data dir   write and rename a file in DATA_DIR/spool (S3), or in DATA_DIR (local)
 *   data dir lock  who holds DATA_DIR (a running collector is not a failure)
 *   sink       S3: HeadBucket, then put and delete a probe object;
 *              local: write and rename a file in DATA_DIR/archive
 *   binance    REST ping; the symbols SYMBOL names are listed (exchangeInfo)
 *   metrics addr  METRICS_ADDR can be bound; log file: LOG_FILE takes appends
 *   sleep      macOS only: `pmset -g`; system or disk sleep on AC power is a
 *              warning (WARN, exit code unchanged) naming the fix
 */

import { dirname, join } from "node:path";
import { checkSymbols, RestLimiter } from "../binance/rest.ts";
import { matchesAny, namedSymbols } from "../binance/selection.ts";
import { inShard } from "../binance/shard.ts";
import { restPaths } from "../binance/streams.ts";
import type { Config } from "../config_types.ts";
import { parsePmset, PMSET, sleepAdvice } from "../ops/power.ts";
import { currentHolder, describeHolder } from "../ops/data_dir_lock.ts";
import { probeWritable } from "../ops/writable.ts";
import { s3ErrorCode } from "../store/s3_errors.ts";
import { checkBucket, selectSink } from "../store/select.ts";

export interface CheckResult {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
  /** Passed with a warning: printed as WARN, does not fail the check. */
  readonly warn?: boolean;
}

export interface CheckOptions {
  readonly print: (text: string) => void;
  readonly fetch?: typeof fetch;
  readonly timeoutMs?: number;
  /** Default Deno.build.os. */
  readonly os?: string;
  /** The output of `pmset -g`; default: runs /usr/bin/pmset. */
  readonly pmset?: () => Promise<string>;
}

export async function check(config: Config, options: CheckOptions): Promise<number> {
  const results: CheckResult[] = [{ name: "config", ok: true, detail: describeConfig(config) }];
  const print = (r: CheckResult) =>
    options.print(
      `${r.ok ? (r.warn ? "WARN" : "OK  ") : "FAIL"}  ${r.name.padEnd(18)} ${r.detail}\n`,
    );
  print(results[0]);
  const steps: Array<[string, () => Promise<string>]> = [
    // With S3 the spool is where batches go while S3 is down; a local archive needs none
    // (run leaves even a file there alone), so DATA_DIR itself is probed, as run probes it.
    ["data dir", () => probeDirectory(config.s3 ? join(config.dataDir, "spool") : config.dataDir)],
    ["data dir lock", () => describeLock(config.dataDir)],
    ...await sinkSteps(config, options.timeoutMs ?? 15_000),
    ["binance rest", () => pingBinance(config, options)],
    ["symbols", () => checkListed(config, options)],
  ];
  const { metrics, logFile } = config;
  if (metrics) steps.push(["metrics addr", () => probeBind(metrics, config.dataDir)]);
  if (logFile) steps.push(["log file", () => probeLogFile(logFile)]);
  if ((options.os ?? Deno.build.os) === "darwin") {
    const sleep = await sleepSettings(options.pmset ?? runPmset);
    results.push(sleep);
    print(sleep);
  }
  for (const [name, step] of steps) {
    let result: CheckResult;
    try {
      result = { name, ok: true, detail: await step() };
    } catch (error) {
      result = { name, ok: false, detail: error instanceof Error ? error.message : String(error) };
    }
    results.push(result);
    print(result);
  }
  const failed = results.filter((r) => !r.ok).length;
  options.print(failed === 0 ? "all checks passed\n" : `${failed} check(s) failed\n`);
  return failed === 0 ? 0 : 1;
}

async function sinkSteps(
  config: Config,
  timeoutMs: number,
): Promise<Array<[string, () => Promise<string>]>> {
  const selected = await selectSink(config);
  const s3 = selected.s3;
  if (!s3) {
    return [["archive dir", async () => {
      const dir = join(config.dataDir, "archive");
      await probeDirectory(dir);
      selected.close();
      return `${dir} takes a write and a rename`;
    }]];
  }
  const probeKey = `${config.prefix}/_l2-uploader-check/${config.instanceId}-${Date.now()}.probe`;
  return [
    ["s3 head-bucket", async () => {
      const result = await checkBucket(s3, AbortSignal.timeout(timeoutMs));
      if (result.ok) return `${s3.describe()} is reachable`;
      // `run` stops on a refusal; without an answer it records anyway, spooling.
      throw new Error(result.permanent ? result.message : `${result.message}; ${SPOOLING}`);
    }],
    ["s3 put + delete", async () => {
      try {
        const meta = { messages: 0, events: 0, firstRecvTs: 0, lastRecvTs: 0 };
        await s3.put(
          probeKey,
          new TextEncoder().encode("probe\n"),
          meta,
          AbortSignal.timeout(timeoutMs),
        );
        await s3.deleteObject(probeKey, AbortSignal.timeout(timeoutMs));
        return `put and deleted s3://${s3.bucket}/${probeKey}`;
      } catch (error) {
        throw new Error(`${s3.describe()}: ${s3ErrorCode(error)}: ${(error as Error).message}`);
      } finally {
        selected.close();
      }
    }],
  ];
}

/** A Mac that may sleep on AC power stops recording: a warning with the fix. */
async function sleepSettings(pmset: () => Promise<string>): Promise<CheckResult> {
  const name = "sleep settings";
  try {
    const advice = sleepAdvice(parsePmset(await pmset()));
    return { name, ok: true, warn: !advice.ok, detail: advice.detail };
  } catch (error) {
    return {
      name,
      ok: true,
      warn: true,
      detail: `cannot run pmset -g: ${(error as Error).message}`,
    };
  }
}

async function runPmset(): Promise<string> {
  const out = await new Deno.Command(PMSET, { args: ["-g"], stdin: "null" }).output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr).trim());
  return new TextDecoder().decode(out.stdout);
}

async function describeLock(dataDir: string): Promise<string> {
  const holder = await currentHolder(dataDir);
  return holder === undefined
    ? `${dataDir} is free (no collector runs on it)`
    : `${dataDir} is in use by a running collector (${describeHolder(holder)})`;
}

async function probeDirectory(dir: string): Promise<string> {
  await probeWritable(dir);
  return `${dir} takes a write and a rename`;
}

const SPOOLING = "`run` would record anyway, spooling until S3 answers";
const UNCHECKED = "`run` would record the named symbols anyway, unchecked";

async function pingBinance(config: Config, options: CheckOptions): Promise<string> {
  const url = `${config.restUrl}${restPaths(config.market).ping}`;
  const response = await (options.fetch ?? fetch)(url, {
    signal: AbortSignal.timeout(options.timeoutMs ?? 15_000),
  }).catch((error) => {
    throw unreachable(url, error, UNCHECKED);
  });
  await response.body?.cancel();
  if (!response.ok) throw new Error(`${url} answered HTTP ${response.status}; ${UNCHECKED}`);
  return `${url} answered ${response.status}`;
}

/**
 * A request that got no answer, with where it went and why (fetch says only
 * "fetch failed"; the cause says refused, DNS or TLS).
 */
function unreachable(url: string, error: unknown, then: string): Error {
  const message = error instanceof Error ? error.message : String(error);
  const cause = error instanceof Error && error.cause instanceof Error ? error.cause.message : "";
  return new Error(`${url}: ${message}${cause && cause !== message ? ` (${cause})` : ""}; ${then}`);
}

/**
 * The symbols SYMBOL names are listed by Binance: `run` refuses to start
 * otherwise (exit 2), when `exchangeInfo` begins to answer within 3 s.
 */
async function checkListed(config: Config, options: CheckOptions): Promise<string> {
  const named = namedSymbols(config.symbols);
  if (named.length === 0) return "SYMBOL names patterns only: they resolve when recording starts";
  const result = await checkSymbols(named, {
    restUrl: config.restUrl,
    market: config.market,
    limiter: new RestLimiter({ market: config.market, fetch: options.fetch }),
    signal: AbortSignal.timeout(options.timeoutMs ?? 15_000),
  }).catch((error) => {
    // `run` records the named symbols anyway whatever keeps the listing from it.
    throw error instanceof TypeError
      ? unreachable(config.restUrl, error, UNCHECKED)
      : new Error(`${error instanceof Error ? error.message : error}; ${UNCHECKED}`);
  });
  if (result.unknown.length > 0) {
    throw new Error(`Binance does not list ${result.unknown.join(", ")} on ${config.market}`);
  }
  const halted = result.notTrading.map((s) => `${s.symbol} (${s.status})`);
  return `${named.length} listed on ${config.market}` +
    (halted.length > 0 ? `; not trading now, recorded anyway: ${halted.join(", ")}` : "");
}

/**
 * METRICS_ADDR can be bound: `run` exits 2 when it cannot. A collector
 * running on this DATA_DIR holds it itself: not a failure (as for the lock).
 */
async function probeBind(
  address: { hostname: string; port: number },
  dataDir: string,
): Promise<string> {
  const where = `${address.hostname}:${address.port}`;
  try {
    Deno.listen({ hostname: address.hostname, port: address.port }).close();
  } catch (error) {
    if (!(error instanceof Deno.errors.AddrInUse)) throw error;
    const holder = await currentHolder(dataDir).catch(() => undefined);
    if (holder) {
      return `${where} is in use, by the running collector presumably (${describeHolder(holder)})`;
    }
    throw new Error(`${where} is already in use (another collector, or another program)`);
  }
  return `${where} is free`;
}

/**
 * LOG_FILE can be opened for appending: `run` exits 2 when it cannot. A
 * missing file is not created (`sudo l2-uploader check` would leave one the
 * daemon's user cannot write): its directory must take a file instead, or,
 * when `run` is to make that directory, the nearest one that exists.
 */
async function probeLogFile(path: string): Promise<string> {
  try {
    (await Deno.open(path, { append: true })).close();
    return `${path} takes appends`;
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  const dir = dirname(path);
  let existing = dir;
  while (!(await Deno.stat(existing).catch(() => undefined))) {
    const parent = dirname(existing);
    if (parent === existing) break;
    existing = parent;
  }
  if (!(await Deno.stat(existing).catch(() => undefined))?.isDirectory) {
    throw new Error(`${path}: ${existing} is not a directory`);
  }
  await probeWritable(existing);
  return existing === dir
    ? `${path} can be created in ${dir}`
    : `${path} can be created (run makes ${dir})`;
}

function describeConfig(config: Config): string {
  const where = config.s3
    ? `s3://${config.s3.bucket}/${config.prefix}`
    : join(config.dataDir, "archive");
  // Patterns (SYMBOL=ALL, *USDT) resolve against exchangeInfo when recording starts.
  const patterns = config.symbols.some((t) => t.includes("*"));
  const symbols = patterns || config.symbols.length > 5
    ? `SYMBOL=${config.symbols.join(",")}`
    : config.symbols.join(",");
  const named = config.symbols.filter((s) => !matchesAny(s, config.symbolExclude));
  const mine = named.filter((s) => inShard(s, config.shard));
  // Named symbols only: which of them this instance records is known now.
  const shard = config.shard.count <= 1
    ? ""
    : patterns
    ? ` (shard ${config.shard.index}/${config.shard.count})`
    : ` (shard ${config.shard.index}/${config.shard.count}: ${
      mine.length === 0 ? "none of them: this instance records nothing" : mine.join(",")
    })`;
  return `${config.market} ${symbols}${shard}, depth ${config.depthLevel}, ` +
    `${config.updateSpeedMs} ms → ${where}`;
}
