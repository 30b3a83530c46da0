/**
 * Read access to the archive for `verify`: list keys, walk the partition
 * directories one level at a time, and stream one object's bytes. The local
 * implementation is here; the S3 one is in s3_reader.ts (it needs the SDK).
 *
 * Keys use `/` whatever the platform. Only final objects (`*.ndjson.gz`) are
 * listed: the local sink's sidecars (`.meta.json`) and temporary files
 * (`.tmp-…`) are never objects of the archive; a sidecar is read with its
 * object, as the object's metadata.
 */

import { basename, join } from "node:path";
import { OBJECT_SUFFIX } from "../archive/keys.ts";
import { TEMP_MARKER } from "../store/local.ts";

/** One object as read: its stored bytes, and the metadata stored with it. */
export interface StoredObject {
  /** The stored (still compressed) bytes, streamed. */
  readonly body: ReadableStream<Uint8Array<ArrayBuffer>>;
  /**
   * S3 user metadata (from the same GetObject response), or the fields of the
   * local sidecar `<key>.meta.json`; undefined when there is none.
   */
  readonly meta?: Readonly<Record<string, unknown>>;
  /** Why stored metadata could not be read (a sidecar that is not a JSON object). */
  readonly metaError?: string;
  /**
   * What tells this version of the object from another under the same key:
   * S3's ETag; for a local file its device, inode, size and modification
   * time. A read resumed after a break must find the same.
   */
  readonly version?: string;
  /** The whole object's size in bytes, when the store says (even for a read from an offset). */
  readonly size?: number;
}

/** Where a read after a broken one starts, and which version of the object it must find. */
export interface ReadFrom {
  /** Bytes already read: the read starts there. */
  readonly offset: number;
  /** The version the first read found (S3 answers 412 when it is another). */
  readonly version: string;
}

/** One entry one level below a prefix: a sub-prefix (ends with `/`) or an object key. */
export type ArchiveEntry = { readonly prefix: string } | { readonly key: string };

export interface ArchiveReader {
  /** Where the archive is, for people: a directory or `s3://bucket/prefix`. */
  readonly location: string;
  /** Every object key starting with `prefix`, in any order. */
  list(prefix: string): AsyncIterable<string>;
  /**
   * The sub-prefixes and objects directly below `prefix` (`""` or ending with
   * `/`), in any order: lets `verify` read only the partitions it needs.
   */
  children(prefix: string): AsyncIterable<ArchiveEntry>;
  /**
   * The object's stored bytes, streamed, and its metadata; with `from`, the
   * bytes from `from.offset` on (a read resumed after its body broke).
   */
  read(key: string, from?: ReadFrom): Promise<StoredObject>;
  close(): void;
}

/** Whether a listed name is a final archive object (not a sidecar or a temporary file). */
export function isObjectKey(key: string): boolean {
  return key.endsWith(OBJECT_SUFFIX) && !key.includes(TEMP_MARKER);
}

/** The archive under `DATA_DIR/archive`, as the local sink writes it. */
export function localArchiveReader(root: string): ArchiveReader {
  const pathOf = (key: string) => join(root, ...key.split("/").filter((part) => part !== ""));

  async function* walk(dir: string): AsyncGenerator<string> {
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(pathOf(dir)));
    } catch (error) {
      if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory) {
        return;
      }
      throw error;
    }
    for (const entry of entries) {
      const key = `${dir}${entry.name}`;
      if (entry.isDirectory) yield* walk(`${key}/`);
      else if (entry.isFile && isObjectKey(key)) yield key;
    }
  }

  return {
    location: root,
    async *list(prefix: string) {
      // Walk the deepest directory the prefix names, then match the rest by text.
      const dir = prefix.slice(0, prefix.lastIndexOf("/") + 1);
      for await (const key of walk(dir)) if (key.startsWith(prefix)) yield key;
    },
    async *children(prefix: string) {
      let entries: Deno.DirEntry[];
      try {
        entries = await Array.fromAsync(Deno.readDir(pathOf(prefix)));
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) return;
        throw error;
      }
      for (const entry of entries) {
        if (entry.isDirectory) yield { prefix: `${prefix}${entry.name}/` };
        else if (entry.isFile && isObjectKey(`${prefix}${entry.name}`)) {
          yield { key: `${prefix}${entry.name}` };
        }
      }
    },
    async read(key: string, from?: ReadFrom) {
      if (from) return await openFrom(pathOf(key), from.offset);
      // The sidecar is read beside the object, not after it: no extra wait per object.
      const [opened, meta] = await Promise.all([
        openFrom(pathOf(key), 0),
        readSidecar(`${pathOf(key)}.meta.json`),
      ]);
      return { ...opened, ...meta };
    },
    close() {},
  };
}

/**
 * The file's bytes from `offset` on, its size and its version: a file
 * written under the key meanwhile (the sink renames a new file over a name)
 * has another inode.
 */
async function openFrom(path: string, offset: number) {
  const file = await Deno.open(path, { read: true });
  try {
    const info = await file.stat();
    if (offset > 0) await file.seek(offset, Deno.SeekMode.Start);
    const version = `${info.dev}:${info.ino}:${info.size}:${info.mtime?.getTime()}`;
    return { body: file.readable, size: info.size, version };
  } catch (error) {
    file.close();
    throw error;
  }
}

/** A local object's sidecar, as `StoredObject` fields; none when it does not exist. */
async function readSidecar(path: string): Promise<Pick<StoredObject, "meta" | "metaError">> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return {};
    return { metaError: `its sidecar cannot be read: ${(error as Error).message}` };
  }
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value === "object" && value !== null && !Array.isArray(value)) {
      return { meta: value as Record<string, unknown> };
    }
  } catch {
    // Reported below, as any sidecar that is not a JSON object.
  }
  return { metaError: `its sidecar ${basename(path)} is not JSON object text` };
}
