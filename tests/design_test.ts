/**
 * docs/DESIGN.md is the contract and README.md the user's guide: both list
 * exactly the options the configuration reads, so neither can drift from the
 * code (or from each other) without this test failing.
 */

import assert from "node:assert/strict";
import { OPTION_NAMES } from "../src/config.ts";

const ROOT = new URL("../", import.meta.url);
/** Read by the AWS SDK's credential chain, not by our schema; documented with the credentials. */
const SDK_ONLY = new Set(["AWS_PROFILE"]);

/** The backticked variable names in the first column of the table under `heading`. */
async function optionsTable(file: string, heading: string): Promise<Set<string>> {
  const text = await Deno.readTextFile(new URL(file, ROOT));
  const start = text.indexOf(heading);
  assert.ok(start !== -1, `${file} has no "${heading}"`);
  const names = new Set<string>();
  let inTable = false;
  for (const line of text.slice(start).split("\n").slice(1)) {
    if (line.startsWith("| variable")) {
      inTable = true;
      continue;
    }
    if (!inTable) continue;
    if (!line.startsWith("|")) break;
    const first = line.split("|")[1];
    for (const m of first.matchAll(/`([A-Z][A-Z0-9_]+)`/g)) names.add(m[1]);
  }
  assert.ok(names.size > 10, `${file}: no options table under "${heading}"`);
  return names;
}

for (
  const [file, heading] of [["docs/DESIGN.md", "## Options"], ["README.md", "## Configuration"]]
) {
  Deno.test(`${file} lists exactly the options the configuration reads`, async () => {
    const documented = await optionsTable(file, heading);
    const missing = OPTION_NAMES.filter((name) => !documented.has(name));
    assert.deepEqual(missing, [], `${file} does not document ${missing.join(", ")}`);
    const unknown = [...documented].filter((n) => !OPTION_NAMES.includes(n) && !SDK_ONLY.has(n));
    assert.deepEqual(unknown, [], `${file} documents options the code does not read`);
  });
}

Deno.test("README links to the contract", async () => {
  const readme = await Deno.readTextFile(new URL("README.md", ROOT));
  assert.match(readme, /\]\(docs\/DESIGN\.md\)/);
});

Deno.test(".env.example names every option", async () => {
  const example = await Deno.readTextFile(new URL(".env.example", ROOT));
  const missing = OPTION_NAMES.filter((name) => !new RegExp(`^#?\\s*${name}=`, "m").test(example));
  assert.deepEqual(missing, [], `.env.example does not name ${missing.join(", ")}`);
});
