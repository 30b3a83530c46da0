import assert from "node:assert/strict";
import { parseFrame, parseFrameFast, parseFrameSlow } from "../src/binance/frames.ts";
import { diffDepthFeed, loadFixtureMessages, partialDepthFeed } from "./support/fake_exchange.ts";

const fixture = await Deno.readTextFile(
  new URL("./fixtures/mixed_trimmed_messages.ndjson", import.meta.url),
);

Deno.test("parseFrame returns the exact data substring of a combined-stream frame", () => {
  const payload = '{"lastUpdateId":160,"bids":[["0.0024","10"]],"asks":[["0.0026","100"]]}';
  const frame = parseFrame(`{"stream":"bnbbtc@depth5@100ms","data":${payload}}`);
  assert.equal(frame.kind, "data");
  if (frame.kind !== "data") return;
  assert.equal(frame.stream, "bnbbtc@depth5@100ms");
  assert.equal(frame.dataText, payload);
  assert.equal(frame.firstUpdateId, 160);
  assert.equal(frame.lastUpdateId, 160);
});

Deno.test("parseFrame keeps payload bytes that a re-encoding would change", () => {
  // 1.0 and 12345678901234567890 do not survive JSON.parse + JSON.stringify.
  const payload = '{"lastUpdateId":1,"x":1.0,"big":12345678901234567890,"bids":[],"asks":[]}';
  const frame = parseFrame(`{"stream":"a@depth5","data":${payload}}`);
  assert.ok(frame.kind === "data" && frame.dataText === payload);
});

Deno.test("parseFrame reads U/u and pu from real spot and futures diff messages", () => {
  for (const line of fixture.split("\n").filter((l) => l.includes('"depthUpdate"'))) {
    const frame = parseFrame(line);
    assert.equal(frame.kind, "data", line);
    if (frame.kind !== "data") continue;
    const data = JSON.parse(line).data;
    assert.equal(frame.firstUpdateId, data.U);
    assert.equal(frame.lastUpdateId, data.u);
    assert.equal(frame.prevUpdateId, data.pu);
    assert.deepEqual(JSON.parse(frame.dataText), data);
  }
});

Deno.test("parseFrame keeps the payload's bytes whatever the frame's layout", () => {
  // 1.0 and 12345678901234567890 do not survive a re-encoding; spaces inside data are kept too.
  const payload = '{ "lastUpdateId": 1, "x": 1.0, "big": 12345678901234567890, "s": "a\\"}{" }';
  const layouts = [
    `{"data":${payload},"stream":"a@depth5"}`,
    `{ "stream" : "a@depth5" ,\t"data" :${payload} }\n`,
    `{"st\\u0072eam":"a@depth5","d\\u0061ta":${payload}}`,
  ];
  for (const text of layouts) {
    const frame = parseFrame(text);
    assert.equal(frame.kind, "data", text);
    assert.equal(frame.kind === "data" && frame.dataText, payload, text);
    assert.equal(frame.kind === "data" && frame.lastUpdateId, 1, text);
  }
});

Deno.test("parseFrame keeps a frame a data line cannot carry as sent as malformed (its raw text is kept)", () => {
  // JSON allows a line break between tokens; an NDJSON line cannot hold one.
  for (const data of ['{"U":1,\n"u":2}', '{"U":1,\r\n"u":2}', "{\n}"]) {
    const frame = parseFrame(`{"stream":"btcusdt@depth","data":${data}}`);
    assert.deepEqual(frame, {
      kind: "malformed",
      reason: "a line break inside data",
      stream: "btcusdt@depth",
    });
  }
  // A key beside stream and data would be lost from a data line.
  assert.deepEqual(parseFrame('{"stream":"btcusdt@depth","data":{"U":1,"u":2},"x":[1]}'), {
    kind: "malformed",
    reason: "keys beside stream and data",
    stream: "btcusdt@depth",
  });
});

Deno.test("parseFrame classifies broken and unknown frames without throwing", () => {
  const broken = parseFrame('{"stream":"btcusdt@depth@100ms","data":{"e":');
  assert.equal(broken.kind, "malformed");
  assert.equal(broken.kind === "malformed" && broken.stream, "btcusdt@depth@100ms");
  assert.equal(parseFrame("[1,2]").kind, "malformed");
  assert.equal(parseFrame('{"result":null,"id":1}').kind, "malformed");
  const shutdown = parseFrame('{"e":"serverShutdown","E":1}');
  assert.ok(shutdown.kind === "control" && shutdown.event === "serverShutdown");
});

