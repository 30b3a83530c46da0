/**
 * Reads a V8 `.cpuprofile` (what `deno run --cpu-prof` writes) and sums
 * self time per function and per source file, so the report can say where
 * the collector's main thread spends its time.
 */

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTime {
  readonly name: string;
  readonly ms: number;
  /** Share of the busy (non-idle) time, 0..1. */
  readonly share: number;
}

export interface ProfileSummary {
  readonly busyMs: number;
  readonly idleMs: number;
  readonly functions: readonly SelfTime[];
  readonly files: readonly SelfTime[];
}

export async function summarizeProfile(path: string, top = 15): Promise<ProfileSummary> {
  const profile = JSON.parse(await Deno.readTextFile(path)) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parentOf = new Map<number, ProfileNode>();
  for (const node of profile.nodes) {
    for (const child of node.children ?? []) parentOf.set(child, node);
  }
  /** The nearest caller in our code or a package: who asked for a native or runtime function. */
  const ownCaller = (id: number) => {
    for (let node = parentOf.get(id); node; node = parentOf.get(node.id)) {
      if (node.callFrame.url.startsWith("file://")) return node.callFrame;
    }
    return undefined;
  };
  const perFunction = new Map<string, number>();
  const perFile = new Map<string, number>();
  let idleUs = 0;
  let busyUs = 0;
  profile.samples.forEach((id, i) => {
    const us = profile.timeDeltas[i] ?? 0;
    const frame = byId.get(id)?.callFrame;
    if (!frame || frame.functionName === "(idle)") {
      idleUs += us;
      return;
    }
    busyUs += us;
    const file = shortUrl(frame.url);
    let name = describe(frame);
    if (!frame.url.startsWith("file://")) {
      // Else the runtime's own caller (e.g. node:zlib's chunk loop, run from a callback).
      const caller = ownCaller(id) ?? parentOf.get(id)?.callFrame;
      if (caller && caller.functionName !== "(root)") name += ` ← ${describe(caller)}`;
    }
    perFunction.set(name, (perFunction.get(name) ?? 0) + us);
    const group = file || shortName(frame.functionName);
    perFile.set(group, (perFile.get(group) ?? 0) + us);
  });
  const rank = (map: Map<string, number>) =>
    [...map].sort((a, b) => b[1] - a[1]).slice(0, top).map(([name, us]) => ({
      name,
      ms: us / 1000,
      share: busyUs > 0 ? us / busyUs : 0,
    }));
  return {
    busyMs: busyUs / 1000,
    idleMs: idleUs / 1000,
    functions: rank(perFunction),
    files: rank(perFile),
  };
}

function describe(frame: ProfileNode["callFrame"]): string {
  const file = shortUrl(frame.url);
  return `${shortName(frame.functionName)}${file ? ` ${file}:${frame.lineNumber + 1}` : ""}`;
}

/** V8 names a compiled RegExp by its whole source: too long, and its `|` would split a table cell. */
function shortName(name: string): string {
  if (name === "") return "(anonymous)";
  return name.startsWith("RegExp: ") && name.length > 40 ? `${name.slice(0, 40)}…` : name;
}

/** `file:///…/src/x.ts` → `src/x.ts`; npm cache paths → `npm:pkg/…`; `ext:` kept. */
function shortUrl(url: string): string {
  if (url === "") return "";
  const npm = /\/npm\/[^/]+\/((?:@[^/]+\/)?[^/]+)\/[^/]+\/(.*)$/.exec(url);
  if (npm) return `npm:${npm[1]}/${npm[2]}`;
  const local = /\/(src|bench|tests)\/(.*)$/.exec(url);
  if (local) return `${local[1]}/${local[2]}`;
  return url;
}
