/**
 * The depth payloads `book` reads, checked before use: a line that does not
 * have the shape Binance documents (BINANCE.md "Payloads") is reported as
 * damage instead of being half applied. Pure.
 */

import type { DepthDiff, DepthSnapshot } from "./rebuild.ts";
import type { Level } from "./side.ts";

function levels(value: unknown): Level[] | undefined {
  if (!Array.isArray(value)) return undefined;
  for (const level of value) {
    // Prices order the book, so they must be numbers; a quantity is kept as written (a
    // wrong one shows at the next snapshot check).
    if (
      !Array.isArray(level) || typeof level[0] !== "string" || typeof level[1] !== "string" ||
      !Number.isFinite(Number(level[0]))
    ) return undefined;
  }
  return value as Level[];
}

const isId = (value: unknown): value is number => Number.isSafeInteger(value);

/** A diff `{U, u, [pu], b, a}`, or undefined. */
export function depthDiffOf(data: unknown): DepthDiff | undefined {
  if (typeof data !== "object" || data === null) return undefined;
  const d = data as Record<string, unknown>;
  const b = levels(d.b);
  const a = levels(d.a);
  if (!isId(d.U) || !isId(d.u) || !b || !a) return undefined;
  if (d.pu !== undefined && !isId(d.pu)) return undefined;
  return { U: d.U, u: d.u, ...(d.pu === undefined ? {} : { pu: d.pu }), b, a };
}

/**
 * A REST snapshot or a partial book: spot `{lastUpdateId, bids, asks}`,
 * USD-M partial books `{u, b, a, …}`; or undefined.
 */
export function depthBookOf(data: unknown): DepthSnapshot | undefined {
  if (typeof data !== "object" || data === null) return undefined;
  const d = data as Record<string, unknown>;
  const id = d.lastUpdateId ?? d.u;
  const bids = levels(d.bids ?? d.b);
  const asks = levels(d.asks ?? d.a);
  if (!isId(id) || !bids || !asks) return undefined;
  return { lastUpdateId: id, bids, asks };
}
