/**
 * Lint rules for the shape of `src/` (docs/DESIGN.md, "Architecture"):
 *
 * - `arch/max-function-lines`: no function, method or arrow function longer
 *   than {@link MAX_FUNCTION_LINES} lines. A table of data written as a
 *   function (an HTML template, say) may be excepted with
 *   `// deno-lint-ignore arch/max-function-lines -- <reason>`.
 * - `arch/no-upward-import`: layers import downwards only. Each folder of
 *   `src/` has a place in {@link LAYERS}; a file may import from its own
 *   folder and from folders listed before its own, never from one after it.
 *   A total order rules out cycles between folders as well as calls from the
 *   pure core up into the stages that drive it.
 *
 * Run by `deno lint` (deno.json `lint.plugins`); `tests/architecture_test.ts`
 * checks the rules catch what they should.
 */

/** The longest function allowed in `src/`, in lines from its first to its last. */
export const MAX_FUNCTION_LINES = 60;

/**
 * The folders of `src/` from the bottom up. Files at the top of `src/` are
 * named with their `.ts`. A path not listed is not checked.
 */
export const LAYERS: readonly string[] = [
  // Pure core: no I/O of their own, no knowledge of the stages above.
  "delay.ts",
  "beat.ts",
  "config_types.ts",
  "archive",
  "binance",
  "book",
  "batch",
  // Stages: they do I/O and drive the core.
  "store",
  "feed",
  "ops",
  "verify",
  // The program: options, commands, and the entry point.
  "config.ts",
  "cli",
  "main.ts",
];

/** The layer of a path under `src/`, or undefined for a path outside it or unlisted. */
export function layerOf(path: string): number | undefined {
  const match = /(?:^|\/)src\/([^/]+)/.exec(path.replaceAll("\\", "/"));
  if (!match) return undefined;
  const index = LAYERS.indexOf(match[1]);
  return index < 0 ? undefined : index;
}

function lineOf(text: string, offset: number): number {
  let line = 1;
  for (let i = text.indexOf("\n"); i >= 0 && i < offset; i = text.indexOf("\n", i + 1)) line++;
  return line;
}

function resolveRelative(from: string, specifier: string): string {
  const parts = from.replaceAll("\\", "/").split("/").slice(0, -1);
  for (const part of specifier.split("/")) {
    if (part === "..") parts.pop();
    else if (part !== ".") parts.push(part);
  }
  return parts.join("/");
}

const plugin: Deno.lint.Plugin = {
  name: "arch",
  rules: {
    "max-function-lines": {
      create(context) {
        const inSrc = layerOf(context.filename) !== undefined;
        const check = (
          node:
            | Deno.lint.FunctionDeclaration
            | Deno.lint.FunctionExpression
            | Deno.lint.ArrowFunctionExpression,
        ) => {
          if (!inSrc) return;
          const text = context.sourceCode.text;
          const lines = lineOf(text, node.range[1]) - lineOf(text, node.range[0]) + 1;
          if (lines > MAX_FUNCTION_LINES) {
            context.report({
              node,
              message: `This function is ${lines} lines long; the bound is ${MAX_FUNCTION_LINES}.`,
              hint: "Split it into named steps (docs/DESIGN.md, Architecture).",
            });
          }
        };
        return {
          FunctionDeclaration: check,
          FunctionExpression: check,
          ArrowFunctionExpression: check,
        };
      },
    },
    "no-upward-import": {
      create(context) {
        const own = layerOf(context.filename);
        const check = (source: Deno.lint.StringLiteral | null | undefined) => {
          if (own === undefined || !source || !source.value.startsWith(".")) return;
          const target = layerOf(resolveRelative(context.filename, source.value));
          if (target !== undefined && target > own) {
            context.report({
              node: source,
              message: `${LAYERS[own]} imports ${LAYERS[target]}, a layer above it.`,
              hint: "Lower layers are called, they do not call up: pass a function or an " +
                "interface down instead, or move the shared part down (docs/DESIGN.md).",
            });
          }
        };
        return {
          Program: (node) => {
            if (own === undefined && /(?:^|\/)src\/[^/]+/.test(context.filename)) {
              context.report({
                node,
                message: "This file is in no layer of src/.",
                hint: "Move it into a folder of src/, or give it a place in LAYERS.",
              });
            }
          },
          ImportDeclaration: (node) => check(node.source),
          ExportNamedDeclaration: (node) => check(node.source),
          ExportAllDeclaration: (node) => check(node.source),
          ImportExpression: (node) =>
            check(
              node.source.type === "Literal" && typeof node.source.value === "string"
                ? node.source as Deno.lint.StringLiteral
                : undefined,
            ),
        };
      },
    },
  },
};

export default plugin;
