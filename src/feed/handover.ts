/**
 * Which socket a stream is stored from, and what each frame or close means
 * for the record: a pure function `handover(state, event) → { state, actions }`
 * per stream, with no sockets, clocks or callbacks. The recorder applies the
 * actions (lines into batches, counters, asking the feed to retire a socket).
 *
 * Per stream the state keeps the update-id chain: the socket the stream is
 * taken from (its owner), the last update id stored, and whether the next
 * message must follow on. A break is a `gap` action before the message.
 *
 * Rotation without a hole: while a successor socket overlaps the owner, its
 * frames are held back until one of them follows on from the last id stored
 * (or repeats one); from there the stream is taken from the successor (a
 * `rotated` action marks the switch) and the owner's later frames are
 * dropped as the repeats they are. A partial book's ids repeat while the
 * book does not change, so it is placed by counting instead
 * (`tryPartialHandover`). Socket ids only grow, so an older socket
 * is one the stream already left. If the new owner dies before the old
 * socket is retired, the stream goes back to the old one with what it
 * delivered meanwhile and loses nothing.
 */

import { continuity, type MessageIds, type SequenceRule } from "../binance/sequence.ts";

/** The update ids a frame carries (a frame of any shape passes through untouched). */
export interface ChainIds {
  readonly firstUpdateId?: number;
  readonly lastUpdateId?: number;
  readonly prevUpdateId?: number;
}

/** A frame with its receive time, µs. */
export interface Received<F> {
  readonly frame: F;
  readonly recvTs: number;
}

/** Frames of one socket kept aside, oldest first. */
export interface Aside<F> {
  readonly socketId: number;
  readonly frames: readonly Received<F>[];
  /**
   * A successor that closed before it joined: it can no longer take the
   * stream, but what it delivered ahead of the owner is kept until the owner
   * delivers the same (then dropped as repeats) or closes without a
   * replacement (then stored after the hole).
   */
  readonly closed?: true;
  /** A successor's first update id: it saw every push with a higher one. */
  readonly firstId?: number;
  /**
   * A successor of a partial book: how many pushes of `id` (the last stored)
   * the owner has stored since this successor came; `changed`, counted from
   * the push that changed the book to it, so from its first push.
   */
  readonly ownerRun?: { readonly id: number; readonly count: number; readonly changed: boolean };
  /** The socket the stream left: how many frames the new owner has stored since. */
  readonly storedSince?: number;
}

export interface StreamHandover<F> {
  /** Continuity rule of the stream; undefined: no checks, every frame is stored. */
  readonly rule: SequenceRule | undefined;
  /** Socket the stream is stored from; undefined until one delivers, and after it closed. */
  readonly owner: number | undefined;
  /** Last update id stored. */
  readonly last: number | undefined;
  /** Just moved to a socket that may still deliver what was stored: drop those repeats. */
  readonly catchingUp: boolean;
  /**
   * A partial book, whose id does not change while its book does not: how
   * many of the owner's next frames are copies of what was stored (going
   * back to the old socket, the frames the other one stored meanwhile).
   */
  readonly copies?: number;
  /**
   * A partial book catching up on a successor that took over once placed:
   * how many of its frames of the last id are still copies (those of lower
   * ids all are).
   */
  readonly copiesOfLast?: number;
  /** A newer socket's frames waiting to join the chain. */
  readonly successor: Aside<F> | undefined;
  /** The socket this stream left in its last switch, while it runs, and what it delivered since. */
  readonly previous: Aside<F> | undefined;
}

export type HandoverEvent<F> =
  /** Socket `socketId` delivered a data frame of the stream. */
  | {
    readonly kind: "frame";
    readonly socketId: number;
    readonly frame: F;
    readonly recvTs: number;
  }
  /**
   * Socket `socketId` closed; `replaced`: a successor of the connection
   * carries on. `cause` is the feed's close cause (`rotated` is planned).
   */
  | {
    readonly kind: "closed";
    readonly socketId: number;
    readonly replaced: boolean;
    readonly cause: unknown;
    readonly recvTs: number;
  };

