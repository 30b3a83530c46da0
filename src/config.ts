/**
 * Turns the process environment (plus an optional .env file) into the validated, frozen `Config`
 * of config_types.ts. Every bad option is reported in one go, naming the variable, its value (never
 * a secret's) and what is allowed, so an operator fixes a broken deployment in one round trip.
 */

import { parse as parseDotenv } from "dotenv";
import { z } from "zod";
import { redactUrlValue } from "./ops/redact.ts";
import { canonicalTerm, isPattern, matchesAny } from "./binance/selection.ts";
import { parseShard } from "./binance/shard.ts";
import type { Config, DepthLevel, LogLevel, Market, S3Config, StreamKind } from "./config_types.ts";

/** One bad option. `value` is the raw value as found, or `"<redacted>"` for a secret. */
export interface ConfigProblem {
  variable: string;
  value: string | undefined;
  allowed: string;
}

/** Thrown by `parseConfig`; `message` holds every problem, one per line. */
export class ConfigError extends Error {
  readonly problems: readonly ConfigProblem[];

  constructor(problems: readonly ConfigProblem[]) {
    super(problems.map(formatProblem).join("\n"));
    this.name = "ConfigError";
    this.problems = Object.freeze(problems.map((p) => Object.freeze({ ...p })));
  }
}

/** Variables whose values must never reach a log line or an error message. */
export const SECRET_VARIABLES: readonly string[] = Object.freeze([
  "AWS_SECRET_ACCESS_KEY",
  "AWS_ACCESS_KEY_ID",
  "AWS_SESSION_TOKEN",
  "ALERT_WEBHOOK_URL",
]);

/** Binance's public endpoints, used unless BINANCE_WS_URL / BINANCE_REST_URL override them. */
export const DEFAULT_URLS = Object.freeze(
  {
    spot: Object.freeze({ ws: "wss://stream.binance.com:9443", rest: "https://api.binance.com" }),
    usdm: Object.freeze({
      ws: "wss://fstream.binance.com/public",
      rest: "https://fapi.binance.com",
    }),
  } as const,
);

const REDACTED = "<redacted>";
const FALLBACK_INSTANCE_ID = "l2-uploader";
const INSTANCE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** npm dotenv's `parse`: quotes, `#` comments, `export` prefixes and multi-line values. */
export function parseEnvFile(text: string): Record<string, string> {
  return parseDotenv(text);
}

/**
 * The environment `parseConfig` should see. A variable present in the real environment wins,
 * even when it is empty (dotenv's own rule: an explicit `VAR=` in the shell is a decision).
 */
export function mergeEnv(
  real: Record<string, string>,
  file: Record<string, string>,
): Record<string, string> {
  return { ...file, ...real };
}

const BYTE_SIZE_PATTERN = /^(\d+(?:\.\d+)?)\s*(?:([KMGT])(?:i?B)?|B)?$/i;
const BYTE_UNIT_POWER: Readonly<Record<string, number>> = { K: 1, M: 2, G: 3, T: 4 };

/**
 * Parses "1048576", "512KB", "64MB", "1.5GB", "64MiB", "10 GB" into bytes.
 * KB/MB/GB/TB are 1024-based, exactly like KiB/MiB/GiB/TiB: these sizes bound memory and disk, where
 * operators think in binary units, and one meaning per suffix avoids off-by-7% surprises.
 * Units are case-insensitive; a fractional result is rounded down to whole bytes.
 * Returns undefined for anything else (negative, exponent notation, unknown unit, unsafe integer).
 */
