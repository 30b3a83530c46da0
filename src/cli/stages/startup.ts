/**
 * What every stage of `run` shares about start-up: the error that stops it
 * (main turns it into exit code 2) and the wrapper that names the failed step.
 */

/** A problem found before recording starts; main turns it into exit code 2. */
export class StartupError extends Error {
  override name = "StartupError";
}

/** A start-up step that fails is a start-up error (exit 2), saying what failed. */
export async function startupStep<T>(what: string, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (error) {
    throw new StartupError(`cannot ${what}: ${error instanceof Error ? error.message : error}`);
  }
}
