/**
 * Reads back what the collector stored and counts it: data lines per stream
 * (and how many distinct update ids, so a duplicate shows), event lines,
 * bytes, and for every data line its receive-to-stored latency (the object
 * file's mtime minus the line's recv_ts). Reads the local archive
 * (DATA_DIR/archive), the S3 spool (DATA_DIR/spool, checked files) and
 * what a local s3rver stored.
 */

import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { decodeSpoolFile } from "../src/store/spool.ts";

export interface ArchiveCount {
  /** Objects in the local archive. */
  readonly objects: number;
  /** Batches waiting in the spool (S3 runs). */
  readonly spooled: number;
  readonly gzipBytes: number;
  /**
   * What the local archive's objects and their `.meta.json` sidecars take on
   * disk in whole blocks (`st_blocks`), the unit the kernel writes them in;
   * 0 when nothing is in the local archive (a run with a local archive has
   * no spool and no S3, so it then holds every line counted).
   */
  readonly storedBlockBytes: number;
  /** Data lines per stream. */
  readonly perStream: Map<string, number>;
  /** Data lines whose update id was already seen in the same stream. */
  readonly duplicates: number;
  readonly dataLines: number;
  readonly eventLines: number;
  /** Data lines received within [fromUs, toUs), and their frames' bytes. */
  readonly windowLines: number;
  readonly windowFrameBytes: number;
  /** Receive-to-stored latency of every data line, ms, sorted. */
  readonly latenciesMs: Float64Array;
  /**
   * Per object, seconds from its first line's receive time to its last's,
   * sorted; not counting each stream's last object, which the shutdown seals
   * (so the spans say how long batches lasted while the collector ran).
   */
  readonly objectSpansS: Float64Array;
}

const HEAD = '{"recv_ts":';
const STREAM = ',"stream":"';
const DATA = ',"data":';
const UPDATE_ID = ',"data":{"lastUpdateId":';

/**
 * Counts DATA_DIR/archive/** and DATA_DIR/spool/*.spool together, and the
 * objects an s3rver stored under `s3Dir` (as `<key>._S3rver_object`).
 */
export async function countArchive(
  dataDir: string,
  window: { fromUs: number; toUs: number },
  s3Dir?: string,
): Promise<ArchiveCount> {
  const decoder = new TextDecoder();
  const perStream = new Map<string, number>();
  const ids = new Map<string, Set<number>>();
  let objects = 0, spooled = 0, gzipBytes = 0, duplicates = 0, dataLines = 0, eventLines = 0;
  let windowLines = 0, windowFrameBytes = 0, storedBlockBytes = 0;
  let latencies = new Float64Array(1 << 16);
  /** Per stream (the key up to its date partition): each object's first receive time and span. */
  const spans = new Map<string, Array<{ firstUs: number; span: number }>>();

  const files = [
    ...await filesEndingIn(join(dataDir, "archive"), ".ndjson.gz"),
    ...await filesEndingIn(join(dataDir, "spool"), ".spool"),
    ...(s3Dir ? await filesEndingIn(s3Dir, ".ndjson.gz._S3rver_object") : []),
  ];
  for (const path of files) {
    const raw = await Deno.readFile(path);
    const bytes = path.endsWith(".spool") ? decodeSpoolFile(raw, path).body : raw;
    const info = await Deno.stat(path);
    const storedMs = info.mtime!.getTime();
    if (path.endsWith(".spool")) spooled++;
    else objects++;
    if (path.endsWith(".ndjson.gz")) {
      storedBlockBytes += blockBytes(info) + await sidecarBlockBytes(path);
    }
    gzipBytes += bytes.length;
    let firstUs = Infinity;
    let lastUs = -Infinity;
    for (const line of decoder.decode(gunzipSync(bytes)).split("\n")) {
      if (!line.startsWith(HEAD)) continue;
      const comma = line.indexOf(",", HEAD.length);
      const recvTs = Number(line.slice(HEAD.length, comma));
      firstUs = Math.min(firstUs, recvTs);
      lastUs = Math.max(lastUs, recvTs);
      const nameStart = comma + STREAM.length;
      const nameEnd = line.indexOf('"', nameStart);
      if (!line.startsWith(DATA, nameEnd + 1)) {
        eventLines++;
        continue;
      }
      const stream = line.slice(nameStart, nameEnd);
      if (dataLines === latencies.length) {
        const grown = new Float64Array(latencies.length * 2);
        grown.set(latencies);
        latencies = grown;
      }
      latencies[dataLines++] = storedMs - recvTs / 1000;
      perStream.set(stream, (perStream.get(stream) ?? 0) + 1);
      if (line.startsWith(UPDATE_ID, nameEnd + 1)) {
        const idStart = nameEnd + 1 + UPDATE_ID.length;
        const id = Number(line.slice(idStart, line.indexOf(",", idStart)));
        let seen = ids.get(stream);
        if (!seen) ids.set(stream, seen = new Set());
        if (seen.has(id)) duplicates++;
        else seen.add(id);
      }
      if (recvTs >= window.fromUs && recvTs < window.toUs) {
        windowLines++;
        // The frame was `{"stream":…,"data":…}`: the line minus `"recv_ts":<n>,`.
        windowFrameBytes += line.length - comma;
      }
    }
    if (lastUs >= firstUs) {
      const stream = path.split("/date=")[0];
      let objects = spans.get(stream);
      if (!objects) spans.set(stream, objects = []);
      objects.push({ firstUs, span: (lastUs - firstUs) / 1e6 });
    }
  }
  return {
    objects,
    spooled,
    gzipBytes,
    storedBlockBytes,
    perStream,
    duplicates,
    dataLines,
    eventLines,
    windowLines,
    windowFrameBytes,
    latenciesMs: latencies.slice(0, dataLines).sort(),
    objectSpansS: Float64Array.from(spansButLast(spans)).sort(),
  };
}

/** The bytes of the blocks a file takes on disk (its size where the system gives no block count). */
function blockBytes(info: Deno.FileInfo): number {
  return info.blocks === null ? info.size : info.blocks * 512;
}

/** The blocks of an object's `.meta.json` sidecar, 0 when it has none. */
async function sidecarBlockBytes(objectPath: string): Promise<number> {
  try {
    return blockBytes(await Deno.stat(`${objectPath}.meta.json`));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return 0;
    throw error;
  }
}

/** The spans of every stream's objects but its last (the one the shutdown sealed). */
function spansButLast(byStream: Map<string, Array<{ firstUs: number; span: number }>>): number[] {
  const out: number[] = [];
  for (const objects of byStream.values()) {
    objects.sort((a, b) => a.firstUs - b.firstUs);
    for (const { span } of objects.slice(0, -1)) out.push(span);
  }
  return out;
}

/** The value below which `p` (0..1) of the sorted values lie. */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

/** Files under `dir` named `*<suffix>` (so sidecars, temporary and quarantined files are left out). */
async function filesEndingIn(dir: string, suffix: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (sub: string) => {
    for await (const entry of Deno.readDir(sub)) {
      const path = join(sub, entry.name);
      if (entry.isDirectory && entry.name !== "quarantine") await walk(path);
      else if (entry.isFile && entry.name.endsWith(suffix)) found.push(path);
    }
  };
  try {
    await walk(dir);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return found.sort();
}