Deno.test("parseFrame reads serverShutdown in the combined-stream shape as control (BINANCE.md, serverShutdown)", () => {
  const text = '{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1770123456789}}';
  for (const frame of [parseFrame(text), parseFrameSlow(text)]) {
    assert.deepEqual(frame, {
      kind: "control",
      event: "serverShutdown",
      payload: { e: "serverShutdown", E: 1770123456789 },
    });
  }
  assert.equal(parseFrameFast(text), null, "the fast path leaves announcements to the slow one");
  // The raw shape, as before.
  assert.deepEqual(parseFrame('{"e":"serverShutdown","E":1770123456789}'), {
    kind: "control",
    event: "serverShutdown",
    payload: { e: "serverShutdown", E: 1770123456789 },
  });
});

// ---------------------------------------------------------------------------
// parseFrame's fast path against the reference (parseFrameSlow)

/** mulberry32: a small seeded PRNG, so every run checks the same inputs. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Which results the fast path gave, so a test can show it was exercised, not bypassed. */
interface Tally {
  inputs: number;
  fast: number;
  /** fast results by the ids they carry: "U/u/pu", "U/u", "lastUpdateId", "none" */
  byIds: Map<string, number>;
}

function newTally(): Tally {
  return { inputs: 0, fast: 0, byIds: new Map() };
}

/** parseFrame and, when it answers, the fast path alone must equal the reference exactly. */
function checkFrame(text: string, tally: Tally): void {
  const expected = parseFrameSlow(text);
  const label = JSON.stringify(text.length > 300 ? `${text.slice(0, 300)}...` : text);
  const actual = parseFrame(text);
  assert.deepStrictEqual(actual, expected, label);
  assert.deepStrictEqual(Object.keys(actual), Object.keys(expected), label);
  tally.inputs++;
  const fast = parseFrameFast(text);
  if (fast === null) return;
  assert.deepStrictEqual(fast, expected, label);
  tally.fast++;
  const ids = fast.kind !== "data"
    ? "not data"
    : fast.prevUpdateId !== undefined
    ? "U/u/pu"
    : fast.firstUpdateId === undefined
    ? "none"
    : text.includes('"U":')
    ? "U/u"
    : "lastUpdateId";
  tally.byIds.set(ids, (tally.byIds.get(ids) ?? 0) + 1);
}

/** Combined frames as Binance sends them: fixture recordings and fake-exchange feeds. */
async function baseFrames(): Promise<string[]> {
  const frames: string[] = [];
  const wrap = (stream: string, data: string) =>
    `{"stream":${JSON.stringify(stream)},"data":${data}}`;
  for (const entry of Deno.readDirSync(new URL("./fixtures/", import.meta.url))) {
    if (!/\.ndjson(\.gz)?$/.test(entry.name)) continue;
    const messages = await loadFixtureMessages(
      new URL(`./fixtures/${entry.name}`, import.meta.url),
    );
    // Bare REST snapshots get the partial-depth stream name they would arrive on.
    for (const m of messages) frames.push(wrap(m.stream ?? "btcusdt@depth20@100ms", m.data));
  }
  const feeds = [
    ["b0001usdt@depth20@100ms", partialDepthFeed({ rate: 400, levels: 16 })],
    ["b0002usdt@depth5@100ms", partialDepthFeed({ rate: 10, levels: 5, startId: 0 })],
    ["btcusdt@depth@100ms", diffDepthFeed({ rate: 10, symbol: "btcusdt" })],
    ["btcusdt@depth@0ms", diffDepthFeed({ rate: 10, symbol: "btcusdt", market: "usdm" })],
  ] as const;
  for (const [stream, feed] of feeds) {
    for (let n = 0; n < 200; n++) frames.push(wrap(stream, feed.next(n)));
  }
  return frames;
}

const MUTATION_CHARS = [
  ...'"\\{}[],:0123456789a eE.+-',
  "\u0000",
  "\u001f",
  "\n",
  "\t",
  "\u007f",
  "\u2028",
  "\ud800",
  "\udc00",
  "é",
];

