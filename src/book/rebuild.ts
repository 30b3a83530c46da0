/**
 * Rebuilds one stream's order book from the archive's lines, in receive
 * order, following Binance's procedure (BINANCE.md "Keeping a book"). Pure:
 * the caller reads the archive and hands over parsed lines; rows and notes
 * come back through callbacks. Memory is the book (plus the
 * diffs applied in the last 30 s), whatever the length of the range.
 *
 * Diff streams:
 * - The book starts from a snapshot line (archive/meta.ts, lastUpdateId
 *   L): spot drops diffs with `u <= L` and applies the first with
 *   `U <= L + 1 <= u`; USD-M drops `u < L` and applies the first with
 *   `U <= L <= u`. After it, spot needs `U == previous u + 1` (an overlap
 *   `U <= previous u + 1` misses nothing), USD-M `pu == previous u`.
 * - A break of that chain, or a `gap` event line, takes the book down until
 *   the next snapshot. After `disconnected`, `stale`, `recovered` or
 *   `dropped` the book goes on only if the next diff continues the chain
 *   (the ids prove nothing was missed); otherwise it is down, explained.
 *   A break with no such event line before it is an unexplained hole.
 * - Live, a diff whose `u` is not past the book's id is a message stored
 *   again (verify: a duplicate; USD-M too, before its `pu` is looked at):
 *   skipped and noted as damage, a run of them once.
 * - A later snapshot (id L2) is a check: once the book has passed L2, the
 *   snapshot is rolled forward through the diffs applied since L2 and
 *   compared with the book on the price range both know (bids at or above
 *   the higher of the two lowest bids, asks at or below the lower of the two
 *   highest asks: a snapshot lists only its top levels). Any difference is a
 *   mismatch naming the level. The book then takes the snapshot's levels
 *   (within its range), so one bad diff is reported once.
 * Partial-book streams: every message is a whole top-N book; it is printed
 * as stored, no rebuild needed.
 *
 * Prices and quantities stay the texts Binance sent (see side.ts).
 */

import { droppedFactsOf, EXPLAINING_EVENTS } from "../archive/decode.ts";
import type { SequenceRule } from "../binance/sequence.ts";
import { canonicalDecimal, type Level, Side } from "./side.ts";

export interface DepthSnapshot {
  readonly lastUpdateId: number;
  readonly bids: readonly Level[];
  readonly asks: readonly Level[];
}

export interface DepthDiff {
  readonly U: number;
  readonly u: number;
  readonly pu?: number;
  readonly b: readonly Level[];
  readonly a: readonly Level[];
}

export interface BookRow {
  /** µs: the line's receive time (`--every update`) or the sample time. */
  readonly recvTs: number;
  /** The last update id applied (partial books: the message's lastUpdateId). */
  readonly updateId: number;
  /** Best first, at most `levels` each. */
  readonly bids: readonly Level[];
  readonly asks: readonly Level[];
  /**
   * How many levels of each side, from the best (the fewer of the two), lie
   * within the price range a snapshot listed (partial books: the message);
   * `levels` when the whole row does. Beyond that range the book holds only
   * the levels diffs have set since, so a level there may be missing from the
   * row (an empty cell too).
   */
  readonly knownLevels: number;
}

export type NoteKind = "start" | "down" | "check" | "mismatch" | "skipped" | "damaged";

export interface BookNote {
  readonly kind: NoteKind;
  readonly recvTs?: number;
  readonly detail: string;
  /** The record is not whole here, or the book disagrees with a snapshot: exit 1. */
  readonly failing: boolean;
}

/** A line received at or after the range's end, as `BookRebuilder.afterRange` needs it. */
export type LineAfterRange =
  | { readonly kind: "diff"; readonly diff: DepthDiff }
  | { readonly kind: "partial"; readonly book: DepthSnapshot }
  | { readonly kind: "event"; readonly name: string }
  | { readonly kind: "snapshot" | "damaged" };

export interface RebuildOptions {
  readonly rule: SequenceRule;
  /** Levels per side in each row. */
  readonly levels: number;
  /** Sample period in µs; undefined: a row after every message. */
  readonly everyUs?: number;
  /** Rows and checks only from this receive time on (µs); earlier lines only build the book. */
  readonly from?: number;
  readonly onRow: (row: BookRow) => void;
  readonly onNote: (note: BookNote) => void;
}

