/**
 * The recorded set of symbols, kept in step with the exchange while the
 * collector runs: `exchangeInfo` is read again every
 * EXCHANGE_INFO_REFRESH_SECONDS and the selection (binance/selection.ts)
 * applied to it.
 *
 * - A symbol that joins gets its streams on new connections (their own
 *   groups): the connections already running are not touched, so no other
 *   stream sees a reconnect, a gap or a repeat.
 * - A symbol that leaves (no longer listed, or no longer matching) stops: a
 *   `stopped` event line ends each of its streams and their open batches are
 *   sealed and stored. A connection left with no stream to record closes.
 * - A status change of a symbol that stays (TRADING ↔ BREAK, HALT…) is a
 *   `status` event line in each of its streams; recording goes on.
 * - A refresh that fails (REST down, bad answer) keeps the current set.
 *
 * Each change is one INFO line; `l2_streams_active` counts the streams recorded.
 */

import { getLogger } from "@logtape/logtape";
import { delay } from "../delay.ts";
import {
  diffSelection,
  type Listing,
  type SelectionChange,
  selectSymbols,
  type SymbolRules,
} from "../binance/selection.ts";
import { groupStreams } from "../binance/streams.ts";
import type { Connection } from "../feed/connection.ts";
import type { Recorder, StreamGroup } from "../feed/recorder.ts";

const log = getLogger(["l2", "universe"]);

export interface UniverseOptions {
  readonly rules: SymbolRules;
  /** The stream names recorded for one symbol. */
  readonly streamsOf: (symbol: string) => readonly string[];
  readonly streamsPerConnection: number;
  /** The WebSocket base a stream is served on: streams of one connection share it. */
  readonly baseOf?: (stream: string) => string;
  readonly recorder: Recorder;
  /** Opens the connection of a new group; it runs until `signal` aborts. */
  readonly connect: (group: StreamGroup, signal: AbortSignal) => Connection;
  /** Aborting it stops every connection (shutdown). */
  readonly signal: AbortSignal;
  readonly nowMicros: () => number;
  /** After every change of the recorded streams. */
  readonly onStreams?: (change: { added: readonly string[]; removed: readonly string[] }) => void;
}

interface GroupEntry {
  readonly group: StreamGroup;
  readonly connection: Connection;
  readonly stop: AbortController;
  /** Its streams still recorded. */
  readonly live: Set<string>;
}

export class Universe {
  readonly #options: UniverseOptions;
  /** Recorded symbols and their last known status ("" when not known: exchangeInfo unread). */
  readonly #statuses = new Map<string, string>();
  /** Symbols the last listing applied held (`follow` refuses one half as long, once). */
  #lastListed = 0;
  /** The length of the shrunken listing `follow` refused last; the same again is applied. */
  #refusedLength: number | undefined;
  readonly #groupOf = new Map<string, GroupEntry>();
  /** The connections still running (each leaves the set when it stops). */
  readonly #done = new Set<Promise<void>>();
  #nextConn = 1;

  constructor(options: UniverseOptions) {
    this.#options = options;
  }