export type HandoverAction<F> =
  /** Store this frame as a data line. */
  | { readonly kind: "record"; readonly frame: F; readonly recvTs: number }
  /** A repeat of what was stored (or a frame of a socket the stream left): not stored. */
  | { readonly kind: "discard" }
  /** A break in the chain, before the frame that shows it. */
  | {
    readonly kind: "gap";
    readonly expected: number;
    readonly received: number;
    readonly recvTs: number;
  }
  /** A new chain starts at `firstUpdateId` (the stream's first message, or the first after a gap). */
  | { readonly kind: "chain-start"; readonly firstUpdateId: number }
  /** The stream moved to socket `to`; `confirmed: false` when it was not proven to follow on. */
  | {
    readonly kind: "rotated";
    readonly recvTs: number;
    readonly from: number | undefined;
    readonly to: number | undefined;
    readonly last: number | undefined;
    readonly confirmed?: false;
  }
  /** The stream has a hole from here; `replaced`: a successor (`successor`, if known) carries on. */
  | {
    readonly kind: "disconnected";
    readonly recvTs: number;
    readonly replaced: boolean;
    readonly successor?: number;
  }
  /** The stream no longer takes frames from `socketId`: retire it once no stream of its group does. */
  | { readonly kind: "left"; readonly socketId: number };

export interface HandoverStep<F> {
  readonly state: StreamHandover<F>;
  readonly actions: readonly HandoverAction<F>[];
}

/** Frames kept aside per socket and stream at most (a bound on memory, not a limit reached in practice). */
export const MAX_ASIDE = 100_000;

/** A stream no socket delivered yet. */
export function newStream<F>(rule: SequenceRule | undefined): StreamHandover<F> {
  return {
    rule,
    owner: undefined,
    last: undefined,
    catchingUp: false,
    successor: undefined,
    previous: undefined,
  };
}

/** The next state of a stream after `event`, and what to do about it, in order. */
export function handover<F extends ChainIds>(
  state: StreamHandover<F>,
  event: HandoverEvent<F>,
): HandoverStep<F> {
  const actions: HandoverAction<F>[] = [];
  const next = event.kind === "frame"
    ? onFrame(state, { frame: event.frame, recvTs: event.recvTs }, event.socketId, actions)
    : onClosed(state, event, actions);
  return { state: next, actions };
}

/**
 * The common case without `handover`'s objects (it runs for every message):
 * when a frame of `socketId` is simply stored, with no other action, the
 * stream's next state; undefined when `handover` must decide. That is the
 * owner's frame, with no successor waiting, no repeats being dropped and
 * (a partial book) no old socket to count for, that follows on, repeats (an
 * owner's repeat is stored) or has no ids to check.
 */
export function recordsPlainly<F extends ChainIds>(
  state: StreamHandover<F>,
  frame: F,
  socketId: number,
): StreamHandover<F> | undefined {
  if (
    state.owner !== socketId || state.catchingUp || state.successor !== undefined ||
    (state.previous !== undefined && state.rule === "partial") || state.copies
  ) {
    return undefined;
  }
  const { rule, last } = state;
  const lastUpdateId = frame.lastUpdateId;
  if (!rule || frame.firstUpdateId === undefined || lastUpdateId === undefined) return state;
  // The first frame starts a chain.
  if (last === undefined) return undefined;
  if (lastUpdateId <= last) return state;
  // The frame carries both ids: it is the `MessageIds` `accept` would build from it.
  const verdict = continuity(rule, last, frame as F & MessageIds);
  return verdict.kind === "next" ? { ...state, last: lastUpdateId } : undefined;
}

/**
 * Whether socket `socketId` can be retired: none of its group's streams is
 * taken from it any more.
 */
export function allLeft(
  names: readonly string[],
  ownerOf: (stream: string) => number | undefined,
  socketId: number,
): boolean {
  return names.every((stream) => ownerOf(stream) !== socketId);
}

type Actions<F> = HandoverAction<F>[];