export interface RebuildSummary {
  readonly rows: number;
  readonly started: boolean;
  readonly checksPassed: number;
  readonly checksFailed: number;
  readonly checksSkipped: number;
  readonly downs: number;
  readonly unexplainedDowns: number;
  readonly failing: number;
}

/**
 * Applied diffs kept to roll a snapshot forward: a snapshot line is stored
 * when the REST answer arrives, after the diffs that followed its id. 30 s
 * of them (at most 3,000) is far more than a REST call takes; more would
 * cost memory (a parsed diff is ~2 KB: 8,000 of them doubled the RSS).
 */
export const RECENT_DIFFS_US = 30_000_000;
export const RECENT_DIFFS_MAX = 3000;
/** Unexplained downs kept for a later `dropped` line to explain. */
const MAX_AWAITING_DROP = 100;
/** At most this many mismatching levels are named per check (all are counted). */
const MAX_NAMED_MISMATCHES = 10;

type Mode = "down" | "syncing" | "live";

/** A snapshot rolled forward to the book's id, and the price range it knows. */
interface RolledSnapshot {
  readonly bids: Side;
  readonly asks: Side;
  /** The snapshot's own worst levels: bids at or above, asks at or below (empty: ±Infinity, whole). */
  readonly lowBid: number;
  readonly highAsk: number;
}

export class BookRebuilder {
  readonly #o: RebuildOptions;
  readonly #bids = new Side("bid");
  readonly #asks = new Side("ask");
  #mode: Mode = "down";
  /** Why the book is down (for the note when it restarts). */
  #downWhy = "no snapshot yet";
  /** syncing: the snapshot's id; live: the last applied `u`. */
  #lastId = 0;
  /**
   * The price range the book knows: bids at or above, asks at or below (a
   * snapshot's worst levels, widened by the later snapshots the book takes).
   * A side the snapshot lists empty is the whole side: -Infinity / Infinity.
   */
  #lowBid = Infinity;
  #highAsk = -Infinity;
  #pending?: { snapshot: DepthSnapshot; recvTs: number };
  /**
   * Applied diffs of the last RECENT_DIFFS_US, oldest first, from `#recentHead`
   * on; while the book is down, the diffs kept for the next snapshot, each
   * with the explaining event line that came just before it, if any.
   */
  #recent: Array<{ recvTs: number; diff: DepthDiff; explained?: string }> = [];
  #recentHead = 0;
  /** An explaining event line since the last applied (or, down, kept) diff. */
  #explained?: string;
  /** The receive time of the last diff applied. */
  #appliedTs?: number;
  /**
   * The diffs that broke the chain, as kept (a replay hands the same objects
   * back; receive times may repeat after a clock step, so they would not do).
   */
  readonly #broke = new WeakSet<DepthDiff>();
  /** Unexplained downs a later `dropped` line may explain: the times the loss lies in (to: the break). */
  #awaitingDrop: Array<{ from: number; to: number }> = [];
  /** A run of messages stored again (each skipped), noted once when the run ends. */
  #repeats?: { recvTs: number; first: string; last: string; count: number; after: number };
  #nextSample?: number;
  #rows = 0;
  #started = false;
  #checksPassed = 0;
  #checksFailed = 0;
  #checksSkipped = 0;
  #downs = 0;
  #unexplainedDowns = 0;
  #failing = 0;

  constructor(options: RebuildOptions) {
    this.#o = options;
  }

