/**
 * Rounds of the 20,000 msg/s load. The collector and its peers are compared
 * by their CPU per message, and one run of each moves from run to run by
 * more than the margin the target asks for (the machine's speed drifts over
 * minutes). So the bench runs the four clients several times, interleaved and
 * in a rotated order, and compares them round by round: the clients of one
 * round ran minutes apart at most, and a drift that slows a whole round
 * slows all four.
 */

import type { ClientKind, LoadResult } from "./load_run.ts";

/** The order of the clients in round `round` (0-based): rotated by one each round. */
export function roundOrder<T>(clients: readonly T[], round: number): T[] {
  const shift = round % clients.length;
  return [...clients.slice(shift), ...clients.slice(0, shift)];
}

/**
 * One row for a client's runs: the figures of its median run by CPU per
 * message, with the messages sent, kept, lost and duplicated summed over all
 * rounds (a loss in any round shows) and the highest peak RSS of any round.
 */
export function combineRounds(runs: readonly LoadResult[]): LoadResult {
  if (runs.length === 0) throw new Error("combineRounds: no runs");
  const byCpu = [...runs].sort((a, b) => a.cpuSecPerMillion - b.cpuSecPerMillion);
  const median = byCpu[Math.floor((byCpu.length - 1) / 2)];
  const sum = (pick: (r: LoadResult) => number) => runs.reduce((n, r) => n + pick(r), 0);
  const roundCpu = runs.map((r) => r.cpuSecPerMillion);
  return {
    ...median,
    sent: sum((r) => r.sent),
    kept: sum((r) => r.kept),
    missing: sum((r) => r.missing),
    extra: sum((r) => r.extra),
    peakRssBytes: Math.max(...runs.map((r) => r.peakRssBytes)),
    roundCpu,
    notes: runs.length > 1
      ? [
        `${runs.length} rounds, CPU s/M ${
          roundCpu.map((c) => c.toFixed(1)).join(" / ")
        } (the median round's figures shown; messages summed, peak RSS the highest)`,
        ...median.notes,
      ]
      : median.notes,
  };
}

/** Per round, the best peer's CPU per message over the collector's; undefined without rounds. */
export function peerFactors(
  collector: LoadResult,
  peers: readonly LoadResult[],
): { readonly perRound: readonly number[]; readonly median: number } | undefined {
  const own = collector.roundCpu;
  const theirs = peers.map((p) => p.roundCpu ?? []);
  if (!own || own.length < 2 || theirs.some((t) => t.length !== own.length)) return undefined;
  const perRound = own.map((c, i) => Math.min(...theirs.map((t) => t[i])) / c);
  const sorted = [...perRound].sort((a, b) => a - b);
  const mid = sorted.length / 2;
  const median = sorted.length % 2 === 1
    ? sorted[Math.floor(mid)]
    : (sorted[mid - 1] + sorted[mid]) / 2;
  return { perRound, median };
}

/** Runs `clients` for `rounds` rounds in rotated order, then combines each client's runs. */
export async function runRounds(
  clients: readonly ClientKind[],
  rounds: number,
  run: (client: ClientKind, round: number) => Promise<LoadResult>,
): Promise<LoadResult[]> {
  const runs = new Map<ClientKind, LoadResult[]>(clients.map((c) => [c, []]));
  for (let round = 0; round < rounds; round++) {
    for (const client of roundOrder(clients, round)) {
      runs.get(client)!.push(await run(client, round));
    }
  }
  return clients.map((c) => combineRounds(runs.get(c)!));
}
