/** A temporary directory that deletes itself: `await using tmp = await tempDir()`. */
export interface TempDir extends AsyncDisposable {
  readonly path: string;
}

export async function tempDir(prefix = "l2-test-"): Promise<TempDir> {
  const path = await Deno.makeTempDir({ prefix });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    },
  };
}

/** Every file under `dir`, as paths relative to it with `/` separators, sorted. */
export async function listFiles(dir: string): Promise<string[]> {
  const found: string[] = [];
  async function walk(sub: string): Promise<void> {
    for await (const entry of Deno.readDir(`${dir}/${sub}`)) {
      const rel = sub === "" ? entry.name : `${sub}/${entry.name}`;
      if (entry.isDirectory) await walk(rel);
      else found.push(rel);
    }
  }
  try {
    await walk("");
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return found.sort();
}