  get #diffMode(): boolean {
    return this.#o.rule !== "partial";
  }

  /** A REST snapshot line of the stream's symbol. */
  snapshot(recvTs: number, snapshot: DepthSnapshot): void {
    // Diff mode: the samples due wait for the next diff (see `event`).
    if (!this.#diffMode) {
      this.#advance(recvTs);
      return;
    }
    if (this.#mode === "live") {
      this.#pending = { snapshot, recvTs };
      if (this.#lastId >= snapshot.lastUpdateId) this.#checkPending();
      return;
    }
    this.#load(recvTs, snapshot);
  }

  /** A diff message of the stream. */
  diff(recvTs: number, diff: DepthDiff): void {
    // Live, a diff whose `u` is not past the book is one already applied (as verify
    // says: a duplicate, spot and USD-M alike): skipped, and it proves nothing of the
    // time before it (no sample). Syncing, older diffs are dropped, as Binance says.
    if (this.#mode === "live" && diff.u <= this.#lastId) {
      this.#repeat(recvTs, `diff ${diff.U}..${diff.u}`);
      return;
    }
    this.#endRepeats();
    // A break is found before sampling: between the last good message and this
    // one the book is unknown, so no row is written for that time.
    if (this.#mode !== "live" || this.#follows(diff)) this.#advance(recvTs);
    this.#step(recvTs, diff, false);
  }

  /** Takes the book down at a break of the chain, then takes the diff. */
  #step(recvTs: number, diff: DepthDiff, replaying: boolean): void {
    if (this.#mode === "live" && !this.#follows(diff)) {
      const last = this.#lastId;
      const missing = this.#o.rule === "spot-diff" || diff.pu === undefined
        ? `update ids ${last + 1}..${diff.U - 1} missing`
        : `pu=${diff.pu} after u=${last}`;
      const why = this.#explained === undefined
        ? `${missing}, no event line explains it`
        : `${missing} (after a ${this.#explained} event)`;
      // Starts again from a snapshot already read, if one is ahead of the book.
      // A break met again while replaying kept diffs (an older snapshot came
      // after it) was counted and noted the first time.
      const again = replaying && this.#broke.has(diff);
      this.#down(recvTs, why, this.#explained !== undefined, !again);
      this.#broke.add(diff);
    }
    this.#take(recvTs, diff, replaying);
  }

  /**
   * A diff in the current mode: down, it is kept (a snapshot stored after it
   * may need it: the diff that straddles a snapshot's id often arrives before
   * the REST answer); syncing, it joins the snapshot or is dropped; live, it
   * is applied (the caller checked that it follows).
   */
  #take(recvTs: number, diff: DepthDiff, replaying = false): void {
    if (this.#mode === "down") {
      this.#remember(recvTs, diff);
      return;
    }
    const spot = this.#o.rule === "spot-diff";
    const last = this.#lastId;
    if (this.#mode === "syncing") {
      if (spot ? diff.u <= last : diff.u < last) return;
      if (spot ? diff.U > last + 1 : diff.U > last) {
        this.#down(
          recvTs,
          `snapshot ${last} is older than the first diff after it (U=${diff.U})`,
          this.#explained !== undefined,
        );
        this.#remember(recvTs, diff);
        return;
      }
    } else if (diff.u <= last) {
      this.#repeat(recvTs, `diff ${diff.U}..${diff.u}`); // among the kept diffs replayed
      return;
    }
    this.#apply(recvTs, diff);
    if (this.#mode === "syncing") {
      this.#mode = "live";
      this.#nextSample = undefined;
    }
    if (replaying) return;
    if (this.#pending && this.#lastId >= this.#pending.snapshot.lastUpdateId) this.#checkPending();
    this.#afterMessage(recvTs);
  }

  /** A partial-book message: the whole top of the book. */
  partial(recvTs: number, book: DepthSnapshot): void {
    if (this.#diffMode) {
      this.#advance(recvTs);
      return;
    }
    // An id going back is a message stored twice (as verify says), never the book now.
    if (this.#mode === "live" && book.lastUpdateId < this.#lastId) {
      this.#repeat(recvTs, `partial book id ${book.lastUpdateId}`);
      return;
    }
    this.#endRepeats();
    this.#advance(recvTs);
    this.#bids.clear();
    this.#asks.clear();
    for (const [price, qty] of book.bids) this.#bids.set(price, qty);
    for (const [price, qty] of book.asks) this.#asks.set(price, qty);
    this.#lowBid = this.#bids.worstValue ?? -Infinity;
    this.#highAsk = this.#asks.worstValue ?? Infinity;
    this.#lastId = book.lastUpdateId;
    if (this.#mode !== "live") {
      this.#mode = "live";
      this.#nextSample = undefined;
      if (!this.#started) {
        this.#started = true;
        this.#note({
          kind: "start",
          recvTs,
          detail: "partial book: rows are the stored levels",
          failing: false,
        });
      }
    }
    this.#afterMessage(recvTs);
  }

  /** An event line of the stream. */
  event(recvTs: number, name: string, details: Readonly<Record<string, unknown>>): void {
    // Samples are written at data lines only. Diff mode: those due wait for the next
    // diff, written if it continues the chain, dropped at a break or a `gap` (the book
    // after the last good diff is unknown: a disconnect, a stall, a loss lie there).
    // Partial books: after a line saying the feed was cut, the book is unknown until
    // the next push.
    if (!this.#diffMode) {
      if (EXPLAINING_EVENTS.has(name) && name !== "rotated") this.#nextSample = undefined;
      else this.#advance(recvTs);
    }
    if (name === "stopped") {
      this.#stopped(recvTs);
      return;
    }
    if (!EXPLAINING_EVENTS.has(name)) return;
    if (name === "dropped") this.#explainDrop(details);
    this.#explained = name;
    // Syncing, a loaded snapshot may still start the new chain: the first
    // diff after it decides (a U past it takes the book down, explained).
    if (name === "gap" && this.#diffMode && this.#mode === "live") {
      const ids = details.expected !== undefined
        ? ` (expected ${details.expected}, received ${details.received})`
        : "";
      this.#down(recvTs, `gap event${ids}`, true);
    }
  }

  /**
   * A `stopped` line: the symbol left the recorded set (delisted, say), and
   * whatever comes after it is a new record whose update ids need not follow
   * the old ones (a symbol listed again). The book is down until the next
   * snapshot (diffs) or push (partial books); the diffs kept for a snapshot
   * belong to the old chain and go.
   */
  #stopped(recvTs: number): void {
    this.#recent = [];
    this.#recentHead = 0;
    this.#explained = undefined;
    if (this.#mode === "down" || !this.#started) {
      this.#mode = "down";
      this.#pending = undefined;
      return;
    }
    if (this.#diffMode) {
      this.#pending = undefined;
      this.#down(recvTs, "the stream stopped (its symbol left the recorded set)", true);
    } else {
      this.#mode = "down";
      this.#nextSample = undefined;
    }
  }

  /**
   * A `dropped` line is written into the stream's next batch, after the
   * diffs that followed the loss: an unexplained down whose lost messages it
   * counts (received between the last applied diff and the break) is
   * explained after all.
   */
  #explainDrop(details: Readonly<Record<string, unknown>>): void {
    const dropped = droppedFactsOf({ event: "dropped", fields: details });
    if (!dropped) return;
    const { firstRecvTs: first, lastRecvTs: last } = dropped;
    const match = this.#awaitingDrop.findIndex((d) => d.from <= first && last <= d.to);
    if (match === -1) return;
    const [down] = this.#awaitingDrop.splice(match, 1);
    this.#unexplainedDowns--;
    this.#failing--;
    this.#note({
      kind: "down",
      recvTs: down.to,
      detail: "the break here is explained by a dropped line stored after it: " +
        `${dropped.messages} messages lost (${dropped.reason})`,
      failing: false,
    });
  }

  /**
   * Part of the record could not be read (an unreadable object, a line that
   * is not JSON or not a depth message). Nothing of it was applied; where a
   * message is lost, the update-id chain shows whether the book can go on.
   */
  damaged(recvTs: number | undefined, detail: string): void {
    const before = recvTs !== undefined && this.#before(recvTs);
    this.#note({ kind: "damaged", recvTs, detail, failing: !before });
  }

  /** A message stored again, skipped: joins the run noted when the next message is not one. */
  #repeat(recvTs: number, what: string): void {
    const run = this.#repeats;
    if (run) {
      run.count++;
      run.last = what;
    } else {
      this.#repeats = { recvTs, first: what, last: what, count: 1, after: this.#lastId };
    }
  }

  /** Notes the run of messages stored again, as damage at its first (an object stored twice: one note). */
  #endRepeats(): void {
    const run = this.#repeats;
    if (!run) return;
    this.#repeats = undefined;
    this.damaged(
      run.recvTs,
      run.count === 1
        ? `${run.first} after ${run.after}: a message stored again, skipped`
        : `${run.count} messages stored again, skipped: ${run.first} to ${run.last}, ` +
          `after ${run.after}`,
    );
  }

  /** Read only to build the book: before `from`. */
  #before(recvTs: number): boolean {
    return this.#o.from !== undefined && recvTs < this.#o.from;
  }

  /**
   * A line received at or after `to`, the range's end (exclusive). It changes
   * nothing, but decides, as the same line inside the range would, whether
   * the samples due before `to` are written: the book at their time is known
   * when the next diff continues the chain (partial books: when the next line
   * is not one saying the feed was cut). Returns false when it decides
   * nothing (a repeat, an event line or a snapshot among diffs, damage): the
   * caller hands over the next line.
   */
  afterRange(to: number, line: LineAfterRange): boolean {
    if (this.#o.everyUs === undefined || this.#mode !== "live") return true;
    if (this.#diffMode) {
      if (line.kind !== "diff" || line.diff.u <= this.#lastId) return false;
      if (this.#follows(line.diff)) this.#advance(to);
      return true;
    }
    if (line.kind === "damaged") return false;
    if (line.kind === "partial" && line.book.lastUpdateId < this.#lastId) return false;
    const cut = line.kind === "event" && EXPLAINING_EVENTS.has(line.name) &&
      line.name !== "rotated";
    if (!cut) this.#advance(to);
    return true;
  }

  /** The end of the range: the last samples were written as lines came. */
  finish(): RebuildSummary {
    this.#endRepeats();
    if (!this.#started) {
      this.#note({
        kind: "down",
        detail: this.#diffMode
          ? "the book could not be rebuilt: no snapshot followed by its diffs in the range"
          : "no partial-book message in the range",
        failing: true,
      });
    }
    return {
      rows: this.#rows,
      started: this.#started,
      checksPassed: this.#checksPassed,
      checksFailed: this.#checksFailed,
      checksSkipped: this.#checksSkipped,
      downs: this.#downs,
      unexplainedDowns: this.#unexplainedDowns,
      failing: this.#failing,
    };
  }

  #load(recvTs: number, snapshot: DepthSnapshot): void {
    const buffered = this.#recent.slice(this.#recentHead);
    this.#bids.clear();
    this.#asks.clear();
    for (const [price, qty] of snapshot.bids) this.#bids.set(price, qty);
    for (const [price, qty] of snapshot.asks) this.#asks.set(price, qty);
    this.#lowBid = this.#bids.worstValue ?? -Infinity;
    this.#highAsk = this.#asks.worstValue ?? Infinity;
    this.#lastId = snapshot.lastUpdateId;
    this.#mode = "syncing";
    this.#recent = [];
    this.#recentHead = 0;
    this.#pending = undefined;
    // An event after the last kept diff still explains what comes next.
    const trailing = this.#explained;
    this.#explained = undefined;
    this.#note({
      kind: "start",
      recvTs,
      detail: this.#started
        ? `restarted from snapshot ${snapshot.lastUpdateId} (down since: ${this.#downWhy})`
        : `started from snapshot ${snapshot.lastUpdateId}`,
      failing: false,
    });
    this.#started = true;
    // Diffs received before the snapshot line that follow its id: apply them
    // now (no rows for them: the book was not known at their time).
    for (const entry of buffered) {
      if (entry.explained !== undefined) this.#explained = entry.explained;
      this.#step(entry.recvTs, entry.diff, true);
    }
    if (trailing !== undefined) this.#explained = trailing;
    // (#step changed the mode: the narrowing from the assignment above no longer holds.)
    if ((this.#mode as Mode) === "live") this.#afterMessage(recvTs);
  }

  /**
   * Keeps a diff received while the book is down (RECENT_DIFFS_US of them),
   * with the explaining event line before it: a snapshot stored later
   * replays them, and a break among them is explained by what came between.
   */
  #remember(recvTs: number, diff: DepthDiff): void {
    this.#recent.push({ recvTs, diff, explained: this.#explained });
    this.#explained = undefined;
    this.#trimRecent(recvTs);
  }

  #trimRecent(recvTs: number): void {
    const recent = this.#recent;
    while (
      recent.length - this.#recentHead > RECENT_DIFFS_MAX ||
      recent[this.#recentHead].recvTs < recvTs - RECENT_DIFFS_US
    ) this.#recentHead++;
    if (this.#recentHead > 1024) {
      this.#recent = recent.slice(this.#recentHead);
      this.#recentHead = 0;
    }
  }

  /** Whether a diff newer than the book continues its chain (spot `U`, USD-M `pu`). */
  #follows(diff: DepthDiff): boolean {
    if (diff.u <= this.#lastId) return true;
    return this.#o.rule === "spot-diff" || diff.pu === undefined
      ? diff.U <= this.#lastId + 1
      : diff.pu === this.#lastId;
  }

  #apply(recvTs: number, diff: DepthDiff): void {
    for (const [price, qty] of diff.b) this.#bids.set(price, qty);
    for (const [price, qty] of diff.a) this.#asks.set(price, qty);
    this.#lastId = diff.u;
    this.#explained = undefined;
    this.#appliedTs = recvTs;
    this.#recent.push({ recvTs, diff });
    this.#trimRecent(recvTs);
  }

  #down(recvTs: number, why: string, explained: boolean, counted = true): void {
    if (counted) this.#count(recvTs, why, explained);
    const pending = this.#pending;
    this.#mode = "down";
    this.#pending = undefined;
    this.#nextSample = undefined;
    // A snapshot not yet reached by the book is the next one: start from it.
    if (pending) this.#load(pending.recvTs, pending.snapshot);
  }

  /** A down, counted and noted once (before `from`, noted only: the range starts later). */
  #count(recvTs: number, why: string, explained: boolean): void {
    if (this.#before(recvTs)) {
      this.#downWhy = why;
      this.#note({
        kind: "down",
        recvTs,
        detail: `before the range: ${why}; waiting for the next snapshot`,
        failing: false,
      });
      return;
    }
    this.#downs++;
    if (!explained) {
      this.#unexplainedDowns++;
      const from = this.#appliedTs ?? recvTs;
      this.#awaitingDrop.push({ from, to: recvTs });
      if (this.#awaitingDrop.length > MAX_AWAITING_DROP) this.#awaitingDrop.shift();
    }
    this.#downWhy = why;
    this.#note({
      kind: "down",
      recvTs,
      detail: `the book cannot be rebuilt from here: ${why}; waiting for the next snapshot`,
      failing: !explained,
    });
  }

  /** Rolls the pending snapshot forward to the book's id and compares. */
  #checkPending(): void {
    const { snapshot, recvTs } = this.#pending!;
    this.#pending = undefined;
    if (this.#before(recvTs)) return;
    const rolled = this.#roll(snapshot);
    if (!rolled) {
      this.#checksSkipped++;
      this.#note({
        kind: "skipped",
        recvTs,
        detail: `snapshot ${snapshot.lastUpdateId} not checked: ` +
          "the diffs that follow it are no longer held",
        failing: false,
      });
      return;
    }
    this.#compare(recvTs, snapshot.lastUpdateId, rolled);
    this.#adopt(rolled);
  }

  /**
   * The snapshot's levels with the held diffs after it applied; undefined
   * when the diffs that follow it are no longer held.
   */
  #roll(snapshot: DepthSnapshot): RolledSnapshot | undefined {
    const L = snapshot.lastUpdateId;
    const spot = this.#o.rule === "spot-diff";
    const bids = new Side("bid");
    const asks = new Side("ask");
    for (const [price, qty] of snapshot.bids) bids.set(price, qty);
    for (const [price, qty] of snapshot.asks) asks.set(price, qty);
    // A side listed empty is the whole side (a snapshot lists its top `limit` levels).
    const lowBid = bids.worstValue ?? -Infinity;
    const highAsk = asks.worstValue ?? Infinity;
    const recent = this.#recent.slice(this.#recentHead).map((entry) => entry.diff);
    const first = recent.findIndex((d) => (spot ? d.u > L : d.u >= L));
    if (first === 0 && (spot ? recent[0].U > L + 1 : recent[0].U > L)) return undefined;
    if (first !== -1) {
      for (const diff of recent.slice(first)) {
        for (const [price, qty] of diff.b) bids.set(price, qty);
        for (const [price, qty] of diff.a) asks.set(price, qty);
      }
    }
    return { bids, asks, lowBid, highAsk };
  }

  /** Compares the book with the rolled snapshot where both know the levels. */
  #compare(recvTs: number, L: number, rolled: RolledSnapshot): void {
    const { bids, asks } = rolled;
    const lowBid = Math.max(this.#lowBid, rolled.lowBid);
    const highAsk = Math.min(this.#highAsk, rolled.highAsk);
    const mismatches = [
      ...compareSide(this.#bids, bids, lowBid),
      ...compareSide(this.#asks, asks, highAsk),
    ];
    const compared = `${levelsCompared(this.#bids, bids, lowBid)} bid and ${
      levelsCompared(this.#asks, asks, highAsk)
    } ask levels`;
    if (mismatches.length === 0) {
      this.#checksPassed++;
      this.#note({
        kind: "check",
        recvTs,
        detail: `snapshot ${L} agrees with the rebuilt book at ${this.#lastId} on ${compared}`,
        failing: false,
      });
      return;
    }
    this.#checksFailed++;
    const named = mismatches.slice(0, MAX_NAMED_MISMATCHES).join("; ");
    const more = mismatches.length > MAX_NAMED_MISMATCHES
      ? `; … ${mismatches.length - MAX_NAMED_MISMATCHES} more`
      : "";
    this.#note({
      kind: "mismatch",
      recvTs,
      detail: `snapshot ${L} (rolled to ${this.#lastId}) differs from the rebuilt book on ` +
        `${mismatches.length} of ${compared}: ${named}${more}`,
      failing: true,
    });
  }

  /** From here the snapshot's levels are the book within its range. */
  #adopt({ bids, asks, lowBid, highAsk }: RolledSnapshot): void {
    this.#bids.clearWithin(lowBid);
    this.#asks.clearWithin(highAsk);
    for (const [price, qty] of bids.within(lowBid)) this.#bids.set(price, qty);
    for (const [price, qty] of asks.within(highAsk)) this.#asks.set(price, qty);
    this.#lowBid = Math.min(this.#lowBid, lowBid);
    this.#highAsk = Math.max(this.#highAsk, highAsk);
  }

  /** Writes the samples due before a line received at `recvTs`. */
  #advance(recvTs: number): void {
    const every = this.#o.everyUs;
    if (every === undefined || this.#mode !== "live") return;
    if (this.#nextSample === undefined) {
      this.#nextSample = Math.ceil(recvTs / every) * every;
      return;
    }
    while (this.#nextSample < recvTs) {
      this.#row(this.#nextSample);
      this.#nextSample += every;
    }
  }

  #afterMessage(recvTs: number): void {
    if (this.#o.everyUs === undefined) this.#row(recvTs);
    else this.#nextSample ??= Math.ceil(recvTs / this.#o.everyUs) * this.#o.everyUs;
  }

  #row(recvTs: number): void {
    if (this.#before(recvTs)) return;
    this.#rows++;
    const { levels } = this.#o;
    const bids = this.#bids.top(levels);
    const asks = this.#asks.top(levels);
    this.#o.onRow({
      recvTs,
      updateId: this.#lastId,
      bids,
      asks,
      knownLevels: Math.min(
        knownLevels(this.#bids, bids, this.#lowBid, levels),
        knownLevels(this.#asks, asks, this.#highAsk, levels),
      ),
    });
  }

  #note(note: BookNote): void {
    if (note.failing) this.#failing++;
    this.#o.onNote(note);
  }
}

