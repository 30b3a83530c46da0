/**
 * GzipPool (src/batch/compress.ts) with real workers: the bytes equal
 * node:zlib's deflateRawSync of the concatenated input, input buffers are
 * free for reuse once deflateRaw() returns, replies never cross between calls, and a closed
 * pool or a dead worker rejects clearly. Also: the worker loads under the
 * `collector` permission set and does not keep the process alive after close().
 */

import assert from "node:assert/strict";
import { constants, deflateRawSync, inflateRawSync } from "node:zlib";
import { GzipPool, GzipPoolError, workerDeflater } from "../src/batch/compress.ts";

const ROOT = new URL("../", import.meta.url);
const encoder = new TextEncoder();

/** NDJSON like the archive's: compressible, but not trivially. */
function ndjson(lines: number, seed = 0): Uint8Array {
  let text = "";
  for (let i = 0; i < lines; i++) {
    const n = seed * 1_000_003 + i;
    text += `{"recv_ts":${1_723_100_000_000_000 + n * 137},"stream":"btcusdt@depth",` +
      `"data":{"u":${n},"b":[["${(60_000 + (n % 977) / 100).toFixed(2)}","${n % 13}.5"]]}}\n`;
  }
  return encoder.encode(text);
}

/** Splits into chunks of `size` bytes, as views over the one buffer. */
function chunked(bytes: Uint8Array, size: number): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size));
  return chunks;
}

function inflate(body: Uint8Array): Uint8Array {
  return new Uint8Array(inflateRawSync(body));
}

Deno.test("deflateRaw round-trips and equals node:zlib deflateRawSync at the same level", async () => {
  using pool = new GzipPool({ level: 5 });
  const data = ndjson(3000);
  for (const size of [data.length, 16 * 1024, 1000, 7]) {
    const chunks = chunked(data, size);
    const body = await pool.deflateRaw(chunks, true);
    assert.deepEqual(inflate(body), data);
    assert.deepEqual(body, new Uint8Array(deflateRawSync(data, { level: 5 })), `chunks of ${size}`);
  }
});

Deno.test("no input, or only empty chunks, gives a valid deflate stream of nothing", async () => {
  using pool = new GzipPool({ level: 5 });
  const empty = new Uint8Array(deflateRawSync(new Uint8Array(0), { level: 5 }));
  for (const chunks of [[], [new Uint8Array(0)], [new Uint8Array(0), new Uint8Array(0)]]) {
    const body = await pool.deflateRaw(chunks, true);
    assert.deepEqual(body, empty);
    assert.equal(inflate(body).length, 0);
  }
});

Deno.test("the level is respected: 1 and 9 differ, each equal to deflateRawSync's", async () => {
  const data = ndjson(5000);
  const sizes: number[] = [];
  for (const level of [1, 9]) {
    using pool = new GzipPool({ level });
    const body = await pool.deflateRaw(chunked(data, 16 * 1024), true);
    assert.deepEqual(body, new Uint8Array(deflateRawSync(data, { level })));
    sizes.push(body.length);
  }
  assert.ok(sizes[1] < sizes[0], `level 9 (${sizes[1]} B) smaller than level 1 (${sizes[0]} B)`);
});

for (const threads of [1, 2]) {
  Deno.test(`${threads} thread(s): many concurrent calls each resolve to their own result`, async () => {
    using pool = new GzipPool({ level: 1, threads });
    const inputs = Array.from({ length: 200 }, (_, i) => ndjson(1 + (i * 37) % 400, i));
    const bodies = await Promise.all(
      inputs.map((input) => pool.deflateRaw(chunked(input, 4096), true)),
    );
    assert.equal(pool.pending, 0);
    bodies.forEach((body, i) => assert.deepEqual(inflate(body), inputs[i], `call ${i}`));
  });
}

/** Reusable input chunks of 5,000 bytes, held three ways a caller might hold them. */
const HOLDINGS: Record<string, () => Uint8Array[]> = {
  "whole buffers": () => Array.from({ length: 13 }, () => new Uint8Array(5000)),
  "views over one buffer": () => chunked(new Uint8Array(13 * 5000), 5000),
  "shared memory": () =>
    Array.from({ length: 13 }, () => new Uint8Array(new SharedArrayBuffer(5000))),
};

