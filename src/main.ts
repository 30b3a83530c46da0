/**
 * Entry point of `l2-uploader` (also what `deno task start` and
 * `deno compile` use). The only module that reads arguments and the
 * environment, sets up logging, handles signals and picks the exit code:
 * 0 done, 1 unexpected failure, 2 bad configuration or start-up problem.
 */

import { getLogger } from "@logtape/logtape";
import { dirname } from "node:path";
import { parseArgs } from "node:util";
import denoJson from "../deno.json" with { type: "json" };
import { book, BOOK_ARG_OPTIONS, writeAllSync } from "./cli/book.ts";
import { check } from "./cli/check.ts";
import { install, installOptionsFromCli, uninstall } from "./cli/install.ts";
import { run, StartupError } from "./cli/run.ts";
import { status, STATUS_EXIT } from "./cli/status.ts";
import { verify, VERIFY_ARG_OPTIONS } from "./cli/verify.ts";
import {
  ConfigError,
  mergeEnv,
  metricsAddressOf,
  OPTION_NAMES,
  parseConfig,
  parseEnvFile,
} from "./config.ts";
import type { Config } from "./config_types.ts";
import { closeLogging, setUpLogging } from "./ops/logging.ts";
import { redactUrls } from "./ops/redact.ts";

export const VERSION: string = denoJson.version;

const USAGE = `l2-uploader ${VERSION} — records Binance order-book streams to S3 or a local archive

Usage: l2-uploader [command] [--env-file PATH]

Commands:
  run        record until SIGTERM/SIGINT (the default)
  check      validate the configuration, reach the sink (S3: HeadBucket, put and
             delete a probe object) and Binance REST; exit 0 only when all pass
  status     ask the running recorder (METRICS_ADDR) for health, rates, spool and
             last upload; exit 0 ok, 1 warning, 2 critical, 3 not running
  install    run the recorder under launchd (macOS): a LaunchAgent of this user,
             or with --daemon (as root, via sudo) a LaunchDaemon started at boot;
             the current directory becomes its working directory
  uninstall  stop the launchd job and remove its plist
  verify     read the archive (local or S3) for a time range and report per
             stream: messages, duplicates, sequence breaks, time holes,
             unreadable objects, malformed lines, metadata mismatches; exit 0
             clean, 1 a problem found, 2 usage or an archive it cannot list, or
             an object S3 (or the disk) will not hand over after retries
  book       rebuild one symbol's order book from the archive (--symbol, --from,
             --to) and print its top levels as CSV or NDJSON; checks it against
             every later snapshot; exit 0 rebuilt, 1 a check failed or a hole,
             2 usage, or an archive it cannot list or read

Options:
  --env-file PATH   read options from PATH (default: ./.env when it exists)
  --daemon          install/uninstall: the boot-time LaunchDaemon instead of the agent
  --dry-run         install/uninstall: print the plist and the commands, change nothing
  --program PATH    install: the executable launchd runs (default: this executable)
  --log-dir PATH    install: where launchd writes stdout/stderr
                    (default: ~/Library/Logs/l2-uploader, daemon /Library/Logs/l2-uploader)
  --from ISO        verify, book: from this receive time (UTC unless an offset is given)
  --to ISO          verify, book: up to this receive time, exclusive (default: all)
  --symbol SYM      verify: only this symbol (repeatable, or SYM1,SYM2);
                    book: the symbol to rebuild (required)
  --max-hole DUR    verify: no line for longer is a hole, e.g. 500ms, 2s, 1m
                    (default: 10 x the stream's update speed)
  --json            verify: print the report as JSON
  --html FILE       verify: also write the report as a page with a coverage timeline
  --levels N        book: levels per side in each row (default 10)
  --every DUR       book: a row every DUR (e.g. 1s, 100ms) or "update" for every
                    message (default 1s)
  --format FMT      book: csv (default) or ndjson
  --out FILE        book: write rows to FILE instead of stdout
  --channel TYPE    book: the stream type to read, e.g. depth@100ms, or with its
                    market, usdm/depth@100ms (default: the diff stream, else the
                    only one)
  -h, --help        show this help
  -V, --version     print the version

Every option is an environment variable (see .env.example and README.md);
the real environment wins over the .env file.
`;

