/**
 * The suite never leaves the machine. Two guards, both active for every test:
 *
 * - The `test` task grants network access to loopback hosts only
 *   (`--allow-net=127.0.0.1,localhost,[::1],0.0.0.0`), so code running inside
 *   the test process cannot resolve or reach any other host: Deno refuses it.
 * - A collector started as a subprocess has the `collector` permission set
 *   (all hosts, as the compiled binary has), so `collectorEnvProblems` checks
 *   its environment before it starts: every URL it would use must name a
 *   loopback host, and the Binance URLs must be set at all (their defaults are
 *   the real exchange).
 */

/** Host names that stay on this machine. */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, "").toLowerCase();
  if (host === "localhost" || host === "::1" || host === "0.0.0.0") return true;
  return /^127(\.\d{1,3}){3}$/.test(host);
}

/** Options whose value is a URL the collector connects to. */
export const URL_OPTIONS = [
  "BINANCE_WS_URL",
  "BINANCE_REST_URL",
  "S3_ENDPOINT",
  "ALERT_WEBHOOK_URL",
] as const;

/** Commands that never connect to Binance (the rest default to the real exchange). */
const OFFLINE_COMMANDS = new Set([
  "status",
  "verify",
  "book",
  "install",
  "uninstall",
  "--help",
  "-h",
  "help",
  "--version",
  "-V",
  "version",
]);

/**
 * What would let a collector started with `env` and `args` reach a host that
 * is not loopback; empty when nothing would. Start-up errors before any
 * connection (a bad option, a bad env file) are not this guard's business, so
 * an env file named in `args` is read as the collector would read it.
 */
export function collectorEnvProblems(
  env: Record<string, string>,
  args: readonly string[],
  fileEnv: Record<string, string> = {},
): string[] {
  const merged = { ...fileEnv, ...env };
  const problems: string[] = [];
  for (const name of URL_OPTIONS) {
    const value = merged[name];
    if (value === undefined || value === "") continue;
    let host: string;
    try {
      host = new URL(value).hostname;
    } catch {
      continue; // the collector rejects it as a bad option before connecting
    }
    if (!isLoopbackHost(host)) problems.push(`${name}=${value} is not a loopback host`);
  }
  const command = commandOf(args);
  if (!OFFLINE_COMMANDS.has(command)) {
    // `check` calls Binance's REST API only; `run` both.
    const needed = command === "check"
      ? ["BINANCE_REST_URL"]
      : ["BINANCE_WS_URL", "BINANCE_REST_URL"];
    for (const name of needed) {
      if (!merged[name]) {
        problems.push(`${name} is unset: the collector would call the real Binance`);
      }
    }
  }
  if (merged.S3_BUCKET_NAME && !merged.S3_ENDPOINT) {
    problems.push("S3_BUCKET_NAME without S3_ENDPOINT would call the real AWS S3");
  }
  return problems;
}

/** The subcommand in `args` (`run` when none), skipping `--env-file PATH`. */
export function commandOf(args: readonly string[]): string {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--env-file") {
      i++;
      continue;
    }
    if (args[i].startsWith("--env-file=")) continue;
    return args[i];
  }
  return "run";
}

/** The path given with `--env-file` in `args`, if any. */
export function envFileOf(args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--env-file") return args[i + 1];
    if (args[i].startsWith("--env-file=")) return args[i].slice("--env-file=".length);
  }
  return undefined;
}

/**
 * Binance URLs for a collector that is expected to stop before it connects
 * (a bad option, an unwritable DATA_DIR), or that must find Binance's REST
 * API unreachable: a port on this machine that was free a moment ago, so a
 * connection is refused at once, here. (Not a fixed low port: `fetch` blocks
 * ports such as 9 by itself, which would test something else.)
 */
export function unreachableBinance(): { BINANCE_WS_URL: string; BINANCE_REST_URL: string } {
  const port = freePort();
  return {
    BINANCE_WS_URL: `ws://127.0.0.1:${port}/`,
    BINANCE_REST_URL: `http://127.0.0.1:${port}/`,
  };
}

/** A loopback port that was free a moment ago (for METRICS_ADDR and servers a test starts). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/**
 * A loopback server that accepts connections and never answers: a dead
 * network or a hung peer, not a refusal. `host` is `127.0.0.1:<port>`.
 */
export function silentServer(): { readonly host: string } & Disposable {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  (async () => {
    try {
      for await (const conn of listener) held.push(conn);
    } catch {
      // closed
    }
  })();
  return {
    host: `127.0.0.1:${listener.addr.port}`,
    [Symbol.dispose]() {
      listener.close();
      for (const conn of held) {
        try {
          conn.close();
        } catch {
          // closed by the other side
        }
      }
    },
  };
}
