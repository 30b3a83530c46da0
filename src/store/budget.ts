/**
 * How batches share memory with a local archive (no spool to overflow into):
 * open batches have a budget of 4 × `UPLOAD_QUEUE_MAX_BYTES`, and the upload
 * queue may borrow what they leave unused, so that batches sealing together
 * (every stream at its batch age, or all at shutdown) move from one budget to
 * the other instead of being dropped. Both count what a batch holds in memory
 * (`GzipBody.heldBytes`: text not yet compressed, plus compressed pieces the
 * crash journal has not yet written to the batch's file), and a batch moves
 * to the queue at what it was counted at when it sealed, so a sealed batch
 * always fits the room it left. Not counted: the unused end of each open
 * batch's last chunk (at most a chunk per open batch). Pure.
 *
 * Invariant: open + queued ≤ 5 × the queue bound (6 × while a stalled sink
 * keeps the queue full: open batches always keep one queue's worth, or they
 * would shrink to a line each). A batch sealed early because the line just
 * added took open batches over their bound must still fit the queue: early
 * seals leave `headroom` of the bound unused for that line (a line is far
 * smaller than 1 MB; Binance's largest, a 1,000-level snapshot, is ~60 KB).
 */
export interface BatchBudget {
  /** The bound on open batches, given what the queue has borrowed. */
  openBound(borrowed: number): number;
  /** What the queue may borrow, given the text open batches hold. */
  lendable(openText: number): number;
}

export function batchBudget(queueMaxBytes: number): BatchBudget {
  const openBudget = 4 * queueMaxBytes;
  const headroom = Math.min(1024 * 1024, queueMaxBytes / 4);
  return {
    // What the queue borrowed is not the open batches' to use again until it is paid back.
    openBound: (borrowed) => Math.max(queueMaxBytes, openBudget - borrowed) - headroom,
    lendable: (openText) => Math.max(0, openBudget - openText),
  };
}
