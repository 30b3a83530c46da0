/**
 * Helper processes of the benchmark (the exchange, the bare client) speak a
 * tiny protocol: one JSON line on stdout when ready, then one JSON line in
 * answer to each command line on stdin. This is the parent's side of it.
 */

export const ROOT = new URL("../", import.meta.url);

/** Splits a text stream into lines, dropping empty ones. */
export function lineSplitter(): TransformStream<string, string> {
  let rest = "";
  return new TransformStream({
    transform(chunk, controller) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop()!;
      for (const part of parts) if (part !== "") controller.enqueue(part);
    },
    flush(controller) {
      if (rest !== "") controller.enqueue(rest);
    },
  });
}

/** The environment a child needs to find Deno's cache, and nothing else of ours. */
export function baseEnv(): Record<string, string> {
  const env: Record<string, string> = { NO_COLOR: "1" };
  for (const name of ["PATH", "HOME", "DENO_DIR", "TMPDIR"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  return env;
}

export class ChildChannel implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly #lines: ReadableStreamDefaultReader<string>;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #encoder = new TextEncoder();
  #stderr = "";

  private constructor(child: Deno.ChildProcess) {
    this.child = child;
    this.#lines = child.stdout
      .pipeThrough(new TextDecoderStream())
      .pipeThrough(lineSplitter())
      .getReader();
    this.#stdin = child.stdin.getWriter();
    (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        this.#stderr = (this.#stderr + chunk).slice(-20_000);
      }
    })();
  }

  /** Starts `deno run -A <script> ...args` (a file under bench/). */
  static spawn(script: string, args: readonly string[]): ChildChannel {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL(script, import.meta.url).pathname, ...args],
      cwd: ROOT.pathname,
      clearEnv: true,
      env: baseEnv(),
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new ChildChannel(child);
  }

  /** Starts another program (a peer recorder) with a clean environment plus `env`. */
  static spawnProgram(
    command: string,
    args: readonly string[],
    env: Readonly<Record<string, string>> = {},
  ): ChildChannel {
    const child = new Deno.Command(command, {
      args: [...args],
      cwd: ROOT.pathname,
      clearEnv: true,
      env: { ...baseEnv(), ...env },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new ChildChannel(child);
  }

  get pid(): number {
    return this.child.pid;
  }

  /** The next JSON line the child prints (its ready line, or an answer). */
  async read<T>(timeoutMs = 60_000): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`child ${this.pid} silent for ${timeoutMs} ms: ${this.#stderr}`)),
        timeoutMs,
      );
    });
    try {
      const next = await Promise.race([this.#lines.read(), timeout]);
      if (next.done) throw new Error(`child ${this.pid} exited: ${this.#stderr}`);
      return JSON.parse(next.value) as T;
    } finally {
      clearTimeout(timer);
    }
  }

  async ask<T>(command: string, timeoutMs?: number): Promise<T> {
    await this.#stdin.write(this.#encoder.encode(command + "\n"));
    return await this.read<T>(timeoutMs);
  }

  stderr(): string {
    return this.#stderr;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.child.kill("SIGKILL");
    } catch {
      // already exited
    }
    await this.#stdin.close().catch(() => {});
    await this.#lines.cancel().catch(() => {});
    await this.child.status;
  }
}
