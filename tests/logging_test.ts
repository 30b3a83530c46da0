import assert from "node:assert/strict";
import { oneLineValue } from "../src/ops/logging.ts";

const inspect = (value: unknown) => Deno.inspect(value);

Deno.test("a text log line holds its values on that line: an error is its name, message and code, not its stack", () => {
  const refused = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:9"), {
    code: "ECONNREFUSED",
    $metadata: { attempts: 1 },
  });
  assert.equal(
    oneLineValue(refused, inspect),
    "Error: connect ECONNREFUSED 127.0.0.1:9 (ECONNREFUSED)",
  );
  assert.equal(oneLineValue("two\nlines\r", inspect), "two\\nlines\\r");
  const nested = oneLineValue({ a: { b: { c: [1, 2, 3] } }, long: "x".repeat(100) }, inspect);
  assert.ok(!nested.includes("\n"), nested);
  assert.match(nested, /c: \[ 1, 2, 3 \]/);
});
