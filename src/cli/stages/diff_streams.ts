/**
 * Diff mode's bookkeeping between the recorder and the snapshotter: the
 * diff depth stream of each recorded symbol (its snapshots join that
 * stream's objects), which symbols have their first snapshot stored (status
 * shows the others), and when to ask for a snapshot (a chain starts, the
 * machine resumed). Only the diff depth stream needs a book snapshot (not
 * trades, not the ticker).
 */

import { parseStreamName } from "../../binance/streams.ts";

/** Where snapshot requests go (the Snapshotter). */
export interface SnapshotRequests {
  request(symbol: string, reason: string): void;
  /** The symbol is no longer recorded: no more snapshots of it. */
  forget(symbol: string): void;
}

export class DiffStreams {
  readonly #depthType: string;
  readonly #streamOf = new Map<string, string>();
  readonly #snapshotted = new Set<string>();
  #snapshots: SnapshotRequests | undefined;

  /** `depthType`: the stream type of the diff depth stream (binance/streams.ts depthStreamType). */
  constructor(depthType: string) {
    this.#depthType = depthType;
  }

  /** Snapshot requests go to `snapshots` from now on (none before: no diff mode, or not started). */
  requestFrom(snapshots: SnapshotRequests): void {
    this.#snapshots = snapshots;
  }

  /** The recorded set changed. */
  changed(change: { added: readonly string[]; removed: readonly string[] }): void {
    for (const stream of change.added) {
      const spec = parseStreamName(stream);
      if (spec?.type === this.#depthType) this.#streamOf.set(spec.symbol, stream);
    }
    for (const stream of change.removed) {
      const spec = parseStreamName(stream);
      if (spec && this.#streamOf.get(spec.symbol) === stream) {
        this.#streamOf.delete(spec.symbol);
        this.#snapshotted.delete(spec.symbol);
        this.#snapshots?.forget(spec.symbol);
      }
    }
  }

  /** A stream starts a new chain: a diff stream's symbol needs a snapshot. */
  chainStarted(stream: string): void {
    const spec = parseStreamName(stream);
    if (spec && this.#streamOf.get(spec.symbol) === stream) {
      this.#snapshots?.request(spec.symbol, "chain start");
    }
  }

  /** After a suspension every diff stream gets a fresh snapshot. */
  suspended(): void {
    for (const symbol of this.#streamOf.keys()) this.#snapshots?.request(symbol, "suspended");
  }

  /** The diff stream of `symbol`, while it is recorded. */
  streamOf(symbol: string): string | undefined {
    return this.#streamOf.get(symbol);
  }

  /** A snapshot of `symbol` was stored. */
  stored(symbol: string): void {
    this.#snapshotted.add(symbol);
  }

  /** Diff streams still waiting for their first snapshot. */
  awaiting(): string[] {
    const waiting = [...this.#streamOf].filter(([symbol]) => !this.#snapshotted.has(symbol));
    return waiting.map(([, stream]) => stream);
  }
}
