/**
 * Turning what crash recovery read from the journal (journal_lines.ts) back
 * into sealed batches:
 *
 * - a settled batch is skipped; a sealed one comes back with its lines; one
 *   still open gets a `recovered` event line at its end;
 * - each run of lines lost to damage becomes one `dropped` line (reason
 *   "journal damage", with the count), never a changed line;
 * - a batch whose open record is damaged is rebuilt under the key `rekey`
 *   gives it (from its lines), or lost, counted and logged without one;
 * - deterministic: the same journal gives the same objects under the same
 *   keys (event lines are stamped with the last known receive time, not now).
 */

import { getLogger } from "@logtape/logtape";
import type { SealedBatch } from "../batch/batcher.ts";
import { type Deflater, GzipBody } from "../batch/body.ts";
import type { ChunkPool } from "../batch/chunks.ts";
import type { LineFacts as ArchiveLineFacts } from "../archive/decode.ts";
import { droppedLine, eventLine } from "../archive/encode.ts";
import { parseKey } from "../archive/keys.ts";

const log = getLogger(["l2", "journal"]);

/** A journal line and its facts (archive/decode.ts `lineFactsOf`, which recovery reads it with). */
export interface LineFacts extends Omit<ArchiveLineFacts, "isSnapshot" | "prevUpdateId"> {
  readonly text: string;
  readonly isSnapshot?: boolean;
}

/** A run of lines (or records that held lines) lost to damage inside a batch. */
export interface Hole {
  readonly hole: true;
  records: number;
}

/** One batch as read from the journal, before it is rebuilt. */
export interface Pending {
  /** Absent when the batch's open record was damaged. */
  key?: string;
  stream?: string;
  readonly items: Array<LineFacts | Hole>;
  sealed: boolean;
  settled: boolean;
}

export interface RebuildOptions {
  readonly pool: ChunkPool;
  readonly deflater: Deflater;
  /** Key and stream for a batch whose open record is damaged (see `recoverJournal`). */
  readonly rekey?: (
    lines: readonly string[],
    index: number,
  ) => { key: string; stream: string } | undefined;
}

/** Adds one lost line or record to the end of `batch`, joining a hole already there. */
export function addHole(batch: Pending, count = 1): void {
  const last = batch.items[batch.items.length - 1];
  if (last && "hole" in last) last.records += count;
  else batch.items.push({ hole: true, records: count });
}

/**
 * The sealed batches for `pending`, in order; `unattributed` counts what
 * was lost with no batch to mark it in.
 */
export function rebuildBatches(
  pending: Iterable<Pending>,
  options: RebuildOptions,
): { batches: SealedBatch[]; unattributed: number } {
  const batches: SealedBatch[] = [];
  let unattributed = 0;
  let rekeyed = 0;
  for (const batch of pending) {
    if (batch.settled) continue;
    const kept = batch.items.filter((item): item is LineFacts => !("hole" in item));
    const damaged = batch.items.reduce((n, item) => n + ("hole" in item ? item.records : 0), 0);
    const rebuilt = batch.key === undefined || batch.stream === undefined;
    // No line left: with its key (and the time in it) the loss is still marked, as one
    // `dropped` line at the key's time; without, it is only counted.
    const keyTs = rebuilt ? undefined : parseKey(batch.key!)?.firstRecvTs;
    if (kept.length === 0 && (damaged === 0 || keyTs === undefined)) {
      unattributed += damaged;
      continue;
    }
    const named = rebuilt
      ? options.rekey?.(kept.map((l) => l.text), rekeyed++)
      : { key: batch.key!, stream: batch.stream! };
    if (!named) {
      log.error(
        "Lost {lines} journal lines of a batch whose open record is damaged: no key for them",
        { lines: kept.length },
      );
      unattributed += kept.length + damaged;
      continue;
    }
    const lines = damaged === 0
      ? [...kept]
      : fillHoles(batch.items, named.stream, keyTs ?? parseKey(named.key)?.firstRecvTs);
    // A batch left with no line gets one too, sealed or not: its `dropped` line covers an
    // instant, and the silence after it is what the `recovered` line explains.
    if (!batch.sealed || rebuilt || kept.length === 0) {
      lines.push(recoveredLine(lines, named.stream, rebuilt, damaged));
    }
    batches.push(sealedFromLines(named.key, named.stream, lines, options));
  }
  return { batches, unattributed };
}

/** The `recovered` line that ends a batch rebuilt without its seal (or its open record). */
function recoveredLine(
  lines: readonly LineFacts[],
  stream: string,
  rebuilt: boolean,
  damaged: number,
): LineFacts {
  // Stamped with the last known receive time, not "now", so recovering
  // the same journal twice writes identical objects.
  const last = lines[lines.length - 1];
  const details: Record<string, unknown> = {
    reason: rebuilt
      ? "the previous run's journal lost this batch's open record; rebuilt under a new key"
      : "the previous run stopped without sealing this batch; lines after this point were lost",
    lines: lines.length,
  };
  if (damaged > 0) details.damaged_records = damaged;
  const text = eventLine(last.recvTs, stream, "recovered", details);
  return { text, recvTs: last.recvTs, isData: false };
}

/**
 * A batch's lines with each run of damaged records replaced by one
 * `dropped` line, timed between its neighbours (the lost lines' own times
 * are unknown: they lie within the bounds given). A run at the start is
 * timed at the key's time (`keyTs`, its first line's, which was lost), so
 * the object still starts when its key says.
 */
function fillHoles(
  items: ReadonlyArray<LineFacts | Hole>,
  stream: string,
  keyTs: number | undefined,
): LineFacts[] {
  const out: LineFacts[] = [];
  items.forEach((item, index) => {
    if (!("hole" in item)) {
      out.push(item);
      return;
    }
    const before = out[out.length - 1]?.recvTs ?? (index === 0 ? keyTs : undefined);
    const after = items.slice(index + 1).find((i): i is LineFacts => !("hole" in i))?.recvTs;
    const recvTs = before ?? after!;
    const text = droppedLine(recvTs, stream, {
      reason: "journal damage",
      messages: item.records,
      firstRecvTs: before ?? after!,
      lastRecvTs: after ?? before!,
    });
    out.push({ text, recvTs, isData: false });
  });
  return out;
}

function sealedFromLines(
  key: string,
  stream: string,
  lines: readonly LineFacts[],
  text: { pool: ChunkPool; deflater: Deflater },
): SealedBatch {
  let messages = 0;
  let snapshots = 0;
  let firstUpdateId: number | undefined;
  let lastUpdateId: number | undefined;
  for (const line of lines) {
    if (line.isSnapshot) snapshots++;
    else if (line.isData) messages++;
    if (line.firstUpdateId !== undefined) firstUpdateId ??= line.firstUpdateId;
    if (line.lastUpdateId !== undefined) lastUpdateId = line.lastUpdateId;
  }
  const body = new GzipBody(text);
  for (const line of lines) body.appendLine(line.text);
  return {
    key,
    stream,
    body,
    textBytes: body.byteLength,
    heldBytes: body.heldBytes,
    recovered: true,
    meta: {
      messages,
      snapshots,
      events: lines.length - messages - snapshots,
      firstRecvTs: lines[0].recvTs,
      lastRecvTs: lines.reduce((max, l) => Math.max(max, l.recvTs), 0),
      firstUpdateId,
      lastUpdateId,
    },
  };
}