function onFrame<F extends ChainIds>(
  state: StreamHandover<F>,
  received: Received<F>,
  socketId: number,
  actions: Actions<F>,
): StreamHandover<F> {
  if (state.owner === undefined) {
    // A new diff socket after a disconnect may start with updates already
    // stored. (A partial book repeating its lastUpdateId is just unchanged.)
    // (After a replaced close the new socket continues the old one: any rule.)
    const rule = state.rule;
    const catchingUp = state.catchingUp ||
      (state.last !== undefined && rule !== undefined && rule !== "partial");
    state = { ...state, owner: socketId, catchingUp };
  }
  if (state.owner === socketId) {
    state = ownedFrame(state, received, actions);
    return state.successor ? tryHandover(state, actions) : state;
  }
  // An older socket: one this stream already left (still delivering frames
  // in flight while it closes). Never go back to it, but keep what it sends
  // in case the new owner dies first.
  if (socketId < state.owner!) {
    actions.push({ kind: "discard" });
    const previous = state.previous;
    if (previous?.socketId !== socketId || previous.frames.length >= MAX_ASIDE) return state;
    return { ...state, previous: { ...previous, frames: [...previous.frames, received] } };
  }
  // A newer socket of the group: a successor overlapping the owner.
  const current = state.successor?.socketId === socketId ? state.successor : undefined;
  const held = current?.frames ?? [];
  const frames = held.length < MAX_ASIDE ? [...held, received] : held;
  const last = state.last;
  const successor: Aside<F> = current ? { ...current, frames } : {
    socketId,
    frames,
    firstId: received.frame.lastUpdateId,
    ownerRun: last === undefined ? undefined : { id: last, count: 0, changed: false },
  };
  return tryHandover({ ...state, successor }, actions);
}

/** An owner's frame, stored or dropped as a copy. */
function ownedFrame<F extends ChainIds>(
  state: StreamHandover<F>,
  received: Received<F>,
  actions: Actions<F>,
): StreamHandover<F> {
  const before = state.last;
  const count = actions.length;
  state = acceptOwned(state, received, actions);
  const stored = recordedSince(actions, count);
  return stored ? countStored(state, before, received.frame) : state;
}

/**
 * The owner stored `frame` (the last id stored was `before`). A partial
 * book counts it for the way back to the old socket (`backToPrevious`) and
 * for a successor's place (`tryPartialHandover`).
 */
function countStored<F extends ChainIds>(
  state: StreamHandover<F>,
  before: number | undefined,
  frame: F,
): StreamHandover<F> {
  if (state.rule !== "partial") return state;
  const { previous, successor } = state;
  if (previous) {
    state = { ...state, previous: { ...previous, storedSince: (previous.storedSince ?? 0) + 1 } };
  }
  if (successor) state = { ...state, successor: countRun(successor, before, frame) };
  return state;
}

/** The owner stored `frame` while `held` waits: counts its run of a partial book's id. */
function countRun<F extends ChainIds>(
  held: Aside<F>,
  before: number | undefined,
  frame: F,
): Aside<F> {
  const id = frame.lastUpdateId;
  const run = held.ownerRun;
  if (id === undefined) return held;
  if (before === undefined || id > before) {
    return { ...held, ownerRun: { id, count: 1, changed: true } };
  }
  if (run?.id !== id) return held;
  return { ...held, ownerRun: { ...run, count: run.count + 1 } };
}

function onClosed<F extends ChainIds>(
  state: StreamHandover<F>,
  event: Extract<HandoverEvent<F>, { kind: "closed" }>,
  actions: Actions<F>,
): StreamHandover<F> {
  const { socketId, replaced } = event;
  let successor = state.successor;
  if (successor?.socketId === socketId) {
    // A successor closing before it joined: the owner carries on and is
    // expected to deliver the same; should the owner close first, what the
    // successor delivered ahead of it is all there is.
    successor = state.owner !== undefined && successor.frames.length > 0
      ? { ...successor, closed: true }
      : undefined;
  }
  const previous = state.previous?.socketId === socketId ? undefined : state.previous;
  state = { ...state, successor, previous };
  // Owned by another socket that is still running: nothing lost here.
  if (state.owner !== undefined && state.owner !== socketId) return state;
  const wasOwner = state.owner === socketId;
  // Copies still expected from it will not come.
  state = { ...state, owner: undefined, copies: undefined, copiesOfLast: undefined };
  if (wasOwner && !replaced && previous) return backToPrevious(state, previous, actions);
  if (!replaced) return closedForGood(state, event, wasOwner ? successor : undefined, actions);
  if (!wasOwner) return state;
  return closedReplaced(state, event, successor, actions);
}

