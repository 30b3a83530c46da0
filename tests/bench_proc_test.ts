/**
 * The benchmark's exact CPU figure (bench/proc.ts): the cores threads' run
 * times (`schedstat`) add up to over a window. (`threadRunTimes` itself reads
 * /proc/<pid>/task, which Deno grants only with --allow-all, as the bench
 * runs and this suite does not.)
 */

import assert from "node:assert/strict";
import { exactCores } from "../bench/proc.ts";

Deno.test("exactCores sums every thread's run time over the window, born ones whole; none when one exited", () => {
  const before = new Map([[1, 1e9], [2, 5e8]]);
  const after = new Map([[1, 1.5e9], [2, 7e8], [3, 3e8]]);
  // (0.5 + 0.2 + 0.3) s of run time over 2 s
  assert.equal(exactCores(before, after, 2), 0.5);
  assert.equal(exactCores(before, new Map([[1, 2e9]]), 2), undefined);
  assert.equal(exactCores(undefined, after, 2), undefined);
});
