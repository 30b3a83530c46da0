/**
 * Headless Chromium (Debian `chromium`) for page tests: loads a URL, writes
 * a screenshot and returns what the page logged to its console (Chromium's
 * `--enable-logging=stderr` prints each console message and uncaught error
 * as an `INFO:CONSOLE` line).
 */

import { hasCommand } from "./tools.ts";

export const CHROMIUM = ["chromium", "chromium-browser"].find(hasCommand);

export interface Rendered {
  readonly screenshot: Uint8Array;
  /** The page's console messages, e.g. `"Uncaught ReferenceError: …", source: …`. */
  readonly console: string[];
}

export async function renderPage(
  url: string,
  options: { width?: number; height?: number; timeoutMs?: number } = {},
): Promise<Rendered> {
  if (!CHROMIUM) throw new Error("chromium is not installed");
  const dir = await Deno.makeTempDir({ prefix: "l2-chromium-" });
  try {
    const file = `${dir}/screenshot.png`;
    const out = await new Deno.Command(CHROMIUM, {
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        `--user-data-dir=${dir}/profile`,
        "--enable-logging=stderr",
        "--v=0",
        `--window-size=${options.width ?? 1100},${options.height ?? 1400}`,
        `--screenshot=${file}`,
        url,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(options.timeoutMs ?? 60_000),
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    if (out.code !== 0) throw new Error(`chromium exited ${out.code}: ${stderr.slice(-2000)}`);
    const console = stderr.split("\n")
      .filter((line) => /:CONSOLE[:(]/.test(line))
      .map((line) => line.replace(/^.*?:CONSOLE[^\]]*\]\s*/, ""));
    return { screenshot: await Deno.readFile(file), console };
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