for (const [holding, make] of Object.entries(HOLDINGS)) {
  Deno.test(`input overwritten as soon as deflateRaw() returns does not change the result: ${holding}`, async () => {
    using pool = new GzipPool({ level: 5, threads: 2 });
    const chunks = make();
    const expected: Uint8Array[] = [];
    const calls: Promise<Uint8Array>[] = [];
    for (let i = 0; i < 20; i++) {
      const data = ndjson(400, i).subarray(0, 13 * 5000);
      const used = chunked(data, 5000).map((part, j) => {
        chunks[j].set(part);
        return chunks[j].subarray(0, part.length);
      });
      calls.push(pool.deflateRaw(used, true));
      expected.push(data);
      for (const chunk of chunks) chunk.fill(0x78); // the caller's pool reuses them at once
    }
    const bodies = await Promise.all(calls);
    bodies.forEach((body, i) => assert.deepEqual(inflate(body), expected[i], `call ${i}`));
  });
}

Deno.test("close() rejects pending calls and every later call, clearly", async () => {
  const pool = new GzipPool({ level: 9, threads: 2 });
  const data = ndjson(20_000);
  const pending = [
    pool.deflateRaw([data], true),
    pool.deflateRaw([data], true),
    pool.deflateRaw([data], true),
  ];
  assert.equal(pool.pending, 3);
  pool.close();
  assert.equal(pool.pending, 0);
  for (const call of pending) {
    await assert.rejects(call, (e: Error) => {
      assert.ok(e instanceof GzipPoolError);
      assert.match(e.message, /gzip pool closed before the call completed/);
      return true;
    });
  }
  await assert.rejects(pool.deflateRaw([data], true), (e: Error) => {
    assert.ok(e instanceof GzipPoolError);
    assert.match(e.message, /gzip pool is closed/);
    return true;
  });
  pool.close(); // idempotent
  pool[Symbol.dispose]();
});

/**
 * A stand-in worker: "!hang" never answers, "!boom" throws (the worker dies),
 * "!fail" replies with an error, anything else is deflated.
 */
const FLAKY_WORKER = "data:application/javascript," + encodeURIComponent(`
  import { Buffer } from "node:buffer";
  import { constants, deflateRawSync } from "node:zlib";
  self.onmessage = ({ data }) => {
    const input = Buffer.concat(data.chunks);
    const text = input.toString();
    if (text === "!hang") return;
    if (text === "!boom") throw new Error("boom");
    if (text === "!fail") return self.postMessage({ id: data.id, error: "no good" });
    const finishFlush = data.final ? constants.Z_FINISH : constants.Z_FULL_FLUSH;
    const body = new Uint8Array(deflateRawSync(input, { level: data.level, finishFlush }));
    self.postMessage({ id: data.id, body });
  };
`);

Deno.test("a worker that dies rejects its pending calls, and a new worker takes later ones", async () => {
  using pool = new GzipPool({ level: 5, workerUrl: FLAKY_WORKER });
  const hanging = pool.deflateRaw([encoder.encode("!hang")], true);
  const crashing = pool.deflateRaw([encoder.encode("!bo"), encoder.encode("om")], true);
  for (const call of [hanging, crashing]) {
    await assert.rejects(call, (e: Error) => {
      assert.ok(e instanceof GzipPoolError);
      assert.match(e.message, /gzip worker died: .*boom/);
      return true;
    });
  }
  assert.equal(pool.pending, 0);
  const data = ndjson(100);
  assert.deepEqual(inflate(await pool.deflateRaw([data], true)), data);
});

Deno.test("an error the worker reports rejects only its own call", async () => {
  using pool = new GzipPool({ level: 5, workerUrl: FLAKY_WORKER });
  const data = ndjson(100);
  const [failed, fine] = await Promise.allSettled([
    pool.deflateRaw([encoder.encode("!fail")], true),
    pool.deflateRaw([data], true),
  ]);
  assert.ok(failed.status === "rejected" && failed.reason instanceof GzipPoolError);
  assert.equal(failed.reason.message, "gzip failed in the worker: no good");
  assert.ok(fine.status === "fulfilled");
  assert.deepEqual(inflate(fine.value), data);
});

