/**
 * `SHARD=k/N`: which instance records which symbol. Pure.
 *
 * Rendezvous (highest-random-weight) hashing: every shard scores every
 * symbol with a stable hash of (symbol, shard); the highest score wins. Going
 * from N to N+1 shards moves a symbol only when the new shard outscores all
 * others for it, which happens for about 1/(N+1) of the symbols; nothing
 * moves between the old shards. The hash is fixed here (FNV-1a over the
 * symbol's UTF-8 bytes, then murmur3's finaliser) and must never change: every
 * host of a deployment, whatever its version, has to agree on it.
 */

export interface Shard {
  /** 0-based index of this instance. */
  readonly index: number;
  /** Number of instances sharing the market. */
  readonly count: number;
}

/** The whole market on one instance. */
export const NO_SHARD: Shard = Object.freeze({ index: 0, count: 1 });

const encoder = new TextEncoder();

/** FNV-1a (32 bit) of `bytes`, seeded by `seed`, mixed by murmur3's fmix32. */
function score(bytes: Uint8Array, seed: number): number {
  let h = 0x811c9dc5 ^ Math.imul(seed + 1, 0x9e3779b1);
  for (const byte of bytes) h = Math.imul(h ^ byte, 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The shard (0 … count-1) that records `symbol` when the market is split `count` ways. */
export function shardOf(symbol: string, count: number): number {
  if (count <= 1) return 0;
  const bytes = encoder.encode(symbol.toUpperCase());
  let best = 0;
  let bestScore = -1;
  for (let i = 0; i < count; i++) {
    const s = score(bytes, i);
    // Ties (rare) go to the lower index, so every host decides alike.
    if (s > bestScore) {
      best = i;
      bestScore = s;
    }
  }
  return best;
}

/** Whether this instance records `symbol`. */
export function inShard(symbol: string, shard: Shard): boolean {
  return shard.count <= 1 || shardOf(symbol, shard.count) === shard.index;
}

/** Parses `k/N` (0 ≤ k < N ≤ 1024); undefined when it is not one. */
export function parseShard(text: string): Shard | undefined {
  const match = /^(\d{1,4})\s*\/\s*(\d{1,4})$/.exec(text.trim());
  if (!match) return undefined;
  const index = Number(match[1]);
  const count = Number(match[2]);
  if (count < 1 || count > 1024 || index >= count) return undefined;
  return Object.freeze({ index, count });
}
