/** Waits `ms`, or less when `signal` aborts first. Never rejects. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0 || signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** `promise`'s value, or undefined when it has not settled within `ms`. */
export async function settledWithin<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  const waited = new AbortController();
  try {
    return await Promise.race([promise, delay(ms, waited.signal).then(() => undefined)]);
  } finally {
    waited.abort();
  }
}