Deno.test("a call goes to the least busy worker, not one stuck on a long call", async () => {
  const pool = new GzipPool({ level: 5, threads: 2, workerUrl: FLAKY_WORKER });
  const stuck = pool.deflateRaw([encoder.encode("!hang")], true);
  const data = ndjson(100);
  for (let i = 0; i < 3; i++) assert.deepEqual(inflate(await pool.deflateRaw([data], true)), data);
  pool.close();
  await assert.rejects(stuck, GzipPoolError);
});

Deno.test("a worker module that cannot load rejects the call with the reason", async () => {
  using pool = new GzipPool({ level: 5, workerUrl: new URL("./no_such_worker.ts", ROOT) });
  await assert.rejects(pool.deflateRaw([encoder.encode("x")], true), (e: Error) => {
    assert.ok(e instanceof GzipPoolError);
    // The reason depends on the runner: "Module not found" (run) or a type check failure (test).
    assert.match(e.message, /^gzip worker died: \S/);
    return true;
  });
});

Deno.test("bad options are refused up front", () => {
  assert.throws(() => new GzipPool({ level: 10 }), RangeError);
  assert.throws(() => new GzipPool({ level: 1.5 }), RangeError);
  assert.throws(() => new GzipPool({ level: 5, threads: 0 }), RangeError);
});

Deno.test("under -P=collector the worker runs, and close() lets the process exit", async () => {
  const script = `
    import { inflateRawSync } from "node:zlib";
    import { GzipPool } from "./src/batch/compress.ts";
    const pool = new GzipPool({ level: 5, threads: 2 });
    const input = new TextEncoder().encode('{"a":1}\\n'.repeat(1000));
    const [a, b] = await Promise.all([pool.deflateRaw([input], true), pool.deflateRaw([input], true)]);
    pool.close();
    console.log(inflateRawSync(a).length + inflateRawSync(b).length);
  `;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-P=collector", "--no-prompt", "-"],
    cwd: ROOT.pathname,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(encoder.encode(script));
  await writer.close();
  // No Deno.exit in the script: it ends only if no worker is left running.
  const timer = setTimeout(() => child.kill(), 30_000);
  const output = await child.output();
  clearTimeout(timer);
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.signal, null, `killed: still running 30 s later\n${stderr}`);
  assert.equal(output.code, 0, stderr);
  assert.equal(new TextDecoder().decode(output.stdout).trim(), "16000");
});

Deno.test("the worker hands each input buffer back, and the pool fills it again", async () => {
  using pool = new GzipPool({ level: 1 });
  const first = ndjson(50);
  assert.deepEqual(inflate(await pool.deflateRaw([first], true)), first);
  // The returned input buffer is reused: a smaller batch after a larger one
  // must not carry the larger one's tail bytes into its output.
  const second = ndjson(3);
  assert.deepEqual(inflate(await pool.deflateRaw([second], true)), second);
  const third = ndjson(80);
  assert.deepEqual(
    inflate(await pool.deflateRaw([third.subarray(0, 100), third.subarray(100)], true)),
    third,
  );
});

Deno.test("workerDeflater gives the pool at most maxInFlight calls at once, and answers each call with its own bytes", async () => {
  using pool = new GzipPool({ level: 5 });
  const deflater = workerDeflater(pool, { maxInFlight: 2, hereBytes: 0 });
  const inputs = Array.from({ length: 12 }, (_, i) => ndjson(200 + i * 10, i));
  let most = 0;
  const calls = inputs.map((input, i) => {
    const call = deflater.deflateRaw(chunked(input, 4096), i % 2 === 0);
    most = Math.max(most, pool.pending);
    return call;
  });
  const watch = setInterval(() => most = Math.max(most, pool.pending), 1);
  const bodies = await Promise.all(calls);
  clearInterval(watch);
  assert.ok(most <= 2, `${most} calls in the pool at once`);
  // Even calls are final pieces; odd ones end on a full flush, with no end-of-stream mark.
  const finishFlush = (i: number) => i % 2 === 0 ? constants.Z_FINISH : constants.Z_SYNC_FLUSH;
  bodies.forEach((body, i) => {
    const text = new Uint8Array(inflateRawSync(body, { finishFlush: finishFlush(i) }));
    assert.deepEqual(text, inputs[i], `call ${i}`);
  });
});