export function parseByteSize(text: string): number | undefined {
  const match = BYTE_SIZE_PATTERN.exec(text.trim());
  if (!match) return undefined;
  const [, amount, unit] = match;
  const power = unit === undefined ? 0 : BYTE_UNIT_POWER[unit.toUpperCase()];
  // A fraction of a byte has no meaning; a fraction of a larger unit does.
  if (power === 0 && amount.includes(".")) return undefined;
  const bytes = Math.floor(Number(amount) * 1024 ** power);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

// ---------------------------------------------------------------------------------------------
// Field schemas. Each takes the raw `string | undefined` of one variable; empty or blank means
// unset. Defaults are given as raw strings and go through the same validation as user input, so
// the defaults table here mirrors docs/DESIGN.md literally and cannot drift into an invalid value.

/** A trimmed value, or `fallback` when unset or blank. */
function setting(fallback: string) {
  return z.string().optional().transform((raw) => raw?.trim() || fallback);
}

/** A trimmed value, or undefined when unset or blank. */
function optionalSetting() {
  return z.string().optional().transform((raw) => raw?.trim() || undefined);
}

function integer(min: number, max: number) {
  const allowed = `an integer from ${min} to ${max}`;
  return z.string().regex(/^\d+$/, allowed).transform(Number).pipe(
    z.number().int(allowed).min(min, allowed).max(max, allowed),
  );
}

/** Case-insensitive choice; the output is the canonical spelling from `values`. */
function choice<const T extends readonly [string, ...string[]]>(values: T) {
  const message = `one of ${values.join(", ")}`;
  const canonical = new Map(values.map((v) => [v.toLowerCase(), v] as const));
  return z.string().transform((s) => canonical.get(s.toLowerCase()) ?? s).pipe(
    z.enum(values, { error: message }),
  );
}

function byteSize() {
  const allowed = "a byte size above 0 such as 1048576, 512KB, 64MB or 1.5GB (1024-based units)";
  return z.string().transform((s, ctx) => {
    const bytes = parseByteSize(s);
    if (bytes === undefined || bytes <= 0) {
      ctx.addIssue({ code: "custom", message: allowed });
      return z.NEVER;
    }
    return bytes;
  });
}

function httpUrl() {
  return z.url({ protocol: /^https?$/, error: "an http:// or https:// URL" });
}

/** A Binance base URL: the feed appends paths and query strings, so it may carry neither. */
function binanceBaseUrl(protocol: RegExp, allowed: string) {
  return z.url({ protocol, error: allowed })
    .refine((s) => {
      // Runs even after the URL check failed (zod refinements continue), hence URL.parse.
      const url = URL.parse(s);
      return url === null || (url.search === "" && url.hash === "");
    }, allowed)
    .transform((s) => s.replace(/\/+$/, ""));
}

/**
 * Symbol terms (SYMBOL, SYMBOL_EXCLUDE): names, `*` patterns, or `ALL` (kept
 * as `*`), upper-cased. Letters and digits of any script: spot lists symbols
 * with non-ASCII letters (BINANCE.md, Payloads). `_` appears only in USD-M
 * delivery contracts such as ETHUSDT_210625.
 */
function symbolTerms(market: Market | undefined, options: { required: boolean }) {
  const characters = market === "usdm"
    ? "letters, digits and _"
    : market === "spot"
    ? "letters and digits"
    : "letters and digits (and _ for MARKET=usdm)";
  const allowed = `one or more comma-separated symbols of 2 to 30 ${characters}, ` +
    `patterns with * (such as *USDT) or ALL`;
  const name = market === "spot" ? /^[\p{L}\p{N}]{2,30}$/u : /^[\p{L}\p{N}_]{2,30}$/u;
  const pattern = market === "spot" ? /^[\p{L}\p{N}*]{1,30}$/u : /^[\p{L}\p{N}_*]{1,30}$/u;
  const term = z.string().refine(
    (t) => t === "*" || (t.includes("*") ? pattern.test(t) : name.test(t)),
    allowed,
  );
  return z.string()
    .transform((s) => [
      ...new Set(
        s.split(",").map((p) => p.trim()).filter(Boolean).map(canonicalTerm).map((t) =>
          t.normalize("NFC")
        ),
      ),
    ])
    .pipe(z.array(term).min(options.required ? 1 : 0, allowed));
}

const STREAM_KINDS = ["depth", "trade", "aggTrade", "bookTicker"] as const;

/** STREAMS: what to record per symbol, comma-separated, case-insensitive; `trade` is spot only. */
function streamKinds(market: Market | undefined) {
  const allowed = market === "usdm"
    ? "one or more of depth, aggTrade, bookTicker (USD-M has no public trade stream)"
    : "one or more of depth, trade, aggTrade, bookTicker";
  const canonical = new Map(STREAM_KINDS.map((k) => [k.toLowerCase(), k] as const));
  return z.string()
    .transform((s) => [
      ...new Set(
        s.split(",").map((p) => p.trim()).filter(Boolean).map((p) =>
          canonical.get(p.toLowerCase()) ?? p
        ),
      ),
    ])
    .pipe(
      z.array(
        z.string().refine(
          (k) =>
            (STREAM_KINDS as readonly string[]).includes(k) &&
            !(k === "trade" && market === "usdm"),
          allowed,
        ),
      ).min(1, allowed),
    )
    .transform((kinds) => kinds as StreamKind[]);
}

const UPDATE_SPEEDS: Readonly<Record<Market, readonly number[]>> = {
  spot: [100, 1000],
  usdm: [100, 250, 500],
};
const SNAPSHOT_LIMITS: Readonly<Record<Market, readonly number[]>> = {
  spot: [5, 10, 20, 50, 100, 500, 1000, 5000],
  usdm: [5, 10, 20, 50, 100, 500, 1000],
};

function listAllowed(values: readonly number[]): string {
  return values.length === 1
    ? String(values[0])
    : `${values.slice(0, -1).join(", ")} or ${values[values.length - 1]}`;
}

/**
 * An integer from a set that depends on MARKET. With MARKET itself invalid, any value valid for
 * some market passes: MARKET's own problem is reported, and guessing which market was meant
 * would only add a misleading second line.
 */
function perMarket(table: Readonly<Record<Market, readonly number[]>>, market: Market | undefined) {
  const allowed = market === undefined
    ? `${listAllowed(table.spot)} for MARKET=spot, ${listAllowed(table.usdm)} for MARKET=usdm`
    : `${listAllowed(table[market])} for MARKET=${market}`;
  const values = market === undefined ? [...table.spot, ...table.usdm] : table[market];
  return z.string().regex(/^\d+$/, allowed).transform(Number).refine(
    (n) => values.includes(n),
    allowed,
  );
}

const STORAGE_CLASSES = [
  "STANDARD",
  "STANDARD_IA",
  "ONEZONE_IA",
  "INTELLIGENT_TIERING",
  "GLACIER_IR",
  "GLACIER",
  "DEEP_ARCHIVE",
  "REDUCED_REDUNDANCY",
  "EXPRESS_ONEZONE",
] as const;

// AWS's general-purpose bucket naming rules, which S3-compatible stores follow too.
const BUCKET_ALLOWED =
  "a bucket name of 3 to 63 lower-case letters, digits, dots and hyphens, starting and ending with a letter or digit";
const bucketName = z.string()
  .regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, BUCKET_ALLOWED)
  .refine((s) => !s.includes(".."), BUCKET_ALLOWED)
  .refine((s) => !/^\d{1,3}(\.\d{1,3}){3}$/.test(s), BUCKET_ALLOWED);

