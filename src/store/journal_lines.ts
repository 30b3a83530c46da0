/**
 * Reading segments of the earlier crash journal, which held every line of
 * every open batch uncompressed (`.v2.jnl`, each record after its CRC-32;
 * the oldest `.jnl`, unchecked). The journal no longer writes them, but a
 * journal left by a crash of an earlier version must still be recovered
 * after an upgrade. Records, one per line, fields separated by tabs:
 *   o <id> <key> <stream>   a batch opened
 *   l <id> <line>           an archive line
 *   s <id>                  the batch was sealed (complete)
 *   r <id>                  the batch was settled (no longer needs recovery)
 * Damage is skipped record by record: a damaged line record of a legible
 * batch becomes a hole (a `dropped` line), never a changed line.
 */

import { CHECKED_SEGMENT_SUFFIX, type JournalRecord, parseSegment } from "./journal_records.ts";
import { addHole, type LineFacts, type Pending } from "./journal_rebuild.ts";

/** What the readers of both formats gather, segment by segment. */
export interface JournalReading {
  /** Batches by `<run>/<id>`, in the order first seen. */
  readonly pending: Map<string, Pending>;
  readonly describe: (line: string) => Omit<LineFacts, "text">;
  badRecords: number;
  unattributed: number;
  readonly skipped: string[];
}

/** The batch `<run>/<id>`, added when first seen. */
export function pendingFor(reading: JournalReading, ref: string): Pending {
  let batch = reading.pending.get(ref);
  if (!batch) {
    batch = { items: [], sealed: false, settled: false };
    reading.pending.set(ref, batch);
  }
  return batch;
}

/** Adds the records of one segment of the journal of lines to `reading`. */
export function readLineSegment(reading: JournalReading, name: string, bytes: Uint8Array): void {
  const run = name.slice(0, name.indexOf("-"));
  const records = parseSegment(bytes, name.endsWith(CHECKED_SEGMENT_SUFFIX));
  for (const record of records) {
    if (record.ok) readRecord(reading, run, name, record.fields);
    else readDamage(reading, run, name, record);
  }
}

function readRecord(
  reading: JournalReading,
  run: string,
  name: string,
  fields: readonly string[],
): void {
  const [kind, id, ...rest] = fields;
  const ref = `${run}/${id}`;
  if (kind === "o" && rest.length === 2) {
    const batch = pendingFor(reading, ref);
    batch.key = rest[0];
    batch.stream = rest[1];
  } else if (kind === "l" && rest.length >= 1) {
    const batch = pendingFor(reading, ref);
    const line = rest.join("\t");
    try {
      batch.items.push({ text: line, ...reading.describe(line) });
    } catch {
      // Intact but unreadable (an old unchecked segment's damage): a hole, not a changed line.
      reading.badRecords++;
      reading.skipped.push(`${name} (a line that is not an archive line)`);
      addHole(batch);
    }
  } else if (kind === "s" && id !== undefined) pendingFor(reading, ref).sealed = true;
  else if (kind === "r" && id !== undefined) pendingFor(reading, ref).settled = true;
  else reading.badRecords++;
}

function readDamage(
  reading: JournalReading,
  run: string,
  name: string,
  record: Extract<JournalRecord, { ok: false }>,
): void {
  reading.badRecords++;
  reading.skipped.push(`${name}:${record.line} (${record.why})`);
  if (record.kind === "l" && record.id !== undefined) {
    addHole(pendingFor(reading, `${run}/${record.id}`));
  } else if (record.kind === undefined) reading.unattributed++;
}
