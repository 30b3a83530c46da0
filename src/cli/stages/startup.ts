/**
 * What every stage of `run` shares about start-up: the error that stops it
 * (main turns it into exit code 2) and the wrapper that names the failed step.
 */

/**
 * How long the start waits for an answer it can record without (HeadBucket;
 * `exchangeInfo` when SYMBOL names every symbol). A refusal or an answer
 * comes within it; a peer that never answers (a dead network, a silent
 * endpoint) would hold the start, and so the recording, for its whole
 * request timeout: past this the start records and the request goes on
 * behind it.
 */
export const START_WAIT_MS = 3_000;

/** A problem found before recording starts; main turns it into exit code 2. */
export class StartupError extends Error {
  override name = "StartupError";
}

/**
 * A start-up step that fails is a start-up error (exit 2), saying what
 * failed and, given `path`, where (unless the error names it already).
 */
export async function startupStep<T>(
  what: string,
  step: () => Promise<T>,
  path?: string,
): Promise<T> {
  try {
    return await step();
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const where = path === undefined || message.includes(path) ? "" : ` (${path})`;
    throw new StartupError(`cannot ${what}${where}: ${message}`);
  }
}