/**
 * The owner closed, or no socket owned the stream, and nothing replaces it.
 * Frames a successor received ahead of the owner are kept (the chain check
 * marks a break, if any): a successor still open carries the stream on; a
 * closed one's frames are the last received, and the hole follows them.
 */
function closedForGood<F extends ChainIds>(
  state: StreamHandover<F>,
  { recvTs }: Extract<HandoverEvent<F>, { kind: "closed" }>,
  successor: Aside<F> | undefined,
  actions: Actions<F>,
): StreamHandover<F> {
  if (successor && !successor.closed) {
    actions.push({ kind: "disconnected", recvTs, replaced: true, successor: successor.socketId });
    return takeHeld(state, successor, actions);
  }
  if (successor) state = takeHeld(state, successor, actions);
  actions.push({ kind: "disconnected", recvTs, replaced: false });
  return { ...state, catchingUp: false };
}

/**
 * The owner closed and a successor of the connection carries on, before it
 * joined this stream's chain: take what it has; a break, if any, is found
 * and marked by the sequence check. A planned retirement is a rotation;
 * anything else (the old socket went stale or was cut) is a disconnect.
 */
function closedReplaced<F extends ChainIds>(
  state: StreamHandover<F>,
  { socketId, recvTs, cause }: Extract<HandoverEvent<F>, { kind: "closed" }>,
  successor: Aside<F> | undefined,
  actions: Actions<F>,
): StreamHandover<F> {
  const to = successor?.closed ? undefined : successor?.socketId;
  actions.push(
    cause === "rotated"
      ? { kind: "rotated", recvTs, from: socketId, to, last: state.last, confirmed: false }
      : { kind: "disconnected", recvTs, replaced: true, successor: to },
  );
  state = { ...state, successor: undefined };
  // The next socket to deliver continues this one: what it repeats is dropped
  // (of a partial book's last id, one: its first may be a copy, the rest not).
  if (!successor) {
    return { ...state, catchingUp: true, copiesOfLast: state.rule === "partial" ? 1 : undefined };
  }
  state = takeHeld(state, successor, actions);
  return successor.closed ? { ...state, catchingUp: true } : state;
}

/**
 * The stream is taken from what a successor held (the repeats among it were
 * dropped as they came): its frames are stored, and it owns the stream if
 * still open.
 */
function takeHeld<F extends ChainIds>(
  state: StreamHandover<F>,
  held: Aside<F>,
  actions: Actions<F>,
): StreamHandover<F> {
  state = { ...state, successor: undefined, owner: held.closed ? undefined : held.socketId };
  // A partial book's copies of what was stored, where they cannot be told apart, are dropped.
  const partial = state.rule === "partial" ? partialCopies(state, held) : undefined;
  // Ids of other rules do not repeat: a frame that is no further is a copy.
  const skip = partial?.copies ?? repeatsFirst(held, state.last);
  for (let i = 0; i < skip; i++) actions.push({ kind: "discard" });
  let stored = 0;
  for (const received of held.frames.slice(skip)) {
    const before = state.last;
    const count = actions.length;
    state = accept(state, received, actions);
    if (!recordedSince(actions, count)) continue;
    state = countStored(state, before, received.frame);
    stored++;
  }
  if (held.closed || stored > 0) return { ...state, catchingUp: false };
  // Nothing new from it yet: it may still repeat what was stored: what does
  // not pass the last id, or, with the owner's pushes of it counted, as many
  // of them as it has not delivered yet.
  const copiesOfLast = partial?.ofLast === undefined
    ? undefined
    : Math.max(0, partial.ofLast - partial.same);
  return { ...state, catchingUp: true, copiesOfLast };
}

/** The new owner died before the old socket was retired: the stream goes back to the old one. */
function backToPrevious<F extends ChainIds>(
  state: StreamHandover<F>,
  previous: Aside<F>,
  actions: Actions<F>,
): StreamHandover<F> {
  // The old socket delivers the same pushes the new owner stored since the
  // switch, in order: a partial book's are dropped by count (ids repeat).
  const partial = state.rule === "partial";
  state = {
    ...state,
    previous: undefined,
    owner: previous.socketId,
    catchingUp: !partial,
    copies: partial ? previous.storedSince : undefined,
  };
  for (const received of previous.frames) state = ownedFrame(state, received, actions);
  // A successor of the old socket may still be held: it is placed against what it has now.
  return state.successor ? tryHandover(state, actions) : state;
}

