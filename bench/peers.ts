/**
 * The peers the collector is measured against, run on the same load in the
 * same bench run: what a user would run instead of it.
 *
 * - `python`: bench/peers/python_recorder.py, asyncio + `websockets` from
 *   Debian (python3-websockets, installed with apt-get when missing), run by
 *   the system's /usr/bin/python3.
 * - `node`: bench/peers/node_recorder.mjs, `ws` from npm installed into
 *   bench/.peers/ (never into deno.json), run by the machine's `node`.
 *
 * Both write per-stream gzip objects into a directory the bench then counts,
 * so "every message kept" is judged for them as for the collector.
 */

import { join } from "node:path";
import { gunzipSync } from "node:zlib";

export type PeerKind = "python peer" | "node peer";

const BENCH = new URL("./", import.meta.url).pathname;
const PYTHON = "/usr/bin/python3";
/** Where `ws` is installed for the Node peer (git-ignored). */
export const NODE_PREFIX = join(BENCH, ".peers");
const WS_VERSION = "8.23.1";

async function run(command: string, args: string[]): Promise<{ ok: boolean; output: string }> {
  try {
    const out = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" })
      .output();
    const text = new TextDecoder();
    return { ok: out.success, output: text.decode(out.stdout) + text.decode(out.stderr) };
  } catch (error) {
    return { ok: false, output: String(error) };
  }
}

/**
 * Makes sure the peer can run, installing what it needs when missing; the
 * command line to start it with (out dir, batch seconds and URLs follow), or
 * why it cannot run.
 */
export async function preparePeer(
  kind: PeerKind,
  log: (text: string) => void,
): Promise<{ command: string; args: string[]; env: Record<string, string> } | string> {
  if (kind === "python peer") {
    const check = () => run(PYTHON, ["-c", "import websockets"]);
    if (!(await check()).ok) {
      log("  installing python3-websockets (Debian) for the Python peer");
      const install = () => run("apt-get", ["install", "-y", "-qq", "python3-websockets"]);
      let apt = await install();
      if (!apt.ok) {
        // A fresh machine's package lists may not know it yet.
        await run("apt-get", ["update", "-qq"]);
        apt = await install();
      }
      if (!apt.ok || !(await check()).ok) {
        return `python3-websockets is missing and apt-get could not install it: ${
          apt.output.trim().split("\n").at(-1)
        }`;
      }
    }
    return { command: PYTHON, args: ["-u", join(BENCH, "peers/python_recorder.py")], env: {} };
  }
  const modules = join(NODE_PREFIX, "node_modules");
  const installed = await Deno.stat(join(modules, "ws/package.json")).then(() => true, () => false);
  if (!installed) {
    log(`  installing ws@${WS_VERSION} from npm into ${NODE_PREFIX} for the Node peer`);
    await Deno.mkdir(NODE_PREFIX, { recursive: true });
    const npm = await run("npm", [
      "install",
      "--prefix",
      NODE_PREFIX,
      "--no-save",
      "--no-audit",
      "--no-fund",
      `ws@${WS_VERSION}`,
    ]);
    if (!npm.ok) return `npm could not install ws: ${npm.output.trim().split("\n").at(-1)}`;
  }
  if (!(await run("node", ["--version"])).ok) return "node is not installed";
  return {
    command: "node",
    args: [join(BENCH, "peers/node_recorder.mjs")],
    env: { NODE_PATH: modules },
  };
}

/** Lines per stream in a peer's output directory (`<dir>/<stream>/*.ndjson.gz`). */
export async function countPeerOutput(
  dir: string,
): Promise<{ perStream: Map<string, number>; lines: number; gzipBytes: number }> {
  const perStream = new Map<string, number>();
  let lines = 0;
  let gzipBytes = 0;
  for await (const stream of Deno.readDir(dir)) {
    if (!stream.isDirectory) continue;
    let n = 0;
    for await (const file of Deno.readDir(join(dir, stream.name))) {
      if (!file.name.endsWith(".ndjson.gz")) continue;
      const raw = await Deno.readFile(join(dir, stream.name, file.name));
      gzipBytes += raw.length;
      const text = gunzipSync(raw);
      for (let i = 0; i < text.length; i++) if (text[i] === 0x0a) n++;
    }
    perStream.set(stream.name, n);
    lines += n;
  }
  return { perStream, lines, gzipBytes };
}
