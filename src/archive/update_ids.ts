/**
 * The update ids a stored (or received) Binance payload carries: what the
 * archive's chain of messages is checked and counted by (meta.ts
 * `firstUpdateId`/`lastUpdateId`, verify's audit, the journal's recovery).
 * Pure. Lives with the archive format, below `binance/`, so that every
 * reader of the archive can use it.
 */

/** The ids a payload carries: depth (diff or partial), trade, aggTrade, book ticker. */
export function updateIds(
  data: Record<string, unknown>,
): { firstUpdateId?: number; lastUpdateId?: number; prevUpdateId?: number } {
  if (typeof data.U === "number" && typeof data.u === "number") {
    return {
      firstUpdateId: data.U,
      lastUpdateId: data.u,
      ...(typeof data.pu === "number" ? { prevUpdateId: data.pu } : {}),
    };
  }
  if (typeof data.lastUpdateId === "number") {
    return { firstUpdateId: data.lastUpdateId, lastUpdateId: data.lastUpdateId };
  }
  // Trades (`t`), aggregate trades (`a`), book ticker (`u`): one id per message.
  const id = data.e === "trade"
    ? data.t
    : data.e === "aggTrade"
    ? data.a
    : (data.e === undefined || data.e === "bookTicker") && data.U === undefined
    ? data.u
    : undefined;
  return typeof id === "number" ? { firstUpdateId: id, lastUpdateId: id } : {};
}