/**
 * Switches the stream to the successor once it is proven to be on the same
 * chain: it delivered a message that was already stored (a repeat: all it
 * sends next follows on), or its next message follows on from the last one
 * stored. A successor ahead of the owner waits for the owner to catch up.
 */
function tryHandover<F extends ChainIds>(
  state: StreamHandover<F>,
  actions: Actions<F>,
): StreamHandover<F> {
  if (state.rule === "partial") return tryPartialHandover(state, actions);
  const held = state.successor!;
  const skip = repeatsFirst(held, state.last);
  for (let i = 0; i < skip; i++) actions.push({ kind: "discard" });
  if (held.closed) return keepHeld(state, held, skip);
  const next = held.frames[skip] as Received<F> | undefined;
  if (skip === 0 && (!next || !joins(state, next.frame))) return state;
  return switchTo({ ...state, catchingUp: true }, held, skip, actions);
}

/**
 * A partial book or book ticker: ids skip, and repeat while the book does
 * not change, so neither a frame ahead nor one with the last id stored
 * proves where the successor is. It is placed by a change of id both
 * sockets saw since it came: the owner's pushes of the last id are counted
 * from the change to it, and the successor saw that change when its first
 * id is lower; its first as many pushes of that id are copies, and so are
 * all of lower ids. Placed, it takes the stream at once, ahead or behind
 * (what it has still to send of those copies is dropped as it comes).
 * Until then it waits, its copies of older pushes dropped as the owner
 * passes them.
 */
function tryPartialHandover<F extends ChainIds>(
  state: StreamHandover<F>,
  actions: Actions<F>,
): StreamHandover<F> {
  const held = state.successor!;
  if (state.last === undefined) return held.closed ? state : switchTo(state, held, 0, actions);
  const { older, same, copies, placed, ofLast } = partialCopies(state, held);
  for (let i = 0; i < older; i++) actions.push({ kind: "discard" });
  if (held.closed || !placed || held.frames.length === 0) return keepHeld(state, held, older);
  // Placed: exactly which of what it sends are copies is known, ahead or behind.
  for (let i = older; i < copies; i++) actions.push({ kind: "discard" });
  const behind = Math.max(0, ofLast! - same);
  return switchTo({ ...state, catchingUp: true, copiesOfLast: behind }, held, copies, actions);
}

/**
 * Where a partial book's held frames stand against the last id stored:
 * `older` frames below it, then `same` frames of it; `copies`, how many
 * from the start are copies of what was stored. `placed`: the owner's
 * pushes of the last id were counted from the change to it, which the
 * successor saw too, so the count is exact. Counted only since the
 * successor came, one more is taken (its first push may be one the owner
 * had before: exact when ids do not repeat, else one push may be lost); not
 * counted at all, every frame of the last id is taken for a copy.
 * `ofLast`: how many pushes of the last id are copies, when counted.
 */
function partialCopies<F extends ChainIds>(
  state: StreamHandover<F>,
  held: Aside<F>,
): { older: number; same: number; copies: number; placed: boolean; ofLast?: number } {
  const last = state.last ?? -Infinity;
  const ids = held.frames.map((received) => received.frame.lastUpdateId ?? Infinity);
  let older = 0;
  while (older < ids.length && ids[older] < last) older++;
  let same = 0;
  while (older + same < ids.length && ids[older + same] === last) same++;
  const run = held.ownerRun?.id === last ? held.ownerRun : undefined;
  const placed = run !== undefined && run.changed && held.firstId !== undefined &&
    held.firstId < last;
  const ofLast = run && (placed ? run.count : run.count + 1);
  return { older, same, copies: older + Math.min(ofLast ?? same, same), placed, ofLast };
}

/** A successor that does not take the stream (yet), without its first `skip` frames. */
function keepHeld<F extends ChainIds>(
  state: StreamHandover<F>,
  held: Aside<F>,
  skip: number,
): StreamHandover<F> {
  if (skip === 0) return state;
  const frames = held.frames.slice(skip);
  // A closed one with nothing left is done; an open one goes on being counted.
  if (frames.length === 0 && held.closed) return { ...state, successor: undefined };
  return { ...state, successor: { ...held, frames } };
}

