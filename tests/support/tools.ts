/**
 * External programs some tests need (Debian packages that .ci/run installs):
 * a test using one is ignored, with the reason printed, when it is missing.
 */

/** Whether `command --version` runs. */
export function hasCommand(command: string): boolean {
  try {
    new Deno.Command(command, { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync();
    return true;
  } catch {
    return false;
  }
}

/**
 * `command` when it runs; otherwise undefined, after printing which tests of
 * `testFile` are ignored and how to install the tool.
 */
export function requireTool(
  command: string,
  options: { testFile: string; what: string; install: string },
): string | undefined {
  if (hasCommand(command)) return command;
  // deno-lint-ignore no-console
  console.warn(
    `${options.testFile}: ${command} is not on PATH, so ${options.what} ignored ` +
      `(${options.install} to run it)`,
  );
  return undefined;
}

/** Runs a tool to completion; stdout and stderr as text. */
export async function runTool(
  command: string,
  args: string[],
  options: { cwd?: string; timeoutMs?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(command, {
    args,
    cwd: options.cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(options.timeoutMs ?? 60_000),
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}