/** Numbers (and a few non-numbers) to put where an update id goes. */
function idLiteral(rand: () => number): string {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
  const fixed = [
    "0",
    "-0",
    "1",
    "-1",
    "1.5",
    "1.0",
    "1e3",
    "1E+2",
    "2e-3",
    "-0.0e-0",
    "9007199254740993",
    "12345678901234567890123",
    "1e400",
    "-1e400",
    "1e-400",
    "0.1e1",
    "01",
    "1.",
    ".5",
    "+1",
    "1e",
    "0x10",
    "Infinity",
    "NaN",
    "true",
    "null",
    '"123"',
    '""',
    "[]",
    '[["1"]]',
    '{"a":1}',
    "[1]",
  ];
  if (rand() < 0.5) return pick(fixed);
  // A random JSON number literal: up to 30 digits, optional fraction and exponent.
  const digits = (n: number) => Array.from({ length: n }, () => Math.floor(rand() * 10)).join("");
  let s = rand() < 0.2 ? "-" : "";
  s += rand() < 0.1 ? "0" : `${1 + Math.floor(rand() * 9)}${digits(Math.floor(rand() * 30))}`;
  if (rand() < 0.3) s += `.${digits(1 + Math.floor(rand() * 20))}`;
  if (rand() < 0.3) {
    s += `${pick(["e", "E"])}${pick(["", "+", "-"])}${digits(1 + Math.floor(rand() * 3))}`;
  }
  return s;
}

/** A `data` object in (mostly) the fast grammar, with update-id keys in every combination. */
function randomData(rand: () => number): string {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
  const keys = [
    "U",
    "u",
    "pu",
    "lastUpdateId",
    "e",
    "E",
    "s",
    "b",
    "a",
    "bids",
    "asks",
    "Ux",
    "uU",
  ];
  const members: string[] = [];
  const count = Math.floor(rand() * 6);
  for (let i = 0; i < count; i++) {
    const key = pick(keys);
    const r = rand();
    const value = r < 0.5
      ? idLiteral(rand)
      : r < 0.7
      ? pick(['"depthUpdate"', '"BTCUSDT"', '"U"', '"u\\":"', '"\\u0055"', '"pu"'])
      : `[${
        Array.from({ length: Math.floor(rand() * 3) }, () => `["${idLiteral(rand)}","1.0"]`).join(
          ",",
        )
      }]`;
    members.push(`${JSON.stringify(key)}:${value}`);
  }
  return `{${members.join(",")}}`;
}

/** One random change to a frame: the edits a fast path that is wrong about JSON would trip on. */
function mutate(frame: string, rand: () => number): string {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
  // Half the edits land near the head, where the stream name and the ids are.
  const at = Math.floor(rand() * (rand() < 0.5 ? Math.min(frame.length, 120) : frame.length));
  const dataAt = frame.indexOf('"data":{') + 8;
  switch (Math.floor(rand() * 12)) {
    case 0:
      return frame.slice(0, at) + frame.slice(at + 1);
    case 1:
      return frame.slice(0, at) + pick(MUTATION_CHARS) + frame.slice(at);
    case 2:
      return frame.slice(0, at) + pick(MUTATION_CHARS) + frame.slice(at + 1);
    case 3: {
      // A duplicate (or new) id key at the start or the end of data.
      const member = `"${pick(["U", "u", "pu", "lastUpdateId"])}":${idLiteral(rand)}`;
      return rand() < 0.5
        ? `${frame.slice(0, dataAt)}${member},${frame.slice(dataAt)}`
        : `${frame.slice(0, -2)},${member}}}`;
    }
    case 4:
      return frame.slice(0, at) + pick([" ", "\n", "\t", "\r", "\u00a0"]) + frame.slice(at);
    case 5:
      // Escapes and oddities in the stream name.
      return frame.replace(
        /^\{"stream":"[^"]*"/,
        `{"stream":"${
          pick([
            "btc\\u0075sdt@depth",
            'a\\"b',
            "a\\/b",
            "a\\\\b",
            "",
            "U",
            '","data":',
            "\ud800x",
            "\udfff",
            "\ud83d\ude00",
            "é@depth",
            "a\u007f",
          ])
        }"`,
      );
    case 6:
      // An id as a string, or as another kind of number.
      return frame.replace(
        /"(U|u|pu|lastUpdateId)":(-?[0-9][0-9.eE+-]*)/,
        (_all, key: string, value: string) =>
          `"${key}":${rand() < 0.3 ? `"${value}"` : idLiteral(rand)}`,
      );
    case 7:
      // A nested object, possibly hiding an id key.
      return `${frame.slice(0, dataAt)}"${pick(["x", "U", "b"])}":${
        pick(['{"U":1,"u":2}', '{"lastUpdateId":3}', "{}", "true", "null", "[1,2]", '[{"a":1}]'])
      },${frame.slice(dataAt)}`;
    case 8:
      // Another shape of frame around the same payload.
      return pick([
        frame.replace('{"stream":', '{"x":1,"stream":'),
        `${frame.slice(0, -1)},"stream":"other"}`,
        `${frame.slice(0, -1)},"extra":1}`,
        frame.replace(/^\{("stream":"[^"]*"),("data":.*)\}$/s, "{$2,$1}"),
        frame.replace('"data":{', '"data":[{').replace(/\}\}$/, "}]}"),
        frame.replace('"data":{', '"data":{"__proto__":{"U":1},'),
        `${frame}\n`,
        ` ${frame}`,
        `${frame}}`,
        frame.slice(0, -1),
      ]);
    case 9:
      // A string value with an escape or a control character inside data.
      return frame.replace(/"([A-Z]+)"/, pick(['"B\\u0054C"', '"a\\nb"', '"a\tb"', '"\\""']));
    case 10:
      return frame.replace(/"(U|u|pu|lastUpdateId)":/, (all) => `${all.slice(0, -1)} :`);
    default:
      return `{"stream":"x@depth","data":${randomData(rand)}}`;
  }
}