/** The stream moves to the successor, with its frames after the first `skip`. */
function switchTo<F extends ChainIds>(
  state: StreamHandover<F>,
  held: Aside<F>,
  skip: number,
  actions: Actions<F>,
): StreamHandover<F> {
  const from = state.owner;
  const next = held.frames[skip] as Received<F> | undefined;
  actions.push({
    kind: "rotated",
    recvTs: next?.recvTs ?? held.frames[skip - 1].recvTs,
    from,
    to: held.socketId,
    last: state.last,
  });
  state = { ...state, owner: held.socketId, successor: undefined };
  let stored = 0;
  for (let i = skip; i < held.frames.length; i++) {
    const count = actions.length;
    state = acceptOwned(state, held.frames[i], actions);
    if (recordedSince(actions, count)) stored++;
  }
  if (from === undefined) return { ...state, previous: undefined };
  actions.push({ kind: "left", socketId: from });
  return { ...state, previous: { socketId: from, frames: [], storedSince: stored } };
}

/** Whether a successor's frame follows on from the last one stored (not for a partial book). */
function joins<F extends ChainIds>(state: StreamHandover<F>, frame: F): boolean {
  const { rule, last } = state;
  if (!rule || last === undefined || frame.firstUpdateId === undefined) return true;
  const ids = {
    firstUpdateId: frame.firstUpdateId,
    lastUpdateId: frame.lastUpdateId!,
    prevUpdateId: frame.prevUpdateId,
  };
  return continuity(rule, last, ids).kind === "next";
}

/** An owner's frame; right after a switch, repeats of what was stored are dropped. */
function acceptOwned<F extends ChainIds>(
  state: StreamHandover<F>,
  received: Received<F>,
  actions: Actions<F>,
): StreamHandover<F> {
  if (state.copies) {
    actions.push({ kind: "discard" });
    return { ...state, copies: state.copies > 1 ? state.copies - 1 : undefined };
  }
  if (state.catchingUp) {
    const { copiesOfLast } = state;
    const sameAsLast = received.frame.lastUpdateId === state.last;
    if (isRepeat(received.frame, state.last) && !(sameAsLast && copiesOfLast === 0)) {
      actions.push({ kind: "discard" });
      if (!sameAsLast || copiesOfLast === undefined) return state;
      return { ...state, copiesOfLast: copiesOfLast - 1 };
    }
    state = { ...state, catchingUp: false, copiesOfLast: undefined };
  }
  return accept(state, received, actions);
}

/** Stores a frame from the stream's owner, marking a break in its chain. */
function accept<F extends ChainIds>(
  state: StreamHandover<F>,
  received: Received<F>,
  actions: Actions<F>,
): StreamHandover<F> {
  const { frame, recvTs } = received;
  const { rule } = state;
  if (rule && frame.firstUpdateId !== undefined && frame.lastUpdateId !== undefined) {
    const verdict = continuity(rule, state.last, {
      firstUpdateId: frame.firstUpdateId,
      lastUpdateId: frame.lastUpdateId,
      prevUpdateId: frame.prevUpdateId,
    });
    if (verdict.kind === "gap") {
      actions.push({
        kind: "gap",
        expected: verdict.expected,
        received: verdict.received,
        recvTs,
      });
    }
    if (verdict.kind !== "duplicate") state = { ...state, last: frame.lastUpdateId };
    if (verdict.kind === "first" || verdict.kind === "gap") {
      actions.push({ kind: "chain-start", firstUpdateId: frame.firstUpdateId });
    }
  }
  actions.push({ kind: "record", frame, recvTs });
  return state;
}

/** Whether the actions after the first `count` end with a record (the frame was stored). */
function recordedSince<F>(actions: Actions<F>, count: number): boolean {
  return actions.length > count && actions[actions.length - 1].kind === "record";
}

/** How many of `held`'s first frames repeat what was stored (ids up to `last`). */
function repeatsFirst<F extends ChainIds>(held: Aside<F>, last: number | undefined): number {
  let count = 0;
  while (count < held.frames.length && isRepeat(held.frames[count].frame, last)) count++;
  return count;
}

function isRepeat(frame: ChainIds, last: number | undefined): boolean {
  return last !== undefined && frame.lastUpdateId !== undefined && frame.lastUpdateId <= last;
}
