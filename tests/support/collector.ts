/**
 * Runs the real collector as a subprocess with exactly the command of the
 * `start` task in deno.json (same permission set, same entry point), and
 * reads back what it archived.
 */

import { gunzipSync } from "node:zlib";
import { parse as parseDotenv } from "dotenv";
import { listFiles } from "./temp.ts";
import { collectorEnvProblems, envFileOf } from "./net_guard.ts";

const ROOT = new URL("../../", import.meta.url);
const denoJson = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));

/** The `start` task split into arguments, `deno` replaced by this Deno. */
export function startTaskArgs(): string[] {
  const words = String(denoJson.tasks.start).split(/\s+/);
  if (words[0] !== "deno") throw new Error(`unexpected start task: ${denoJson.tasks.start}`);
  return words.slice(1);
}

export interface CollectorProcess extends AsyncDisposable {
  readonly child: Deno.ChildProcess;
  /** Everything the process wrote to stderr so far. */
  stderr(): string;
  /** Resolves with the exit code. */
  readonly status: Promise<Deno.CommandStatus>;
  kill(signal: Deno.Signal): void;
}

/**
 * Throws before a collector is started whose environment would let it reach
 * a host that is not loopback (see net_guard.ts).
 */
function guardNetwork(env: Record<string, string>, args: readonly string[], cwd: string): void {
  const envFile = envFileOf(args);
  let fileEnv: Record<string, string> = {};
  if (envFile !== undefined) {
    try {
      fileEnv = parseDotenv(Deno.readTextFileSync(new URL(envFile, `file://${cwd}/`)));
    } catch {
      // a missing or unreadable env file stops the collector before it connects
    }
  }
  const problems = collectorEnvProblems(env, args, fileEnv);
  if (problems.length > 0) {
    throw new Error(`test would leave the machine: ${problems.join("; ")}`);
  }
}

/**
 * Starts `deno task start` (as its command line) with a clean environment
 * plus `env`. Extra arguments replace the task's trailing `run` command.
 */
export function spawnCollector(
  env: Record<string, string>,
  options: { args?: string[]; cwd?: string } = {},
): CollectorProcess {
  guardNetwork(env, options.args ?? [], options.cwd ?? ROOT.pathname);
  const args = [...startTaskArgs(), ...(options.args ?? [])];
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: options.cwd ?? ROOT.pathname,
    clearEnv: true,
    env: { PATH: Deno.env.get("PATH") ?? "", NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let stderrText = "";
  const decoder = new TextDecoder();
  const drain = async (stream: ReadableStream<Uint8Array>, keep: boolean) => {
    for await (const chunk of stream) if (keep) stderrText += decoder.decode(chunk);
  };
  const drained = Promise.all([drain(child.stdout, false), drain(child.stderr, true)]);
  const status = child.status.then(async (s) => {
    await drained;
    return s;
  });
  return {
    child,
    stderr: () => stderrText,
    status,
    kill: (signal) => {
      try {
        child.kill(signal);
      } catch {
        // already exited
      }
    },
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch {
        // already exited
      }
      await status;
    },
  };
}

/**
 * Like spawnCollector, but waits for the exit and returns code and output.
 * A process still running after `timeoutMs` is killed (the test then fails
 * on its exit code instead of hanging).
 */
export async function runCollector(
  env: Record<string, string>,
  options: { args?: string[]; cwd?: string; timeoutMs?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  guardNetwork(env, options.args ?? [], options.cwd ?? ROOT.pathname);
  const args = [...startTaskArgs(), ...(options.args ?? [])];
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: options.cwd ?? ROOT.pathname,
    clearEnv: true,
    env: { PATH: Deno.env.get("PATH") ?? "", NO_COLOR: "1", ...env },
    stdin: "null",
    signal: AbortSignal.timeout(options.timeoutMs ?? 30_000),
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

export interface ArchivedLine {
  readonly key: string;
  readonly lineNo: number;
  readonly text: string;
  readonly value: {
    recv_ts: number;
    stream: string;
    data?: unknown;
    event?: string;
    [k: string]: unknown;
  };
}

/** Every line of every object under `archiveDir`, objects in key order. */
export async function readArchive(archiveDir: string): Promise<ArchivedLine[]> {
  const lines: ArchivedLine[] = [];
  for (const key of await listFiles(archiveDir)) {
    if (!key.endsWith(".ndjson.gz")) continue;
    const text = new TextDecoder().decode(gunzipSync(await Deno.readFile(`${archiveDir}/${key}`)));
    text.split("\n").forEach((line, i) => {
      if (line !== "") lines.push({ key, lineNo: i + 1, text: line, value: JSON.parse(line) });
    });
  }
  return lines;
}

/**
 * The `data` part of a data line exactly as written (the archive splices
 * the exchange's bytes after a fixed prefix).
 */
export function rawData(line: ArchivedLine): string {
  const head = `{"recv_ts":${line.value.recv_ts},"stream":${
    JSON.stringify(line.value.stream)
  },"data":`;
  if (!line.text.startsWith(head)) throw new Error(`not a data line: ${line.text.slice(0, 80)}`);
  return line.text.slice(head.length, -1);
}

/** Data lines grouped by stream, in archive order (objects sorted by key, lines in order). */
export function dataByStream(lines: readonly ArchivedLine[]): Map<string, string[]> {
  const byStream = new Map<string, string[]>();
  for (const line of lines) {
    if (line.value.event !== undefined) continue;
    const list = byStream.get(line.value.stream) ?? [];
    list.push(rawData(line));
    byStream.set(line.value.stream, list);
  }
  return byStream;
}
