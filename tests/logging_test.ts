import assert from "node:assert/strict";
import { getLogger } from "@logtape/logtape";
import { closeLogging, oneLineValue, setUpLogging } from "../src/ops/logging.ts";

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

Deno.test("with LOG_FILE every line goes to the file and only errors to stderr (launchd never rotates it)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "l2-logging-" });
  const printed: string[] = [];
  // The console sink writes every level with console.error: the test reads what it wrote.
  // deno-lint-ignore no-console
  const original = console.error;
  // deno-lint-ignore no-console
  console.error = (...args: unknown[]) => printed.push(args.join(" "));
  try {
    for (const file of [undefined, `${dir}/l2.log`]) {
      printed.length = 0;
      await setUpLogging({ level: "info", format: "text", file });
      const log = getLogger(["l2", "test"]);
      log.info("an info line");
      log.warn("a warning line");
      log.error("an error line");
      await closeLogging();
      const shown = printed.join("\n");
      assert.match(shown, /an error line/);
      if (file) {
        assert.doesNotMatch(shown, /an info line|a warning line/);
        const text = await Deno.readTextFile(file);
        for (const line of ["an info line", "a warning line", "an error line"]) {
          assert.ok(text.includes(line), `${line} not in the file: ${text}`);
        }
      } else {
        assert.match(shown, /an info line/);
        assert.match(shown, /a warning line/);
      }
    }
  } finally {
    // deno-lint-ignore no-console
    console.error = original;
    await Deno.remove(dir, { recursive: true });
  }
});