Deno.test("parseFrame equals the JSON.parse reference on real frames and thousands of mutations", async () => {
  const bases = await baseFrames();
  const real = newTally();
  for (const frame of bases) checkFrame(frame, real);
  // Every real frame is in the fast grammar, with every kind of id.
  assert.equal(real.fast, real.inputs);
  assert.ok((real.byIds.get("U/u/pu") ?? 0) > 1000, JSON.stringify([...real.byIds]));
  assert.ok((real.byIds.get("U/u") ?? 0) > 1000, JSON.stringify([...real.byIds]));
  assert.ok((real.byIds.get("lastUpdateId") ?? 0) > 100, JSON.stringify([...real.byIds]));

  const rand = prng(20240808);
  // Small frames keep the run quick; the big ones were all checked above.
  const small = bases.filter((frame) => frame.length < 2_000);
  const mutated = newTally();
  for (let i = 0; i < 30_000; i++) {
    let frame = small[Math.floor(rand() * small.length)];
    const edits = 1 + Math.floor(rand() * 3);
    for (let e = 0; e < edits; e++) frame = mutate(frame, rand);
    checkFrame(frame, mutated);
  }
  // The fast path answered for a good share of the edited frames, of every id kind.
  const summary = JSON.stringify({ ...mutated, byIds: [...mutated.byIds] });
  assert.ok(mutated.fast > 4_000, summary);
  for (const ids of ["U/u/pu", "U/u", "lastUpdateId", "none"]) {
    assert.ok((mutated.byIds.get(ids) ?? 0) > 100, `${ids}: ${summary}`);
  }
  // ...and declined (malformed, other shapes, duplicate keys) for a good share.
  assert.ok(mutated.inputs - mutated.fast > 5_000, summary);
});

Deno.test("parseFrame matches the reference on edge cases of the fast path", () => {
  const tally = newTally();
  const frames = [
    '{"stream":"a","data":{}}',
    '{"stream":"","data":{"U":1,"u":2}}',
    '{"stream":"a","data":{"U":1,"u":2,"pu":0}}',
    '{"stream":"a","data":{"U":1,"u":"2","pu":0,"lastUpdateId":7}}',
    '{"stream":"a","data":{"u":2,"lastUpdateId":7}}',
    '{"stream":"a","data":{"U":-0,"u":1e400,"pu":-1e-400}}',
    '{"stream":"a","data":{"lastUpdateId":12345678901234567890123}}',
    '{"stream":"a","data":{"lastUpdateId":1,"lastUpdateId":2}}',
    '{"stream":"a","data":{"U":1,"u":2,"U":3}}',
    '{"stream":"a","data":{"U":1,"u":2,"pu":3,"pu":"4"}}',
    '{"stream":"a","data":{"x":"U","U":1,"u":2}}',
    '{"stream":"a","data":{"b":[["U","u"],["pu"]],"lastUpdateId":5}}',
    '{"stream":"a","data":{"XU":1,"uu":2,"xpu":3,"UlastUpdateId":4}}',
    '{"stream":"U","data":{"u":1}}',
    '{"stream":"a","data":{"U":1,"u":2,"pu":[]}}',
    '{"stream":"a\ud800","data":{"lastUpdateId":1}}',
    '{"stream":"a","data":{"s":"\ud800","lastUpdateId":1}}',
  ];
  for (const frame of frames) checkFrame(frame, tally);
  assert.ok(tally.fast >= 12, JSON.stringify(tally.fast));
});