const COMMANDS = new Set(["run", "check", "status", "install", "uninstall", "verify", "book"]);

const log = getLogger(["l2", "main"]);
const encoder = new TextEncoder();
// Every command's output goes through these: no URL password is ever printed.
const out = (text: string) => Deno.stdout.writeSync(encoder.encode(redactUrls(text)));
const err = (text: string) => Deno.stderr.writeSync(encoder.encode(redactUrls(text)));

const ARG_OPTIONS = {
  "env-file": { type: "string" },
  daemon: { type: "boolean" },
  "dry-run": { type: "boolean" },
  program: { type: "string" },
  "log-dir": { type: "string" },
  ...VERIFY_ARG_OPTIONS,
  ...BOOK_ARG_OPTIONS,
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
} as const;

type ParsedArgs = ReturnType<
  typeof parseArgs<{ args: string[]; allowPositionals: true; options: typeof ARG_OPTIONS }>
>;

export async function main(args: string[]): Promise<number> {
  const cli = parseCommand(args);
  if (typeof cli === "number") return cli;
  const { command, values } = cli;
  if (command === "install" || command === "uninstall") return await runInstall(command, values);
  if (command === "status") return await statusCommand(values["env-file"]);

  const config = await loadConfig(values["env-file"]);
  if (typeof config === "number") return config;

  if (command === "verify") {
    return await verify(config, values, { print: out, printError: err });
  }
  if (command === "book") {
    return await book(config, values, {
      write: (text) => writeAllSync(Deno.stdout, text),
      printError: err,
    });
  }
  if (command === "check") {
    out(`l2-uploader ${VERSION} check\n`);
    return await check(config, { print: out });
  }

  try {
    // As `run` makes DATA_DIR: a LOG_FILE inside it must not fail the first start.
    if (config.logFile) await Deno.mkdir(dirname(config.logFile), { recursive: true });
    await setUpLogging({
      level: config.logLevel,
      format: config.logFormat,
      file: config.logFile,
      maxBytes: config.logMaxBytes,
      maxFiles: config.logMaxFiles,
    });
  } catch (error) {
    // A start-up problem (DESIGN, Exit codes), not a crash.
    err(`l2-uploader: cannot open LOG_FILE "${config.logFile}": ${(error as Error).message}\n`);
    return 2;
  }
  try {
    return await runWithSignals(config);
  } finally {
    await closeLogging();
  }
}

