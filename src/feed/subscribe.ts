/**
 * Live subscriptions on one socket: streams that do not fit in the URL
 * (Binance refuses long ones) are added right after it opens, one
 * `SUBSCRIBE` message at a time, each sent only after the previous one was
 * acknowledged and at most one per `intervalMs` (Binance counts every
 * incoming message against 5/s spot, 10/s USD-M). A refusal or a missing
 * answer is reported as a failure; the socket then closes.
 */

import { getLogger } from "@logtape/logtape";
import { delay } from "../delay.ts";

const log = getLogger(["l2", "feed"]);

export interface SubscriberOptions {
  readonly url: string;
  /** Streams to add, one message per entry. */
  readonly batches: readonly (readonly string[])[];
  /** Least time between two messages, ms. */
  readonly intervalMs: number;
  /** How long an acknowledgement may take, ms. */
  readonly timeoutMs: number;
  readonly monotonic: () => number;
  /** Aborts when the socket is closing or closed. */
  readonly stop: AbortSignal;
  /** Whether the socket is still usable (not closing, not closed). */
  readonly alive: () => boolean;
  readonly send: (text: string) => void;
  /** Binance acknowledged `streams`. */
  readonly onSubscribed: (streams: readonly string[]) => void;
  /** A refusal, a missing answer or a failed send: close the socket. */
  readonly onFailed: () => void;
}

/**
 * The answer to `SUBSCRIBE` number `id` in `text`: `{}` accepted,
 * `{ error }` refused, undefined when `text` is something else (a frame to record).
 * Binance accepts with `{"result":null,"id":n}` (BINANCE.md, "Subscribing")
 * and refuses with `{"code":2,"msg":"Invalid request: …","id":n}`, some
 * refusals without the id (binance-spot-api-docs, web-socket-streams.md,
 * "Error Messages"); an `error` object is read as a refusal too.
 */
export function answerTo(text: string, id: number): { error?: string } | undefined {
  const reply = controlReply(text);
  if (!reply) return undefined;
  const { id: answered, result, error, code } = reply;
  // Some refusals carry no id (`{"code":3,"msg":"Invalid JSON: …"}`): they answer the one in flight.
  const refusalWithoutId = answered === undefined && code !== undefined && "msg" in reply;
  if (answered !== id && !refusalWithoutId) return undefined;
  if (!("result" in reply) && error === undefined && code === undefined) return undefined;
  const accepted = error === undefined && code === undefined && result === null;
  return accepted ? {} : { error: JSON.stringify(reply) };
}

/** A reply to a control message, as Binance shapes them. */
export interface ControlReply {
  readonly id?: unknown;
  readonly result?: unknown;
  readonly error?: unknown;
  readonly code?: unknown;
  readonly msg?: unknown;
}

/** `text` as a JSON object that is not a stream frame, or undefined. */
export function controlReply(text: string): ControlReply | undefined {
  if (text.startsWith('{"stream":')) return undefined;
  let reply: unknown;
  try {
    reply = JSON.parse(text);
  } catch {
    return undefined;
  }
  return typeof reply === "object" && reply !== null ? reply as ControlReply : undefined;
}

export class Subscriber {
  readonly #options: SubscriberOptions;
  /** The message waiting for its answer, if any. */
  #awaiting: { id: number; settle: (error?: string) => void } | undefined;

  constructor(options: SubscriberOptions) {
    this.#options = options;
  }

  /** Sends every batch in turn; stops at the first failure or when the socket closes. */
  async run(): Promise<void> {
    const { batches, intervalMs, monotonic, stop } = this.#options;
    let lastSentAt = -Infinity;
    for (let i = 0; i < batches.length; i++) {
      await delay(lastSentAt + intervalMs - monotonic(), stop);
      if (!this.#options.alive() || stop.aborted) return;
      lastSentAt = monotonic();
      const error = await this.#subscribe(i + 1, batches[i]);
      if (!this.#options.alive()) return;
      if (error !== undefined) {
        log.warn("SUBSCRIBE {id} of {streams} streams on {url} failed: {error}", {
          id: i + 1,
          streams: batches[i].length,
          url: this.#options.url,
          error,
        });
        this.#options.onFailed();
        return;
      }
      this.#options.onSubscribed(batches[i]);
    }
  }

  /** Whether `text` answers the message in flight (then it is not a frame to record). */
  isAnswer(text: string): boolean {
    if (!this.#awaiting) return false;
    const answer = answerTo(text, this.#awaiting.id);
    if (!answer) return false;
    this.#awaiting.settle(answer.error);
    return true;
  }

  /** The socket closed: a message in flight has its answer. */
  close(why: string): void {
    this.#awaiting?.settle(why);
  }

  /** Sends one message and resolves with its error, or undefined once accepted. */
  async #subscribe(id: number, streams: readonly string[]): Promise<string | undefined> {
    const answer = new Promise<string | undefined>((resolve) => {
      const timer = setTimeout(() => resolve("no answer"), this.#options.timeoutMs);
      this.#awaiting = {
        id,
        settle: (error) => {
          clearTimeout(timer);
          resolve(error);
        },
      };
    });
    try {
      this.#options.send(JSON.stringify({ method: "SUBSCRIBE", params: streams, id }));
    } catch (error) {
      this.#awaiting?.settle(String(error));
    }
    const error = await answer;
    this.#awaiting = undefined;
    return error;
  }
}