  /** Recorded symbols, in the order they joined. */
  get symbols(): string[] {
    return [...this.#statuses.keys()];
  }

  /** Recorded stream names. */
  get streams(): string[] {
    return [...this.#groupOf.keys()];
  }

  /**
   * Replaces every live connection at once (after a suspension: their sockets
   * sat unread while the process did not run).
   */
  replaceAll(cause: "suspended"): void {
    const entries = new Set(this.#groupOf.values());
    for (const entry of entries) {
      if (!entry.stop.signal.aborted) entry.connection.replace(cause);
    }
  }

  /** Resolves once every connection opened so far has stopped. */
  get done(): Promise<void> {
    return Promise.all([...this.#done]).then(() => {});
  }

  /** Starts recording `symbols` without a listing (exchangeInfo could not be read). */
  startUnlisted(symbols: readonly string[]): void {
    this.#apply(
      {
        added: symbols.filter((s) => !this.#statuses.has(s)),
        removed: [],
        status: [],
      },
      new Map(symbols.map((s) => [s, this.#statuses.get(s) ?? ""])),
      { quiet: true },
    );
  }

  /**
   * Applies a fresh listing: starts, stops and marks status changes. `quiet`
   * (the first listing) logs one summary line instead of one per symbol.
   */
  update(listed: readonly Listing[], options: { quiet?: boolean } = {}): SelectionChange {
    this.#lastListed = listed.length;
    const current = new Set(this.#statuses.keys());
    const statusOf = new Map(listed.map((l) => [l.symbol, l.status]));
    const next = new Map(
      selectSymbols(listed, this.#options.rules, current).map((s) => [s, statusOf.get(s)!]),
    );
    // A status first learnt now (start without exchangeInfo) is not a change.
    const before = new Map(
      [...this.#statuses].map(([s, status]) => [s, status === "" ? next.get(s) ?? "" : status]),
    );
    const change = diffSelection(before, next);
    this.#apply(change, next, { ...options, listed: statusOf });
    return change;
  }

  /**
   * Reads the listing every `intervalMs` until `signal` aborts; a failed read
   * keeps the current set (one WARN per failure).
   */
  async follow(options: {
    read: (signal: AbortSignal) => Promise<readonly Listing[]>;
    intervalMs: number;
    signal: AbortSignal;
  }): Promise<void> {
    const { signal } = options;
    while (!signal.aborted) {
      await delay(options.intervalMs, signal);
      if (signal.aborted) return;
      let listed: readonly Listing[];
      try {
        listed = await options.read(signal);
      } catch (error) {
        if (signal.aborted) return;
        log.warn("Could not read exchangeInfo ({error}); keeping the {count} symbols recorded", {
          error: error instanceof Error ? error.message : String(error),
          count: this.#statuses.size,
        });
        continue;
      }
      if (signal.aborted) return;
      // Binance delists a few symbols at a time: a listing half as long as the last
      // is taken for a bad answer, until the next one says the same.
      const shrunk = listed.length < this.#lastListed / 2;
      if (shrunk && listed.length !== this.#refusedLength) {
        this.#refusedLength = listed.length;
        log.warn(
          "exchangeInfo listed {count} symbols against {last} before; keeping the {recorded} symbols recorded until a second listing says the same",
          { count: listed.length, last: this.#lastListed, recorded: this.#statuses.size },
        );
        continue;
      }
      this.#refusedLength = undefined;
      this.update(listed);
    }
  }

  #apply(
    change: SelectionChange,
    next: ReadonlyMap<string, string>,
    options: { quiet?: boolean; listed?: ReadonlyMap<string, string> },
  ): void {
    const { recorder, streamsOf, nowMicros } = this.#options;
    const recvTs = nowMicros();
    const removedStreams: string[] = [];
    for (const symbol of change.removed) {
      const streams = streamsOf(symbol);
      const reason = options.listed?.has(symbol) ? "no longer selected" : "no longer listed";
      recorder.stop(streams, recvTs, { symbol, reason, status: this.#statuses.get(symbol) });
      this.#statuses.delete(symbol);
      for (const stream of streams) {
        removedStreams.push(stream);
        const entry = this.#groupOf.get(stream);
        this.#groupOf.delete(stream);
        entry?.live.delete(stream);
        if (entry && entry.live.size === 0) entry.stop.abort();
      }
      log.info("{symbol} left the recorded set; its streams stopped and were sealed", {
        symbol,
        streams,
      });
    }
    for (const { symbol, from, to } of change.status) {
      this.#statuses.set(symbol, to);
      if (from === "") continue;
      recorder.event(streamsOf(symbol), "status", recvTs, { symbol, from, to });
      log.info("{symbol} status {from} → {to}; recording goes on", { symbol, from, to });
    }
    for (const [symbol, status] of next) {
      if (this.#statuses.has(symbol)) this.#statuses.set(symbol, status);
    }
    const addedStreams: string[] = [];
    for (const symbol of change.added) {
      this.#statuses.set(symbol, next.get(symbol) ?? "");
      addedStreams.push(...streamsOf(symbol));
      if (!options.quiet) {
        log.info("{symbol} joined the recorded set ({status})", {
          symbol,
          status: next.get(symbol) ?? "status unknown",
        });
      }
    }
    if (addedStreams.length > 0) this.#open(addedStreams);
    if (options.quiet) {
      log.info("Recorded set: {count} symbols, {streams} streams", {
        count: this.#statuses.size,
        streams: this.#groupOf.size,
      });
    }
    if (addedStreams.length > 0 || removedStreams.length > 0) {
      this.#options.onStreams?.({ added: addedStreams, removed: removedStreams });
    }
  }

  /** New streams on new connections of their own, grouped by base. */
  #open(streams: readonly string[]): void {
    const { recorder, signal, baseOf } = this.#options;
    const byBase = Map.groupBy(streams, (stream) => baseOf?.(stream) ?? "");
    const groups = [...byBase.values()].flatMap((names) =>
      groupStreams(names, this.#options.streamsPerConnection)
    );
    for (const names of groups) {
      const stop = new AbortController();
      const stopSignal = AbortSignal.any([signal, stop.signal]);
      const group: StreamGroup = {
        conn: this.#nextConn++,
        names,
        retire: (socketId) => connection.retire(socketId),
        rotate: (socketId) => connection.rotate(socketId),
      };
      recorder.adopt(group);
      const connection = this.#options.connect(group, stopSignal);
      const done = connection.done;
      this.#done.add(done);
      // A rejection stays for `done` to report.
      done.then(() => this.#done.delete(done), () => {});
      const entry: GroupEntry = { group, connection, stop, live: new Set(names) };
      for (const name of names) this.#groupOf.set(name, entry);
    }
  }
}