/** The command and its options, or the exit code when there is nothing to run (help, version, a mistake). */
function parseCommand(
  args: string[],
): { command: string; values: ParsedArgs["values"] } | number {
  let parsed: ParsedArgs;
  try {
    parsed = parseArgs({ args, allowPositionals: true, options: ARG_OPTIONS });
  } catch (error) {
    err(`${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (parsed.values.help) {
    out(USAGE);
    return 0;
  }
  if (parsed.values.version) {
    out(`l2-uploader ${VERSION}\n`);
    return 0;
  }
  const command = parsed.positionals[0] ?? "run";
  if (!COMMANDS.has(command) || parsed.positionals.length > 1) {
    err(`unknown command: ${parsed.positionals.join(" ")}\n\n${USAGE}`);
    return 2;
  }
  return { command, values: parsed.values };
}

async function runInstall(
  command: "install" | "uninstall",
  values: ParsedArgs["values"],
): Promise<number> {
  // Needs no configuration: the job reads its env file when launchd starts it.
  const resolved = installOptionsFromCli(values, {
    env: Deno.env.toObject(),
    cwd: Deno.cwd(),
    execPath: Deno.execPath(),
    uid: Deno.uid() ?? -1,
  });
  if ("problem" in resolved) {
    err(`l2-uploader ${command}: ${resolved.problem}\n`);
    return 1;
  }
  const options = { ...resolved.options, print: out };
  return command === "install" ? await install(options) : await uninstall(options);
}

/** The configuration from the environment and the env file, or exit code 2 with every problem printed. */
async function loadConfig(envFile: string | undefined): Promise<Config | number> {
  try {
    const fileVars = await readEnvFile(envFile);
    return parseConfig(mergeEnv(Deno.env.toObject(), fileVars), { hostname: hostname() });
  } catch (error) {
    if (error instanceof ConfigError || error instanceof StartupError) {
      err(`l2-uploader: configuration error\n${error.message}\n`);
      return 2;
    }
    throw error;
  }
}

/**
 * `status` exits 0-3 by the collector's health (2 is "critical"): a bad
 * option elsewhere in the configuration is reported, and the instance at
 * METRICS_ADDR is asked anyway, since one may run with an earlier, valid one.
 */
async function statusCommand(envFile: string | undefined): Promise<number> {
  let env: Record<string, string | undefined> = Deno.env.toObject();
  try {
    env = mergeEnv(Deno.env.toObject(), await readEnvFile(envFile));
    return await status(parseConfig(env, { hostname: hostname() }).metrics, { print: out });
  } catch (error) {
    if (!(error instanceof ConfigError || error instanceof StartupError)) throw error;
    const address = metricsAddressOf(env);
    if (address && "problem" in address) {
      err(`l2-uploader status: ${address.problem}; no endpoint to ask\n`);
      return STATUS_EXIT.notRunning;
    }
    err(
      `l2-uploader status: configuration error (asking the running instance anyway)\n${error.message}\n`,
    );
    return await status(address, { print: out });
  }
}

async function runWithSignals(config: Config): Promise<number> {
  const shutdown = new AbortController();
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGTERM", "SIGINT"];
  const onSignal = (signal: Deno.Signal) => () => {
    if (!shutdown.signal.aborted) {
      log.info("Received {signal}; shutting down (a second signal exits at once)", { signal });
      shutdown.abort();
      return;
    }
    log.warn("Received {signal} again; exiting at once without storing open batches", { signal });
    closeLogging().finally(() => Deno.exit(1));
  };
  const listeners = signals.map((s) => [s, onSignal(s)] as const);
  for (const [s, fn] of listeners) Deno.addSignalListener(s, fn);
  try {
    await run(config, { shutdown: shutdown.signal, version: VERSION });
    return 0;
  } catch (error) {
    if (error instanceof StartupError) {
      log.error("{message}", { message: error.message });
      return 2;
    }
    log.fatal("Collector failed: {error}", { error });
    return 1;
  } finally {
    for (const [s, fn] of listeners) Deno.removeSignalListener(s, fn);
  }
}

/** The chosen .env file's variables; a missing default file is fine, a missing named one is not. */
async function readEnvFile(path: string | undefined): Promise<Record<string, string>> {
  try {
    const text = await Deno.readTextFile(path ?? ".env");
    warnIfShared(path ?? ".env");
    const vars = parseEnvFile(text);
    warnUnknown(path ?? ".env", vars);
    return vars;
  } catch (error) {
    if (path === undefined && error instanceof Deno.errors.NotFound) return {};
    throw new StartupError(`cannot read env file "${path ?? ".env"}": ${(error as Error).message}`);
  }
}

/** The env file may hold AWS keys: say so when others can read it. */
/** A name in the file that is no option is read by nothing: most likely a misspelt one. */
function warnUnknown(path: string, vars: Record<string, string>): void {
  const unknown = Object.keys(vars).filter((name) => !OPTION_NAMES.includes(name));
  if (unknown.length === 0) return;
  err(
    `l2-uploader: warning: ${path} sets ${unknown.join(", ")}, which ${
      unknown.length === 1 ? "is not an option" : "are not options"
    } and ${unknown.length === 1 ? "is" : "are"} ignored (misspelt? see .env.example)\n`,
  );
}

function warnIfShared(path: string): void {
  const mode = Deno.statSync(path).mode;
  if (mode !== null && (mode & 0o077) !== 0) {
    err(
      `l2-uploader: warning: ${path} is readable by group or others ` +
        `(mode ${(mode & 0o777).toString(8)}); it may hold secrets: chmod 600 ${path}\n`,
    );
  }
}

function hostname(): string | undefined {
  try {
    return Deno.hostname();
  } catch {
    return undefined;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
