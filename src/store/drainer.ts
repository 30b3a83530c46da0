/**
 * Drains the spool into the sink, oldest file first. A file is deleted only
 * after the sink confirmed its object; a damaged file is quarantined and the
 * drain goes on; a file that keeps failing goes behind the others. While the
 * sink keeps failing (no file of a round goes through), the drainer backs
 * off (exponential, full jitter, up to `maxBackoffMs`) instead of hammering it.
 * A file quarantined, or removed from disk before it was stored, is a lost
 * batch: `onLost` gets what the file still tells of it, for a `dropped` line.
 */

import { getLogger } from "@logtape/logtape";
import { ExponentialBackoff, fullJitterGenerator, type IBackoff } from "cockatiel";
import { delay } from "../delay.ts";
import { putIfAbsent, type Sink } from "./sink.ts";
import { type Spool, type SpooledBatch, spooledBatchOfName, SpoolFileError } from "./spool.ts";

const log = getLogger(["l2", "spool"]);

export interface DrainerOptions {
  readonly spool: Spool;
  readonly sink: Sink;
  readonly signal: AbortSignal;
  readonly concurrency?: number;
  /** How often to look at an empty spool, ms. */
  readonly idleMs?: number;
  readonly initialBackoffMs?: number;
  readonly maxBackoffMs?: number;
  readonly onStored?: (key: string, bytes: number) => void;
  readonly onFailedAttempt?: (key: string, error: unknown) => void;
  readonly onQuarantined?: (name: string, reason: string) => void;
  /**
   * A spooled batch that will never be stored: its file was quarantined
   * (`spool file damaged`) or removed from disk (`spool file removed`).
   * `batch` is what the file's header or name still tells of it (none: the
   * loss cannot be placed).
   */
  readonly onLost?: (name: string, batch: SpooledBatch | undefined, reason: LostReason) => void;
  /**
   * Whether a failed put may succeed later (default: always). One that
   * cannot, or a file that cannot be read, is this file's own failure: it
   * goes behind the others. A retryable failure is the sink's (an outage):
   * the order stays oldest first.
   */
  readonly isRetryable?: (error: unknown) => boolean;
}

/** Why a spooled batch was lost: the reason its `dropped` line gives. */
export type LostReason = "spool file damaged" | "spool file removed";

/** What became of one file: left the spool, to be tried again, or refused for itself. */
type Drained = "gone" | "retry" | "refused";

export interface Drainer {
  /** Resolves when the drainer stopped (after `signal` aborted). */
  readonly done: Promise<void>;
  /** Ends a backoff or idle wait now, e.g. when a fresh upload just worked. */
  nudge(): void;
}

/** Starts draining; runs until `signal` aborts. */
export function startDrainer(options: DrainerOptions): Drainer {
  let wake = new AbortController();
  const done = drainLoop(options, () => wake.signal);
  return {
    done,
    nudge: () => {
      wake.abort();
      wake = new AbortController();
    },
  };
}

async function drainLoop(options: DrainerOptions, wakeSignal: () => AbortSignal): Promise<void> {
  const { spool, signal } = options;
  const wait = (ms: number) => delay(ms, AbortSignal.any([signal, wakeSignal()]));
  const concurrency = Math.max(1, options.concurrency ?? 1);
  const inFlight = new Set<string>();
  const factory = new ExponentialBackoff({
    generator: fullJitterGenerator,
    initialDelay: options.initialBackoffMs ?? 1000,
    maxDelay: options.maxBackoffMs ?? 60_000,
  });
  let backoff: IBackoff<unknown> | undefined;
  const failures = new Map<string, number>();
  while (!signal.aborted) {
    const names = nextNames(spool.names(), inFlight, failures, concurrency);
    if (names.length === 0) {
      await wait(options.idleMs ?? 1000);
      continue;
    }
    for (const n of names) inFlight.add(n);
    const results = await Promise.all(
      names.map((n) => drainOne(options, n).catch((): Drained => "retry")),
    );
    names.forEach((n, i) => {
      inFlight.delete(n);
      if (results[i] === "gone") failures.delete(n);
      else if (results[i] === "refused") failures.set(n, (failures.get(n) ?? 0) + 1);
    });
    // One file that goes through shows the sink is up: no backoff for the others.
    if (results.some((r) => r === "gone")) {
      backoff = undefined;
      continue;
    }
    backoff = backoff ? backoff.next(undefined) : factory.next();
    await wait(Math.max(backoff.duration, 50));
  }
}