/**
 * How many of a side's best levels (`top`, at most `levels`) lie at or
 * better than `limit`, the worst price a snapshot listed; `levels` when the
 * side is known whole (the snapshot listed it empty) or all of them do.
 */
function knownLevels(side: Side, top: readonly Level[], limit: number, levels: number): number {
  if (limit === (side.kind === "bid" ? -Infinity : Infinity)) return levels;
  let known = 0;
  while (known < top.length && side.atOrBetter(Number(top[known][0]), limit)) known++;
  return known;
}

/** Prices at or better than `limit` that the book or the snapshot has: what `compareSide` looks at. */
function levelsCompared(book: Side, snapshot: Side, limit: number): number {
  let count = snapshot.within(limit).length;
  for (const [price] of book.within(limit)) if (snapshot.get(price) === undefined) count++;
  return count;
}

/** The differences between the book and the snapshot on levels at or better than `limit`. */
function compareSide(book: Side, snapshot: Side, limit: number): string[] {
  const out: string[] = [];
  for (const [price, qty] of snapshot.within(limit)) {
    const have = book.get(price);
    if (have === undefined) {
      out.push(`${book.kind} ${price}: the snapshot has "${qty}", the rebuilt book no level`);
    } else if (canonicalDecimal(have) !== canonicalDecimal(qty)) {
      out.push(`${book.kind} ${price}: rebuilt "${have}", snapshot "${qty}"`);
    }
  }
  for (const [price, qty] of book.within(limit)) {
    if (snapshot.get(price) === undefined) {
      out.push(`${book.kind} ${price}: the rebuilt book has "${qty}", the snapshot no level`);
    }
  }
  return out;
}
