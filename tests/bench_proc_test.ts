/**
 * The benchmark's exact CPU figure (bench/proc.ts): the cores threads' run
 * times (`schedstat`) add up to over a window. (`threadRunTimes` itself reads
 * /proc/<pid>/task, which Deno grants only with --allow-all, as the bench
 * runs and this suite does not.)
 */

import assert from "node:assert/strict";
import { exactCores, latestRunTimes } from "../bench/proc.ts";

Deno.test("exactCores sums every thread's run time over the window, born ones whole", () => {
  const before = new Map([[1, 1e9], [2, 5e8]]);
  const after = new Map([[1, 1.5e9], [2, 7e8], [3, 3e8]]);
  // (0.5 + 0.2 + 0.3) s of run time over 2 s
  assert.equal(exactCores(before, after, 2), 0.5);
  assert.equal(exactCores(undefined, after, 2), undefined);
  assert.equal(exactCores(before, undefined, 2), undefined);
});

Deno.test("latestRunTimes keeps the last run time read of a thread that exited", () => {
  const start = new Map([[1, 1e9], [2, 5e8]]);
  // Thread 2 exits after the second reading; thread 3 is born and exits between readings 2 and 4.
  const readings = [start, new Map([[1, 1.2e9], [2, 6e8]]), new Map([[1, 1.4e9], [3, 1e8]])];
  const latest = latestRunTimes([...readings, new Map([[1, 1.5e9]])]);
  assert.deepEqual(latest, new Map([[1, 1.5e9], [2, 6e8], [3, 1e8]]));
  // (0.5 + 0.1 + 0.1) s over 1 s
  assert.ok(Math.abs(exactCores(start, latest, 1)! - 0.7) < 1e-12);
  assert.equal(latestRunTimes([start, undefined]), undefined);
});