Deno.test("the fast path's character set: every ASCII and control character in names and strings", () => {
  // The string class is written as ranges; each character must be taken or declined like the reference does.
  const tally = newTally();
  for (let c = 0; c < 0x100; c++) {
    const ch = String.fromCharCode(c);
    const json = JSON.stringify(ch).slice(1, -1);
    for (const text of new Set([ch, json])) {
      checkFrame(`{"stream":"a${text}b","data":{"s":"x","lastUpdateId":1}}`, tally);
      checkFrame(
        `{"stream":"a","data":{"s":"x${text}y","b":[["${text}","1"]],"lastUpdateId":1}}`,
        tally,
      );
    }
  }
  // Printable ASCII and DEL but `"` and backslash, in both places, raw: 94 characters × 2 frames.
  assert.equal(tally.fast, 2 * (0x80 - 0x20 - 2), JSON.stringify(tally.fast));
});

Deno.test("frames that are not {stream, data} JSON are malformed, fast path or not", () => {
  const data = '{"lastUpdateId":1,"bids":[["1.0","2"]],"asks":[]}';
  const malformed = [
    // A raw quote ends the name early; an escaped one does not end it at all.
    `{"stream":"a"b","data":${data}}`,
    `{"stream":"a\\"b,"data":${data}}`,
    // `data` that is not an object.
    '{"stream":"a","data":[1,2]}',
    '{"stream":"a","data":"x"}',
    '{"stream":"a","data":1}',
    '{"stream":"a","data":null}',
    // Trailing or missing bytes.
    `{"stream":"a","data":${data}}x`,
    `{"stream":"a","data":${data}}}`,
    `{"stream":"a","data":${data}`,
    `{"stream":"a","data":${data.slice(0, -1)}}`,
    `{"stream":"a","data":${data},}`,
    // Broken JSON inside the payload.
    '{"stream":"a","data":{"b":[["1","2"],]}}',
    '{"stream":"a","data":{"b":[["1" "2"]]}}',
    '{"stream":"a","data":{"u":01}}',
    '{"stream":"a","data":{"u":1.}}',
    '{"stream":"a","data":{"s":"a\nb"}}',
    '{"stream":"a","data":{"s":"\\x"}}',
    // Not the two keys.
    `{"stream":"a"}`,
    `{"data":${data}}`,
    `{"stream":1,"data":${data}}`,
  ];
  for (const text of malformed) {
    assert.equal(parseFrameFast(text), null, text);
    assert.equal(parseFrame(text).kind, "malformed", text);
  }
  // Valid JSON the fast path leaves to the reference: whitespace, escapes, other key orders.
  const valid = [
    `{ "stream":"a","data":${data}}`,
    `{"stream" : "a" , "data" : ${data} }`,
    `{"stream":"a","data":${data}}\n`,
    `{"stream":"a","data":{ "lastUpdateId": 1 }}`,
    `{"stream":"a\\"b","data":${data}}`,
    `{"stream":"a\\u0062","data":${data}}`,
    `{"data":${data},"stream":"a"}`,
  ];
  for (const text of valid) {
    assert.equal(parseFrameFast(text), null, text);
    const frame = parseFrame(text);
    assert.deepStrictEqual(frame, parseFrameSlow(text), text);
    assert.equal(frame.kind, "data", text);
  }
});

Deno.test("parseFrame returns on pathological input (the fast path cannot backtrack for long)", () => {
  // 1 MB of `[["",` alone and inside a frame, and long runs the RegExp walks through.
  const nested = '[["",'.repeat(200_000);
  assert.equal(parseFrame(nested).kind, "malformed");
  assert.equal(parseFrame(`{"stream":"a","data":{"b":${nested}}}`).kind, "malformed");
  assert.equal(
    parseFrame(`{"stream":"a","data":{"b":[[${'"",'.repeat(340_000)}`).kind,
    "malformed",
  );
  const long = `{"stream":"a","data":{"b":[${'["1"],'.repeat(170_000)}["1"]],"u":1}}`;
  assert.ok(long.length < 1 << 20 && parseFrameFast(long) !== null);
  assert.deepStrictEqual(parseFrame(long), parseFrameSlow(long));
  // 51 MB: past the ~16 M backtrack entries after which V8 throws instead of failing the match.
  assert.equal(
    parseFrame(`{"stream":"a","data":{"b":[[${'"",'.repeat(17_000_000)}`).kind,
    "malformed",
  );
});