Deno.test("workerDeflater leaves a failing pool alone for a while, compressing on its own thread meanwhile", async () => {
  using pool = new GzipPool({ level: 5, workerUrl: new URL("./no_such_worker.ts", ROOT) });
  let calls = 0;
  const real = pool.deflateRaw.bind(pool);
  pool.deflateRaw = (chunks, final) => {
    calls++;
    return real(chunks, final);
  };
  let now = 0;
  const deflater = workerDeflater(pool, { retryAfterMs: 10_000, now: () => now, hereBytes: 0 });
  const input = ndjson(300);
  for (let i = 0; i < 5; i++) {
    assert.deepEqual(inflate(await deflater.deflateRaw([input], true)), input);
  }
  assert.equal(calls, 1, "one try, then the calling thread until retryAfterMs has passed");
  now = 10_000;
  assert.deepEqual(inflate(await deflater.deflateRaw([input], true)), input);
  assert.equal(calls, 2, "tried again after retryAfterMs");
});

Deno.test("calls made in one turn go to the worker as one message, each answered with its own bytes", async () => {
  using pool = new GzipPool({ level: 5 });
  const deflater = workerDeflater(pool, { hereBytes: 0 });
  const inputs = Array.from({ length: 300 }, (_, i) => ndjson(3 + (i % 5), i));
  const calls = inputs.map((input, i) => deflater.deflateRaw(chunked(input, 100), i === 299));
  await Promise.resolve(); // the turn ends: the calls are sent
  assert.equal(pool.pending, 1, "one message for 300 calls");
  const bodies = await Promise.all(calls);
  bodies.forEach((body, i) => {
    const finishFlush = i === 299 ? constants.Z_FINISH : constants.Z_FULL_FLUSH;
    assert.deepEqual(body, new Uint8Array(deflateRawSync(inputs[i], { level: 5, finishFlush })));
  });
});

Deno.test("a turn's calls that are small in all are deflated on the calling thread, the same bytes; larger ones go to the worker", async () => {
  using pool = new GzipPool({ level: 5 });
  let messages = 0;
  const many = pool.deflateRawMany.bind(pool);
  pool.deflateRawMany = (calls) => {
    messages++;
    return many(calls);
  };
  const deflater = workerDeflater(pool, { hereBytes: 20_000 });
  const want = (input: Uint8Array, final: boolean) =>
    new Uint8Array(deflateRawSync(input, {
      level: 5,
      finishFlush: final ? constants.Z_FINISH : constants.Z_FULL_FLUSH,
    }));
  // Ten calls of ~1.2 KB: ~12 KB in the turn, under hereBytes.
  const small = Array.from({ length: 10 }, (_, i) => ndjson(12, i));
  const total = small.reduce((n, input) => n + input.length, 0);
  assert.ok(total < 20_000, `${total} bytes`);
  const calls = small.map((input, i) => deflater.deflateRaw(chunked(input, 500), i === 9));
  await Promise.resolve(); // the turn ends
  assert.equal(pool.pending, 0, "nothing sent to the worker");
  (await Promise.all(calls)).forEach((body, i) => assert.deepEqual(body, want(small[i], i === 9)));
  assert.equal(messages, 0);
  // The same calls and one more: over hereBytes, so the whole turn goes to the worker.
  const large = [...small, ndjson(100, 99)];
  const sent = large.map((input) => deflater.deflateRaw([input], false));
  await Promise.resolve();
  assert.equal(pool.pending, 1, "one message for the turn");
  (await Promise.all(sent)).forEach((body, i) => assert.deepEqual(body, want(large[i], false)));
  assert.equal(messages, 1);
});

Deno.test("deflateRawMany equals deflateRawSync of each input, and rejects once the pool is closed", async () => {
  const pool = new GzipPool({ level: 1 });
  const inputs = [ndjson(50, 1), new Uint8Array(0), ndjson(7, 2)];
  const bodies = await pool.deflateRawMany(
    inputs.map((input) => ({ chunks: [input], final: false })),
  );
  bodies.forEach((body, i) => {
    const want = deflateRawSync(inputs[i], { level: 1, finishFlush: constants.Z_FULL_FLUSH });
    assert.deepEqual(body, new Uint8Array(want));
  });
  pool.close();
  await assert.rejects(pool.deflateRawMany([{ chunks: [inputs[0]], final: true }]), GzipPoolError);
});
