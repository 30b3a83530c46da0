/**
 * The fake exchange as a process of its own, so the CPU it spends making and
 * sending frames is not charged to the client being measured.
 *
 *   deno run -A bench/exchange_server.ts --streams 50 --rate 400 [--kind diff]
 *
 * Prints one JSON line `{"wsUrl","restUrl"}` when listening, then answers
 * one command per stdin line with one JSON line on stdout:
 *   stats   {"sent","open"}                    frames written so far, open sockets
 *   stop    {"sent"}                           silences every stream (sockets stay open)
 *   counts  {"sent","perStream":{name:n}}      frames written per stream
 *   rest    {"depth":[ms…]}                    when each depth snapshot was asked for
 *   close   {"closed":true}                    closes the exchange, then exits
 * Only frames actually written to a socket are counted (`record: false`).
 * `--kind diff` serves diff depth (`<sym>@depth@100ms`, with snapshots that
 * line up) instead of partial books.
 */

import { parseArgs } from "node:util";
import {
  diffDepthFeed,
  FakeExchange,
  type FakeStreamFeed,
} from "../tests/support/fake_exchange.ts";
import { lineSplitter } from "./child.ts";
import { stoppableFeed, streamNames, symbolsFor } from "./loads.ts";

const args = parseArgs({
  args: Deno.args,
  options: { streams: { type: "string" }, rate: { type: "string" }, kind: { type: "string" } },
});
const streams = Number(args.values.streams);
const rate = Number(args.values.rate);
if (!(streams > 0) || !(rate > 0)) {
  throw new Error("usage: exchange_server.ts --streams N --rate MSG_PER_S");
}

const encoder = new TextEncoder();
const reply = (value: unknown) =>
  Deno.stdout.writeSync(encoder.encode(JSON.stringify(value) + "\n"));

const exchange = await FakeExchange.start({ record: false });
const diff = args.values.kind === "diff";
const names = diff
  ? symbolsFor(streams).map((s) => `${s.toLowerCase()}@depth@100ms`)
  : streamNames(streams);
const feeds = new Map<string, FakeStreamFeed>();
names.forEach((name, i) => {
  const feed = diff
    ? diffDepthFeed({ rate, symbol: symbolsFor(streams)[i], startId: 50_000_000_000 + i * 1e9 })
    : stoppableFeed(rate, 40_000_000_000 + i * 1_000_000_000);
  feeds.set(name, feed);
  exchange.setFeed(name, feed);
});
reply({ wsUrl: exchange.wsUrl, restUrl: exchange.restUrl });

const lines = Deno.stdin.readable
  .pipeThrough(new TextDecoderStream())
  .pipeThrough(lineSplitter());
for await (const command of lines) {
  switch (command.trim()) {
    case "stats":
      reply({ sent: exchange.sentCount, open: exchange.openCount });
      break;
    case "stop":
      for (const [name, feed] of feeds) feed.count = exchange.producedCount(name);
      reply({ sent: exchange.sentCount });
      break;
    case "counts":
      reply({
        sent: exchange.sentCount,
        perStream: Object.fromEntries(names.map((n) => [n, exchange.sentCountFor(n)])),
      });
      break;
    case "rest":
      reply({
        depth: exchange.restRequests.filter((r) => r.path.endsWith("/depth")).map((r) => r.at),
      });
      break;
    case "close":
      await exchange.close();
      reply({ closed: true });
      Deno.exit(0);
      break;
    default:
      reply({ error: `unknown command: ${command}` });
  }
}
await exchange.close();