Deno.test("trade, aggTrade and book ticker frames carry their one id (t, a, u), fast path or not", () => {
  const trade =
    `{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,"s":"BTCUSDT","t":3735683259,"p":"61837.63000000","q":"0.02000000","T":1723161255342,"m":true,"M":true}}`;
  const agg =
    `{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,"s":"BTCUSDT","a":5933014,"p":"1.0","q":"2","f":100,"l":105,"T":1,"m":true}}`;
  const ticker =
    `{"stream":"btcusdt@bookTicker","data":{"u":50093239212,"s":"BTCUSDT","b":"61837.63000000","B":"3.78826000","a":"61837.64000000","A":"1.54698000"}}`;
  const usdmTicker =
    `{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":400900217,"s":"BTCUSDT","b":"1","B":"2","a":"3","A":"4","T":1,"E":2}}`;
  for (
    const [text, id] of [[trade, 3735683259], [agg, 5933014], [ticker, 50093239212], [
      usdmTicker,
      400900217,
    ]] as const
  ) {
    const frame = parseFrame(text);
    assert.equal(frame.kind, "data");
    if (frame.kind !== "data") continue;
    assert.equal(frame.firstUpdateId, id, text);
    assert.equal(frame.lastUpdateId, id, text);
    assert.deepEqual(frame, parseFrameSlow(text));
  }
  // The spot ticker (strings and numbers only) takes the fast path.
  assert.deepEqual(parseFrameFast(ticker), parseFrameSlow(ticker));
});

Deno.test("a frame whose data holds a lone UTF-16 surrogate escape is malformed (DuckDB refuses such a line)", () => {
  // Valid JSON (`JSON.parse` takes it), but DuckDB rejects the whole file that holds it.
  for (const escape of ["\\ud800", "\\uDC00", "\\ud83d x"]) {
    const frame = parseFrame(`{"stream":"btcusdt@depth","data":{"s":"BTC${escape}","u":1}}`);
    assert.equal(frame.kind, "malformed", escape);
    assert.match(frame.kind === "malformed" ? frame.reason : "", /lone UTF-16 surrogate/);
  }
  // A pair is one character, and an escaped backslash before "ud800" is no escape at all.
  for (const text of ["\\ud83d\\ude00", "\\\\ud800"]) {
    const frame = parseFrame(`{"stream":"btcusdt@depth","data":{"s":"${text}","u":1}}`);
    assert.equal(frame.kind, "data", text);
  }
});

Deno.test("a surrogate escape with data nested deeper than a call stack reaches is classified, not thrown", () => {
  // JSON.parse takes the nesting; the check for lone surrogates walks it without recursion.
  for (const [open, close] of [["[", "]"], ['{"a":', "}"]]) {
    const deep = open.repeat(20_000) + "1" + close.repeat(20_000);
    const paired = parseFrame(
      `{"stream":"btcusdt@depth","data":{"s":"\\ud83d\\ude00","x":${deep}}}`,
    );
    assert.equal(paired.kind, "data");
    const lone = parseFrame(`{"stream":"btcusdt@depth","data":{"x":${deep},"s":"\\ud800"}}`);
    assert.equal(lone.kind, "malformed");
  }
  // A stream name with a lone surrogate cannot go into a line either.
  const name = parseFrameSlow(`{"stream":"btc\\ud800","data":{"u":1}}`);
  assert.equal(name.kind, "malformed");
});

Deno.test("a frame with stream or data given twice is malformed: a data line would keep only the last value", () => {
  for (
    const text of [
      '{"stream":"a@depth5","data":{"lastUpdateId":0},"data":{"lastUpdateId":1}}',
      '{"stream":"b@depth5","stream":"a@depth5","data":{"lastUpdateId":1}}',
      '{"stream":"a@depth5","d\\u0061ta":{"lastUpdateId":0},"data":{"lastUpdateId":1}}',
    ]
  ) {
    const frame = parseFrame(text);
    assert.equal(frame.kind, "malformed", text);
    assert.equal(frame.kind === "malformed" && frame.reason, "a key given twice", text);
  }
});