/**
 * The files to try next: the oldest among those refused least often, so a
 * file that keeps failing for itself (a put the sink refuses for good, a
 * read error) waits behind the others instead of blocking the drain. Failures
 * of the sink (an outage) are not counted: the drain stays oldest first.
 */
export function nextNames(
  names: readonly string[],
  inFlight: ReadonlySet<string>,
  failures: Map<string, number>,
  count: number,
): string[] {
  if (failures.size > names.length) {
    // Files gone from the spool (stored by a previous round, removed by hand).
    const present = new Set(names);
    for (const name of failures.keys()) if (!present.has(name)) failures.delete(name);
  }
  const free = names.filter((n) => !inFlight.has(n));
  if (failures.size === 0) return free.slice(0, count);
  // Stable: equal failure counts keep the spool's order (oldest first).
  return free
    .map((name, at) => ({ name, at, failed: failures.get(name) ?? 0 }))
    .sort((a, b) => a.failed - b.failed || a.at - b.at)
    .slice(0, count)
    .map((e) => e.name);
}

/** One file: stored or quarantined (gone), or failed. */
async function drainOne(options: DrainerOptions, name: string): Promise<Drained> {
  const { spool, signal } = options;
  const entry = await readEntry(options, name);
  if (typeof entry === "string") return entry;
  try {
    if (entry.ifAbsent) {
      if (!await putIfAbsent(options.sink, entry, signal)) {
        log.info("Spooled {key} is a recovered copy of an object already stored; dropped it", {
          key: entry.key,
        });
        await spool.remove(name);
        return "gone";
      }
    } else await options.sink.put(entry.key, entry.body, entry.meta, signal);
  } catch (error) {
    options.onFailedAttempt?.(entry.key, error);
    log.warn("Could not upload spooled {key}: {error}", { key: entry.key, error });
    return (options.isRetryable?.(error) ?? true) ? "retry" : "refused";
  }
  await spool.remove(name);
  options.onStored?.(entry.key, entry.body.length);
  log.info("Uploaded spooled {key}; {left} left in the spool", {
    key: entry.key,
    left: spool.count,
  });
  return "gone";
}

/**
 * The spool file `name`, or what to answer for it when it cannot be read:
 * gone (removed by hand, or quarantined as damaged), or refused (a failed
 * read: tried again, behind the others).
 */
async function readEntry(
  options: DrainerOptions,
  name: string,
): Promise<Awaited<ReturnType<DrainerOptions["spool"]["read"]>> | Drained> {
  const { spool } = options;
  try {
    return await spool.read(name);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      // Gone from disk (removed by hand): forget it, or it would block the drain.
      await spool.remove(name);
      lost(
        options,
        name,
        spooledBatchOfName(name),
        "spool file removed",
        { what: "Spool file {name} was removed before its batch was stored" },
      );
      return "gone";
    }
    if (!(error instanceof SpoolFileError)) {
      // A read that failed (EIO, EMFILE…): tried again later, behind the others.
      log.warn("Could not read spool file {name}: {error}", { name, error });
      return "refused";
    }
    const reason = error.message;
    const target = await spool.quarantine(name);
    options.onQuarantined?.(name, reason);
    lost(
      options,
      name,
      error.batch,
      "spool file damaged",
      {
        what: "Quarantined damaged spool file {name} to {target}: {problem}",
        target,
        problem: reason,
      },
    );
    return "gone";
  }
}

/** Logs a lost spooled batch (what is missing from the archive, if known) and reports it. */
function lost(
  options: DrainerOptions,
  name: string,
  batch: SpooledBatch | undefined,
  reason: LostReason,
  { what, ...details }: { what: string } & Record<string, string>,
): void {
  if (batch) {
    log.error(
      `${what}; its {messages} messages of {stream} received from {firstRecvTs} to {lastRecvTs} µs ` +
        "are not in the archive (a dropped line in the stream's next batch marks them)",
      { name, reason, ...details, stream: batch.stream, key: batch.key, ...batch.meta },
    );
  } else {
    log.error(
      `${what}; its lines are not in the archive, and neither its header nor its name tells ` +
        "their stream or receive times, so no dropped line can mark the hole",
      { name, reason, ...details },
    );
  }
  options.onLost?.(name, batch, reason);
}