// The prefix becomes part of S3 keys and of local paths under DATA_DIR/archive, so `..` could
// escape the archive and an empty segment would write keys the local sink cannot mirror.
const PREFIX_ALLOWED =
  "a key prefix without a leading slash, empty segments, . or .. segments, or control characters";
const keyPrefix = z.string()
  .transform((s) => s.replace(/\/+$/, ""))
  .refine((s) => !s.startsWith("/") && s !== "", PREFIX_ALLOWED)
  .refine(
    (s) => s.split("/").every((seg) => seg !== "" && seg !== "." && seg !== ".."),
    PREFIX_ALLOWED,
  )
  // deno-lint-ignore no-control-regex
  .refine((s) => !/[\u0000-\u001f\u007f]/.test(s), PREFIX_ALLOWED);

// Nothing expands `~` (launchd runs no shell): `~/l2` would be a directory named `~` here.
const PATH_ALLOWED =
  "a path not starting with ~ (write the home directory out, e.g. /Users/you/l2)";
const localPath = z.string().refine((s) => !s.startsWith("~"), PATH_ALLOWED);

const METRICS_ALLOWED = "host:port or [IPv6]:port with a port from 0 to 65535, or off";
const metricsAddr = z.string().transform((s, ctx) => {
  if (s.toLowerCase() === "off") return undefined;
  const match = /^(?:\[([0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(s);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) {
    ctx.addIssue({ code: "custom", message: METRICS_ALLOWED });
    return z.NEVER;
  }
  // Deno.serve wants an IPv6 hostname without the brackets.
  return { hostname: match[1] ?? match[2], port };
});

const depthLevel = choice(["5", "10", "20", "full"]).transform((v): DepthLevel =>
  v === "full" ? v : Number(v) as 5 | 10 | 20
);

const LOG_LEVEL_ALLOWED = "one of trace, debug, info, warning (or warn), error, fatal";
const logLevel = z.string()
  .transform((s) => (s.toLowerCase() === "warn" ? "warning" : s.toLowerCase()))
  .pipe(
    z.enum(["trace", "debug", "info", "warning", "error", "fatal"] satisfies LogLevel[], {
      error: LOG_LEVEL_ALLOWED,
    }),
  );

/**
 * What some rules need to know about other variables. Read before the main parse, so every
 * field's schema stays self-contained: zod skips object-level refinements once certain field
 * checks fail (stringbool, integer format), which would hide cross-field problems from the
 * all-at-once report.
 */
interface Context {
  /** undefined when MARKET is invalid (its own problem is reported). */
  readonly market?: Market;
  readonly sse?: "AES256" | "aws:kms";
  readonly isSet: (variable: string) => boolean;
}

const marketField = setting("spot").pipe(choice(["spot", "usdm"]));
const sseField = optionalSetting().pipe(choice(["AES256", "aws:kms"]).optional());

function readContext(env: Readonly<Record<string, string | undefined>>): Context {
  return {
    market: marketField.safeParse(env.MARKET).data,
    sse: sseField.safeParse(env.S3_SSE).data,
    isSet: (variable) => (env[variable]?.trim() ?? "") !== "",
  };
}

/**
 * The SDK's environment provider needs both keys; with only one it silently falls through to the
 * next provider, and the bucket would be written with credentials nobody meant to use. Checked
 * only with a bucket: the local sink ignores AWS variables left in a shell.
 */
function credentialPair(context: Context, partner: string) {
  // Only the missing half is reported: that is the one to fix.
  return optionalSetting().refine(
    (value) => value !== undefined || !context.isSet("S3_BUCKET_NAME") || !context.isSet(partner),
    `to be set together with ${partner} (or neither, to use the AWS credential chain)`,
  );
}

/** The env schema: one entry per variable, in docs/DESIGN.md's order (which is also report order). */
function envSchema(context: Context) {
  return z.object({
    ...selectionFields(context),
    ...storageFields(context),
    ...connectionFields(context),
    ...runningFields(),
  });
}

/** Which streams of which symbols: SYMBOL to TIME_UNIT. */
function selectionFields({ market }: Context) {
  return {
    // stream selection
    SYMBOL: setting("BTCUSDT").pipe(symbolTerms(market, { required: true })),
    SYMBOL_EXCLUDE: setting("").pipe(symbolTerms(market, { required: false })),
    SHARD: setting("0/1").pipe(
      z.string().transform((s, ctx) => {
        const shard = parseShard(s);
        if (!shard) {
          ctx.addIssue({ code: "custom", message: "k/N with 0 <= k < N <= 1024, such as 0/3" });
          return z.NEVER;
        }
        return shard;
      }),
    ),
    EXCHANGE_INFO_REFRESH_SECONDS: setting("300").pipe(integer(1, 86400)),
    STREAMS: setting("depth").pipe(streamKinds(market)),
    MARKET: marketField,
    DEPTH_LEVEL: setting("20").pipe(depthLevel),
    UPDATE_SPEED_MS: setting("100").pipe(perMarket(UPDATE_SPEEDS, market)),
    // Only spot offers microsecond event times (BINANCE.md, Endpoints).
    TIME_UNIT: setting("ms").pipe(choice(["ms", "us"])).refine(
      (unit) => unit === "ms" || market !== "usdm",
      "ms for MARKET=usdm (only spot offers us)",
    ),
  };
}

/** Batches, the sink and the spool: BATCH_SECONDS to SPOOL_MAX_BYTES. */
function storageFields(context: Context) {
  const { sse, isSet } = context;
  return {
    // batching
    BATCH_SECONDS: setting("60").pipe(integer(1, 3600)),
    MAX_MESSAGES_PER_BATCH: setting("10000").pipe(integer(1, 1_000_000)),
    // storage
    S3_BUCKET_NAME: optionalSetting().pipe(bucketName.optional()),
    S3_PREFIX: setting("binance").pipe(keyPrefix),
    AWS_REGION: optionalSetting().pipe(
      z.string().regex(/^[a-z0-9]+(-[a-z0-9]+)*$/, "a region name such as us-east-1").optional(),
    ),
    // Given to the SDK (from the environment or the env file, which the SDK cannot read).
    AWS_ACCESS_KEY_ID: credentialPair(context, "AWS_SECRET_ACCESS_KEY"),
    AWS_SECRET_ACCESS_KEY: credentialPair(context, "AWS_ACCESS_KEY_ID"),
    AWS_SESSION_TOKEN: optionalSetting().refine(
      (value) =>
        value === undefined || !isSet("S3_BUCKET_NAME") ||
        (isSet("AWS_ACCESS_KEY_ID") && isSet("AWS_SECRET_ACCESS_KEY")),
      "to be set only together with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    ),
    AWS_PROFILE: optionalSetting(),
    S3_ENDPOINT: optionalSetting().pipe(httpUrl().optional()),
    S3_FORCE_PATH_STYLE: setting("false").pipe(
      z.stringbool({
        truthy: ["true", "1", "yes"],
        falsy: ["false", "0", "no"],
        error: "one of true, false, 1, 0, yes, no",
      }),
    ),
    S3_SSE: sseField,
    S3_SSE_KMS_KEY_ID: optionalSetting().refine(
      // With S3_SSE itself invalid, its own problem says enough.
      (value) => value === undefined || sse === "aws:kms" || (isSet("S3_SSE") && !sse),
      "to be unset unless S3_SSE=aws:kms",
    ),
    S3_STORAGE_CLASS: optionalSetting().pipe(choice(STORAGE_CLASSES).optional()),
    UPLOAD_CONCURRENCY: setting("4").pipe(integer(1, 64)),
    UPLOAD_QUEUE_MAX_BYTES: setting("64MB").pipe(byteSize()),
    GZIP_LEVEL: setting("5").pipe(integer(1, 9)),
    // spool
    DATA_DIR: setting("./data").pipe(localPath),
    SPOOL_MAX_BYTES: setting("10GB").pipe(byteSize()),
  };
}

/** The Binance endpoints and how connections and snapshots run: BINANCE_WS_URL to STREAMS_PER_CONNECTION. */
function connectionFields({ market }: Context) {
  return {
    // Binance connection; the defaults depend on MARKET and are applied in parseConfig.
    BINANCE_WS_URL: optionalSetting().pipe(
      binanceBaseUrl(/^wss?$/, "a ws:// or wss:// URL without query or fragment").optional(),
    ),
    BINANCE_REST_URL: optionalSetting().pipe(
      binanceBaseUrl(/^https?$/, "an http:// or https:// URL without query or fragment")
        .optional(),
    ),
    // 86400 s is Binance's hard cut-off; rotation must come before it.
    WS_ROTATE_SECONDS: setting("85500").pipe(integer(1, 86000)),
    STALE_AFTER_SECONDS: setting("30").pipe(integer(1, 3600)),
    SNAPSHOT_INTERVAL_SECONDS: setting("3600").pipe(integer(10, 86400)),
    SNAPSHOT_LIMIT: setting("1000").pipe(perMarket(SNAPSHOT_LIMITS, market)),
    STREAMS_PER_CONNECTION: setting("200").pipe(integer(1, 1024)),
  };
}

/** Running 24/7, metrics, alerts and logging: SUSPEND_THRESHOLD_SECONDS to LOG_MAX_FILES. */
function runningFields() {
  return {
    // running 24/7 on a Mac
    SUSPEND_THRESHOLD_SECONDS: setting("5").pipe(integer(2, 3600)),
    PREVENT_SLEEP: setting("true").pipe(
      z.stringbool({
        truthy: ["true", "1", "yes"],
        falsy: ["false", "0", "no"],
        error: "one of true, false, 1, 0, yes, no",
      }),
    ),
    // metrics and alerts
    METRICS_ADDR: setting("127.0.0.1:9464").pipe(metricsAddr),
    METRICS_PER_STREAM: setting("false").pipe(
      z.stringbool({
        truthy: ["true", "1", "yes"],
        falsy: ["false", "0", "no"],
        error: "one of true, false, 1, 0, yes, no",
      }),
    ),
    ALERT_WEBHOOK_URL: optionalSetting().pipe(httpUrl().optional()),
    // Defaults to the host name, applied in parseConfig (the schema stays pure).
    INSTANCE_ID: optionalSetting().pipe(
      z.string().regex(
        INSTANCE_ID_PATTERN,
        "1 to 63 characters A-Z, a-z, 0-9, '.', '_' or '-', starting with a letter or digit",
      ).optional(),
    ),
    // logging
    LOG_FILE: optionalSetting().pipe(localPath.optional()),
    LOG_LEVEL: setting("info").pipe(logLevel),
    LOG_FORMAT: setting("text").pipe(choice(["text", "json"])),
    LOG_MAX_BYTES: setting("50MB").pipe(byteSize()),
    LOG_MAX_FILES: setting("10").pipe(integer(1, 1000)),
  };
}

/** A usable instance id from a host name: other characters become "-", edges are trimmed. */
function instanceIdFromHostname(hostname: string | undefined): string {
  const id = (hostname ?? "")
    .replace(/[^A-Za-z0-9._-]/g, "-")
    .replace(/^[^A-Za-z0-9]+/, "")
    .slice(0, 63)
    .replace(/[^A-Za-z0-9]+$/, "");
  return INSTANCE_ID_PATTERN.test(id) ? id : FALLBACK_INSTANCE_ID;
}

function formatProblem(p: ConfigProblem): string {
  const shown = p.value === undefined
    ? " (unset)"
    : p.value === REDACTED
    ? `=${REDACTED}`
    : `=${JSON.stringify(p.value)}`;
  return `${p.variable}${shown}: expected ${p.allowed}`;
}

function toProblems(
  issues: readonly z.core.$ZodIssue[],
  env: Readonly<Record<string, string | undefined>>,
  order: readonly string[],
): ConfigProblem[] {
  const byVariable = new Map<string, ConfigProblem>();
  for (const issue of issues) {
    const variable = String(issue.path[0] ?? "(config)");
    // One problem per variable: a value failing several checks needs one fix, one line.
    if (byVariable.has(variable)) continue;
    const raw = env[variable];
    const value = SECRET_VARIABLES.includes(variable) && raw !== undefined && raw !== ""
      ? REDACTED
      : raw === undefined
      ? raw
      : redactUrlValue(raw);
    byVariable.set(variable, { variable, value, allowed: issue.message });
  }
  const rank = (v: string) => {
    const i = order.indexOf(v);
    return i === -1 ? order.length : i;
  };
  return [...byVariable.values()].sort((a, b) => rank(a.variable) - rank(b.variable));
}

/** Drops undefined-valued keys, so an optional setting that is off is absent, not `undefined`. */
function compact<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

/** Every variable the configuration reads, in docs/DESIGN.md's order (the docs test holds them to it). */
export const OPTION_NAMES: readonly string[] = Object.freeze(
  Object.keys(envSchema({ isSet: () => false }).shape),
);

/**
 * METRICS_ADDR alone, for `status` when another option is wrong (the
 * collector may still run with an earlier, valid configuration): the
 * address, undefined for `off`, or what is wrong with it.
 */
export function metricsAddressOf(
  env: Readonly<Record<string, string | undefined>>,
): { hostname: string; port: number } | undefined | { problem: string } {
  const parsed = setting("127.0.0.1:9464").pipe(metricsAddr).safeParse(env.METRICS_ADDR);
  return parsed.success ? parsed.data : { problem: `METRICS_ADDR: ${METRICS_ALLOWED}` };
}

/**
 * Validates `env` (already merged with the .env file) and applies docs/DESIGN.md's defaults.
 * Pure: the host name for the default INSTANCE_ID comes in through `options`.
 * Throws `ConfigError` listing every problem at once.
 */
export function parseConfig(
  env: Readonly<Record<string, string | undefined>>,
  options: { hostname?: string } = {},
): Config {
  const schema = envSchema(readContext(env));
  const result = schema.safeParse(env);
  const problems = result.success
    ? []
    : toProblems(result.error.issues, env, Object.keys(schema.shape));
  const include = schema.shape.SYMBOL.safeParse(env.SYMBOL);
  const exclude = schema.shape.SYMBOL_EXCLUDE.safeParse(env.SYMBOL_EXCLUDE);
  // Every term excluded: `run` would record nothing, for ever, and say nothing.
  if (
    include.success && exclude.success && exclude.data.length > 0 &&
    include.data.every((term) => excludedWhole(term, exclude.data))
  ) {
    problems.push({
      variable: "SYMBOL_EXCLUDE",
      value: env.SYMBOL_EXCLUDE,
      allowed: "to leave at least one of the symbols SYMBOL names",
    });
  }
  if (problems.length > 0 || !result.success) throw new ConfigError(problems);
  return toConfig(result.data, options.hostname);
}

/**
 * Whether the exclusion leaves nothing of `term`: a name it matches, or a
 * pattern it repeats or that its `*` (ALL) covers.
 */
function excludedWhole(term: string, exclude: readonly string[]): boolean {
  if (!isPattern(term)) return matchesAny(term, exclude);
  return exclude.includes(term) || exclude.includes("*");
}

type Env = z.infer<ReturnType<typeof envSchema>>;

/** The S3 part of the configuration, when a bucket is set. */
function s3Config(e: Env): S3Config | undefined {
  return e.S3_BUCKET_NAME === undefined ? undefined : Object.freeze(
    compact({
      bucket: e.S3_BUCKET_NAME,
      prefix: e.S3_PREFIX,
      region: e.AWS_REGION,
      credentials: e.AWS_ACCESS_KEY_ID !== undefined && e.AWS_SECRET_ACCESS_KEY !== undefined
        ? compact({
          accessKeyId: e.AWS_ACCESS_KEY_ID,
          secretAccessKey: e.AWS_SECRET_ACCESS_KEY,
          sessionToken: e.AWS_SESSION_TOKEN,
        })
        : undefined,
      profile: e.AWS_PROFILE,
      endpoint: e.S3_ENDPOINT,
      forcePathStyle: e.S3_FORCE_PATH_STYLE,
      sse: e.S3_SSE,
      sseKmsKeyId: e.S3_SSE_KMS_KEY_ID,
      storageClass: e.S3_STORAGE_CLASS,
    }),
  );
}

/** The validated variables as the resolved, frozen Config, with the defaults that depend on others. */
function toConfig(e: Env, hostname: string | undefined): Config {
  const config: Config = compact({
    symbols: Object.freeze(e.SYMBOL),
    symbolExclude: Object.freeze(e.SYMBOL_EXCLUDE),
    shard: e.SHARD,
    exchangeInfoRefreshSeconds: e.EXCHANGE_INFO_REFRESH_SECONDS,
    streamKinds: Object.freeze(e.STREAMS),
    market: e.MARKET,
    depthLevel: e.DEPTH_LEVEL,
    updateSpeedMs: e.UPDATE_SPEED_MS,
    timeUnit: e.TIME_UNIT,
    batchSeconds: e.BATCH_SECONDS,
    maxMessagesPerBatch: e.MAX_MESSAGES_PER_BATCH,
    prefix: e.S3_PREFIX,
    s3: s3Config(e),
    uploadConcurrency: e.UPLOAD_CONCURRENCY,
    uploadQueueMaxBytes: e.UPLOAD_QUEUE_MAX_BYTES,
    gzipLevel: e.GZIP_LEVEL,
    dataDir: e.DATA_DIR,
    spoolMaxBytes: e.SPOOL_MAX_BYTES,
    wsUrl: e.BINANCE_WS_URL ?? DEFAULT_URLS[e.MARKET].ws,
    restUrl: e.BINANCE_REST_URL ?? DEFAULT_URLS[e.MARKET].rest,
    wsRotateSeconds: e.WS_ROTATE_SECONDS,
    staleAfterSeconds: e.STALE_AFTER_SECONDS,
    snapshotIntervalSeconds: e.SNAPSHOT_INTERVAL_SECONDS,
    snapshotLimit: e.SNAPSHOT_LIMIT,
    streamsPerConnection: e.STREAMS_PER_CONNECTION,
    suspendThresholdSeconds: e.SUSPEND_THRESHOLD_SECONDS,
    preventSleep: e.PREVENT_SLEEP,
    metrics: e.METRICS_ADDR === undefined ? undefined : Object.freeze(e.METRICS_ADDR),
    // Only when set: the resolved defaults stay what they were before the option.
    ...(e.METRICS_PER_STREAM ? { metricsPerStream: true } : {}),
    alertWebhookUrl: e.ALERT_WEBHOOK_URL,
    instanceId: e.INSTANCE_ID ?? instanceIdFromHostname(hostname),
    logFile: e.LOG_FILE,
    logLevel: e.LOG_LEVEL,
    logFormat: e.LOG_FORMAT,
    logMaxBytes: e.LOG_MAX_BYTES,
    logMaxFiles: e.LOG_MAX_FILES,
  });
  return Object.freeze(config);
}
