/**
 * Alerts: `watchHealth` evaluates health every few seconds, logs each change
 * of level and hands it to an `AlertNotifier`, which POSTs a JSON message to
 * ALERT_WEBHOOK_URL (`text` for Slack, `content` for Discord) when the level
 * changes, including the recovery to ok.
 *
 * Promises: at most one post per `minIntervalMs`, except that a change to
 * critical always goes out at once; a change that was held back goes out
 * when the interval has passed, if it still holds. Delivery failures are
 * logged and never thrown. The URL is a secret: it is never logged, and
 * URLs are cut out of the error messages that are.
 */

import { getLogger } from "@logtape/logtape";
import { delay } from "../delay.ts";
import type { Health, HealthLevel } from "./health.ts";

const log = getLogger(["l2", "alerts"]);

/** Discord rejects `content` over 2000 characters. */
const MAX_TEXT = 1900;

export interface AlertNotifierOptions {
  readonly url: string;
  readonly fetch?: typeof fetch;
  /** Minimum time between two posts, ms (default 5 minutes). */
  readonly minIntervalMs?: number;
  /** Time allowed for one POST, ms (default 10 s). */
  readonly timeoutMs?: number;
  /** Names the recorder in the message (INSTANCE_ID). */
  readonly instanceId?: string;
}

export type AlertOutcome = "unchanged" | "held" | "busy" | "sent" | "failed";

export class AlertNotifier {
  readonly #options: AlertNotifierOptions;
  readonly #fetch: typeof fetch;
  /** The level the receiver last heard about; a fresh start counts as ok. */
  #announced: HealthLevel = "ok";
  #lastAttemptAt = -Infinity;
  #lastAttemptLevel: HealthLevel | undefined;
  #busy = false;

  constructor(options: AlertNotifierOptions) {
    this.#options = options;
    this.#fetch = options.fetch ?? fetch;
  }

  /** Posts when `health.status` differs from the level last announced and the rate limit allows. */
  async onHealth(health: Health, now: number): Promise<AlertOutcome> {
    const level = health.status;
    if (level === this.#announced) return "unchanged";
    if (this.#busy) return "busy";
    const limited = now - this.#lastAttemptAt < (this.#options.minIntervalMs ?? 300_000);
    // Critical goes out at once, but a failing critical post is not retried every tick.
    const urgent = level === "critical" && this.#lastAttemptLevel !== "critical";
    if (limited && !urgent) return "held";
    this.#busy = true;
    this.#lastAttemptAt = now;
    this.#lastAttemptLevel = level;
    try {
      const text = alertText(health, this.#announced, this.#options.instanceId);
      if (!await this.#post(text)) return "failed";
      log.info("Alert sent: health {level} (was {previous})", {
        level,
        previous: this.#announced,
      });
      this.#announced = level;
      return "sent";
    } finally {
      this.#busy = false;
    }
  }

  async #post(text: string): Promise<boolean> {
    const timeoutMs = this.#options.timeoutMs ?? 10_000;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    try {
      const response = await this.#fetch(this.#options.url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ text, content: text }),
        signal: abort.signal,
      });
      await response.body?.cancel();
      if (response.ok) return true;
      log.warn("Alert webhook answered HTTP {status}; the alert was not delivered", {
        status: response.status,
      });
    } catch (error) {
      log.warn("Alert webhook could not be reached: {reason}", {
        reason: abort.signal.aborted ? `no answer within ${timeoutMs} ms` : describeError(error),
      });
    } finally {
      clearTimeout(timer);
    }
    return false;
  }
}

/** The message: level, previous level and the checks that are not ok. */
export function alertText(health: Health, previous: HealthLevel, instanceId?: string): string {
  const who = instanceId ? `l2-uploader ${instanceId}` : "l2-uploader";
  if (health.status === "ok") return `${who}: recovered, health is ok again (was ${previous})`;
  const lines = health.checks
    .filter((c) => c.status !== "ok")
    .map((c) => `• ${c.status} ${c.name}: ${c.message}`);
  const text = [`${who}: health ${health.status.toUpperCase()} (was ${previous})`, ...lines]
    .join("\n");
  return text.length > MAX_TEXT ? `${text.slice(0, MAX_TEXT - 1)}…` : text;
}

/** An error's message and causes, with every URL cut out (Deno's fetch errors carry it). */
export function describeError(error: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = error; e !== undefined && parts.length < 4;) {
    parts.push(e instanceof Error ? `${e.name}: ${e.message}` : String(e));
    e = e instanceof Error ? e.cause : undefined;
  }
  return parts.join("; caused by ").replace(/\b[a-z][a-z0-9+.-]*:\/\/[^\s)]*/gi, "<url>");
}

export interface WatchHealthOptions {
  /** Samples the metrics and evaluates health (http.ts `observe`). */
  readonly evaluate: (now: number) => Promise<Health>;
  readonly signal: AbortSignal;
  readonly notifier?: AlertNotifier;
  /** Default 10 s. */
  readonly intervalMs?: number;
  /** Wall-clock ms. */
  readonly now?: () => number;
}

/**
 * Evaluates health every `intervalMs` until `signal` aborts, logs each
 * change of level and passes every evaluation to the notifier. Never throws.
 */
export async function watchHealth(options: WatchHealthOptions): Promise<void> {
  const now = options.now ?? Date.now;
  let logged: HealthLevel = "ok";
  while (!options.signal.aborted) {
    try {
      const at = now();
      const health = await options.evaluate(at);
      if (health.status !== logged) logChange(health, logged);
      logged = health.status;
      await options.notifier?.onHealth(health, at);
    } catch (error) {
      log.error("Health evaluation failed: {error}", { error });
    }
    await delay(options.intervalMs ?? 10_000, options.signal);
  }
}

function logChange(health: Health, previous: HealthLevel): void {
  const problems = health.checks
    .filter((c) => c.status !== "ok")
    .map((c) => `${c.name}: ${c.message}`)
    .join("; ");
  const properties = { level: health.status, previous, problems };
  if (health.status === "critical") log.error("Health is critical: {problems}", properties);
  else if (health.status === "warning") log.warn("Health is warning: {problems}", properties);
  else log.info("Health is ok again (was {previous})", properties);
}
