// A peer the collector is measured against: a recorder as commonly written
// for Node.js: `ws` from npm, JSON.parse + JSON.stringify with a receive
// time, per-stream batches, async zlib gzip at level 5, and each object
// written with write + fsync + rename.
//
//   node node_recorder.mjs <out dir> <batch seconds> <ws url> [<ws url> ...]
//
// `ws` is resolved from NODE_PATH (the bench installs it into a directory of
// its own). Speaks the bench's child protocol (bench/child.ts): prints
// {"open":n} once every socket is open, then answers stdin lines: `stats`
// with {"frames","bytes","open"}, `close` by storing what is open, answering,
// exiting.

import { createRequire } from "node:module";
import { mkdir, open, rename } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { gzip } from "node:zlib";
import process from "node:process";

const require = createRequire(join(process.env.NODE_PATH ?? ".", "noop.js"));
const WebSocket = require("ws");
const gzipAsync = promisify(gzip);

const [out, batchSecondsArg, ...urls] = process.argv.slice(2);
const batchMs = Number(batchSecondsArg) * 1000;

let frames = 0;
let receivedBytes = 0;
let openSockets = 0;
let batches = new Map();
let sequence = 0;

async function store(stream, lines, n) {
  const body = await gzipAsync(lines.join("\n") + "\n", { level: 5 });
  const folder = join(out, stream);
  await mkdir(folder, { recursive: true });
  const final = join(folder, `${String(n).padStart(8, "0")}.ndjson.gz`);
  const tmp = `${final}.tmp`;
  const file = await open(tmp, "w");
  try {
    await file.writeFile(body);
    await file.sync();
  } finally {
    await file.close();
  }
  await rename(tmp, final);
}

function sealAll() {
  const sealed = batches;
  batches = new Map();
  return Promise.all([...sealed].map(([stream, lines]) => store(stream, lines, ++sequence)));
}

const sockets = urls.map((url) => {
  const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 0 });
  ws.on("message", (data) => {
    const recvTs = Date.now() * 1000;
    const text = data.toString();
    frames++;
    receivedBytes += text.length;
    const frame = JSON.parse(text);
    const line = JSON.stringify({ recv_ts: recvTs, stream: frame.stream, data: frame.data });
    let lines = batches.get(frame.stream);
    if (!lines) batches.set(frame.stream, lines = []);
    lines.push(line);
  });
  ws.on("error", () => {});
  return ws;
});
await Promise.all(sockets.map((ws) =>
  new Promise((resolve, reject) => {
    ws.once("open", () => {
      openSockets++;
      resolve();
    });
    ws.once("close", () => reject(new Error(`closed before open: ${ws.url}`)));
  })
));
for (const ws of sockets) ws.on("close", () => openSockets--);
const reply = (value) => process.stdout.write(JSON.stringify(value) + "\n");
reply({ open: openSockets });
const timer = setInterval(() => sealAll().catch((e) => process.stderr.write(`${e}\n`)), batchMs);

for await (const command of createInterface({ input: process.stdin })) {
  if (command === "stats") {
    reply({ frames, bytes: receivedBytes, open: openSockets });
  } else if (command === "close") {
    clearInterval(timer);
    for (const ws of sockets) ws.terminate();
    await sealAll();
    reply({ frames, bytes: receivedBytes, open: 0 });
    process.exit(0);
  } else {
    reply({ error: `unknown command: ${command}` });
  }
}
