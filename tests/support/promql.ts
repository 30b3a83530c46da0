/**
 * Just enough PromQL reading for tests: the metric names an expression
 * selects, and the expressions of a Grafana dashboard and a rules file.
 */

const KEYWORDS = new Set([
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "bool",
  "and",
  "or",
  "unless",
  "offset",
  "inf",
  "nan",
]);

/**
 * Metric names selected by `expr`: identifiers that are not functions
 * (followed by `(`), keywords, label names (inside `{}` or a `by (...)`
 * list), strings or durations.
 */
export function metricNames(expr: string): Set<string> {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""') // strings
    .replace(/\{[^}]*\}/g, " ") // label matchers
    .replace(/\[[^\]]*\]/g, " ") // ranges
    .replace(/\boffset\s+-?[0-9a-z]+/gi, " ") // offsets
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " "); // label lists
  const names = new Set<string>();
  // Not inside a number (1e3, 0x1f) or another word.
  for (const m of bare.matchAll(/(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*(?=\s*(\(?))/g)) {
    if (m[1] === "(") continue; // a function
    if (KEYWORDS.has(m[0].toLowerCase())) continue;
    names.add(m[0]);
  }
  return names;
}

/** Every `targets[].expr` of a Grafana dashboard (rows' nested panels included). */
export function dashboardExpressions(dashboard: unknown): string[] {
  const found: string[] = [];
  const walk = (value: unknown): void => {
    if (Array.isArray(value)) value.forEach(walk);
    else if (value && typeof value === "object") {
      const record = value as Record<string, unknown>;
      if (Array.isArray(record.targets)) {
        for (const t of record.targets as Record<string, unknown>[]) {
          if (typeof t.expr === "string") found.push(t.expr);
        }
      }
      for (const [key, child] of Object.entries(record)) if (key !== "targets") walk(child);
    }
  };
  walk(dashboard);
  return found;
}

/**
 * The `expr:` values of a Prometheus rules file as written in
 * ops/prometheus/alerts.yml: single-line, or a `>-` folded block.
 */
export function ruleExpressions(yaml: string): string[] {
  const lines = yaml.split("\n");
  const found: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = /^(\s*)expr: (.*)$/.exec(lines[i]);
    if (!m) continue;
    if (m[2] !== ">-" && m[2] !== ">") {
      found.push(m[2]);
      continue;
    }
    const parts: string[] = [];
    while (i + 1 < lines.length && /^\s*$|^\s+/.test(lines[i + 1])) {
      const next = lines[i + 1];
      const indent = /^(\s*)/.exec(next)![1].length;
      if (next.trim() !== "" && indent <= m[1].length) break;
      parts.push(next.trim());
      i++;
    }
    found.push(parts.join(" ").trim());
  }
  return found;
}

/**
 * The test setting of the end-to-end Prometheus test: every duration in a
 * rules file (`for:` and range selectors) divided by `factor`, rounded up
 * to whole seconds and at least `minSeconds`, so alerts meant to take
 * minutes or an hour take seconds. 240: 1h → 15s, 10m → 3s, 5m and 2m → 2s.
 */
export function scaleRuleDurations(yaml: string, factor: number, minSeconds = 2): string {
  const unit: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 };
  const scaled = (n: string, u: string) =>
    `${Math.max(minSeconds, Math.ceil((Number(n) * unit[u]) / factor))}s`;
  return yaml
    .replace(/^(\s*for: )(\d+)([smhd])$/gm, (_, head, n, u) => head + scaled(n, u))
    .replace(/\[(\d+)([smhd])\]/g, (_, n, u) => `[${scaled(n, u)}]`);
}
