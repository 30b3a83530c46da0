/**
 * The ceiling: a client that opens the same combined-stream connections as
 * the collector with the runtime's own WebSocket and only counts what
 * arrives. Whatever CPU it needs per message, the collector cannot need less.
 *
 *   deno run -A bench/bare_client.ts <ws url> [<ws url> ...]
 *
 * Prints `{"open":n}` once every socket is open, then answers stdin lines:
 *   stats   {"frames","bytes","open"}   frames and UTF-16 units received so far
 *   close   closes the sockets, answers with the final stats, exits
 */

import { lineSplitter } from "./child.ts";

const encoder = new TextEncoder();
const reply = (value: unknown) =>
  Deno.stdout.writeSync(encoder.encode(JSON.stringify(value) + "\n"));

let frames = 0;
let bytes = 0;
let open = 0;
const sockets = Deno.args.map((url) => {
  const ws = new WebSocket(url);
  ws.onmessage = (event: MessageEvent) => {
    frames++;
    bytes += (event.data as string).length;
  };
  ws.onerror = () => {};
  return ws;
});
await Promise.all(sockets.map((ws) =>
  new Promise<void>((resolve, reject) => {
    ws.onopen = () => {
      open++;
      resolve();
    };
    ws.onclose = () => reject(new Error(`closed before open: ${ws.url}`));
  })
));
for (const ws of sockets) ws.onclose = () => open--;
reply({ open });

const stats = () => ({ frames, bytes, open });
const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).pipeThrough(lineSplitter());
for await (const command of lines) {
  if (command === "stats") {
    reply(stats());
  } else if (command === "close") {
    await Promise.all(sockets.map((ws) =>
      new Promise<void>((resolve) => {
        if (ws.readyState === WebSocket.CLOSED) return resolve();
        ws.onclose = () => resolve();
        ws.close(1000);
        setTimeout(resolve, 2000);
      })
    ));
    reply(stats());
    Deno.exit(0);
  } else {
    reply({ error: `unknown command: ${command}` });
  }
}
