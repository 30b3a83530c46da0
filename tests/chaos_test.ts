/**
 * Chaos, end to end: the collector as a subprocess (the `start` task's exact
 * permission set) against the fake exchange and a real S3 server (s3rver),
 * with every fault in one run — S3 outages, dropped connections, two stalls,
 * lifetime cuts pre-empted by rotation, malformed frames, a SIGKILL in the
 * middle of a batch and a restart on the same DATA_DIR, a second S3 outage,
 * and a final SIGTERM. Then the bucket is compared with what the exchange
 * wrote: every message stored exactly once (except the tail the SIGKILL
 * took), every break of a diff chain marked in the archive, `verify` clean
 * apart from explained breaks and holes, the spool empty.
 *
 * Timeline (seconds after the first connection opened, t0; R = a socket's open time):
 *    3  S3 stops (12 s outage: uploads retry, then spool; the drainer empties it later)
 *    5  malformed frames: "{not json", a truncated frame naming ethusdt, and a
 *       well-formed frame of a stream nobody subscribed to
 *    8  first planned rotation (WS_ROTATE_SECONDS=8; the exchange would cut at 12 s), ~8 s apart
 *   15  S3 back
 *   20  dropAll: every TCP connection cut without a close frame; reconnect at R
 *  R+1.5  a second frame of the unsubscribed stream, on the new socket
 *  R+3.5  stall 1, 4 s, well before R's rotation: stale, disconnected, reconnect, gap
 *  ≥35.5  SIGKILL, ~450 ms into a fresh BTCUSDT batch (its journal holds it: a `recovered` line)
 *   +2 s  restart: second process, same env and DATA_DIR; it connects at C
 *  C+6.5  stall 2, 3 s, across C's planned rotation at C+8: the successor opens
 *         while the old socket is silent, and the old one is found stale after that
 *   50  S3 stops for 5 s
 *   60  SIGTERM; the process must exit 0 within 10 s
 *
 * Only an explicit gap line (or, across the SIGKILL, a `recovered` line or the
 * restarted run's `connected`) counts as marking a chain break; every stall
 * must leave a `stale` line.
 */

import assert from "node:assert/strict";
import { gunzipSync } from "node:zlib";
import {
  diffDepthFeed,
  FakeExchange,
  loadFixturePayloads,
  replayFeed,
  type SentFrame,
} from "./support/fake_exchange.ts";
import { type ArchivedLine, rawData, runCollector, spawnCollector } from "./support/collector.ts";
import { TestS3 } from "./support/s3.ts";
import { listFiles, tempDir } from "./support/temp.ts";
import { delay, waitFor } from "./support/wait.ts";
// The bucket ends up with more objects than one ListObjectsV2 page: let s3rver page under Deno.
import "./support/s3rver_paging.ts";
import { parseKey } from "../src/archive/keys.ts";
import type { Report } from "../src/verify/audit.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url);
const BTC = "btcusdt@depth@100ms";
const ETH = "ethusdt@depth@100ms";
const BNB = "bnbusdt@depth@100ms";
const STREAMS = [BTC, ETH, BNB];
/** A stream the collector never subscribed to. */
const UNKNOWN = "xrpusdt@depth@100ms";
const PREFIX = "binance";
/** Frames the exchange wrote this long before a dropAll may still be in the relay when it cuts. */
const DROP_IN_FLIGHT_MS = 250;
/** Before the SIGKILL, this much may be lost (the journal is flushed every 250 ms). */
const KILL_WINDOW_MS = 1000;
/**
 * README's promise: a SIGKILL loses at most the last quarter second (the
 * journal's flush interval) plus however late the flush runs on a busy
 * machine, allowed 250 ms here.
 */
const KILL_TAIL_MS = 500;

function payloadOf(frame: SentFrame): string {
  return frame.text.slice(`{"stream":"${frame.stream}","data":`.length, -1);
}

/**
 * Every object in the bucket, grouped by its stream partition
 * (`<symbol lower>@<stream type>`), objects in the order `verify` reads them
 * (first receive time, instance, batch number), lines in object order.
 */
async function readBucket(
  s3: TestS3,
): Promise<{ objects: number; byPartition: Map<string, ArchivedLine[]> }> {
  const keys = await s3.keys(`${PREFIX}/exchange=binance/`);
  const parsed = keys.map((key) => {
    const parts = parseKey(key);
    if (!parts) throw new Error(`object outside the archive layout: ${key}`);
    return { key, parts };
  });
  parsed.sort((a, b) =>
    a.parts.firstRecvTs - b.parts.firstRecvTs ||
    (a.parts.instanceId < b.parts.instanceId
      ? -1
      : a.parts.instanceId > b.parts.instanceId
      ? 1
      : 0) ||
    a.parts.seq - b.parts.seq
  );
  const byPartition = new Map<string, ArchivedLine[]>();
  for (const { key, parts } of parsed) {
    const partition = `${parts.symbol.toLowerCase()}@${parts.streamType}`;
    const { body } = await s3.get(key);
    const text = new TextDecoder().decode(gunzipSync(body));
    const list = byPartition.get(partition) ?? [];
    text.split("\n").forEach((t, i) => {
      if (t !== "") list.push({ key, lineNo: i + 1, text: t, value: JSON.parse(t) });
    });
    byPartition.set(partition, list);
  }
  return { objects: keys.length, byPartition };
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

Deno.test({
  name: "chaos: S3 outages, drops, stalls, rotations, malformed frames, SIGKILL + restart, SIGTERM",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    // Server pings as Binance sends them (here every second, a pong due within 5 s), through
    // every drop, stall and cut below: an unanswered one would cut a connection (pong-timeout).
    await using exchange = await FakeExchange.start({
      lifetimeMs: 12_000,
      pings: { intervalMs: 1000, deadlineMs: 5000 },
    });
    for (const [stream, file] of [[BTC, "btcusdt"], [ETH, "ethusdt"]]) {
      const payloads = await loadFixturePayloads(
        new URL(`spot_diff_${file}_2024-08-08.ndjson.gz`, FIXTURES),
      );
      exchange.setFeed(stream, replayFeed({ rate: 20, payloads }));
    }
    exchange.setFeed(BNB, diffDepthFeed({ rate: 20, symbol: "BNBUSDT" }));
    await using s3 = await TestS3.start();
    await using data = await tempDir("l2-chaos-");
    const env = {
      ...s3.env(),
      S3_PREFIX: PREFIX,
      SYMBOL: "BTCUSDT,ETHUSDT,BNBUSDT",
      DEPTH_LEVEL: "full",
      BINANCE_WS_URL: exchange.wsUrl,
      BINANCE_REST_URL: exchange.restUrl,
      DATA_DIR: data.path,
      BATCH_SECONDS: "1",
      STALE_AFTER_SECONDS: "2",
      WS_ROTATE_SECONDS: "8",
      METRICS_ADDR: "off",
      INSTANCE_ID: "chaos",
    };

    const timeline: string[] = [];
    let t0 = Date.now();
    const mark = (what: string) =>
      timeline.push(`${seconds(Date.now() - t0).padStart(8)}  ${what}`);
    const untilMs = async (at: number) => {
      if (at > Date.now()) await delay(at - Date.now());
    };
    const until = (s: number) => untilMs(t0 + s * 1000);
    /** Waits (up to 3 s) until exactly one socket is open, so a raw frame reaches one socket only. */
    const oneSocket = () =>
      waitFor(() => exchange.openCount === 1, 3000, "a single open socket", 25);

    /**
     * Each step runs as part of this one scenario, in order: a failed step
     * stops the ones after it, which build on its state.
     */
    const step = async (name: string, fn: () => Promise<void>) => {
      const ok = await t.step({ name, fn, sanitizeOps: false, sanitizeResources: false });
      if (!ok) throw new Error(`chaos step failed: ${name}`);
    };
    // What the steps learn and later steps check.
    const notJson = "{not json";
    const truncated = `{"stream":"${ETH}","data":{"e":"depthUpdate","U":`;
    let unknown1 = "";
    let unknown2 = "";
    let dropAt = 0;
    let droppedConns: number[] = [];
    let reconnectAt = 0;
    let stall1At = 0;
    let killAt = 0;
    let restartAt = 0;
    let secondConnectAt = 0;
    let stall2At = 0;
    let sentBeforeTerm = new Map<string, SentFrame[]>();
    let objects = 0;
    let byPartition = new Map<string, ArchivedLine[]>();
    let p1Conns = new Set<number>();
    let dropped = new Set<number>();
    let allLines: ArchivedLine[] = [];
    const failures: string[] = [];
    const fail = (message: string) => failures.push(message);
    const notes: string[] = [];
    const chainBreaks = new Map<string, number>();

    await using first = spawnCollector(env);
    await step("first run: connect, S3 stops, malformed frames, S3 back", async () => {
      await waitFor(() => exchange.openCount > 0, 20_000, "the first run to connect");
      t0 = exchange.connections[0].openedAt;
      mark("first run connected");

      await until(3);
      await s3.stop();
      mark("S3 stopped");

      await until(5);
      await oneSocket();
      unknown1 =
        `{"e":"depthUpdate","E":${Date.now()},"s":"XRPUSDT","U":1000,"u":1001,"b":[],"a":[]}`;
      const rawSends = [
        exchange.sendRaw(notJson),
        exchange.sendRaw(truncated),
        exchange.sendRaw(`{"stream":"${UNKNOWN}","data":${unknown1}}`),
      ];
      assert.deepEqual(rawSends, [1, 1, 1], "each raw frame should reach exactly one socket");
      mark("sent 2 malformed frames and 1 frame of an unsubscribed stream");

      await until(15);
      await s3.resume();
      mark("S3 resumed");
    });

    await step("first run: dropAll, reconnect, stall 1", async () => {
      await until(20);
      dropAt = Date.now();
      droppedConns = exchange.connections.filter((c) => c.closedAt === undefined).map((c) => c.id);
      exchange.dropAll();
      mark(`dropAll (connections ${droppedConns.join(", ")})`);

      // The socket that replaced the dropped ones: its planned rotation is 8 s after it opened.
      await waitFor(
        () => exchange.connections.some((c) => c.openedAt > dropAt),
        10_000,
        "a reconnect after dropAll",
      );
      reconnectAt = exchange.connections.find((c) => c.openedAt > dropAt)!.openedAt;
      mark("reconnected");

      await untilMs(reconnectAt + 1500);
      await oneSocket();
      unknown2 =
        `{"e":"depthUpdate","E":${Date.now()},"s":"XRPUSDT","U":5000,"u":5003,"b":[],"a":[]}`;
      assert.equal(exchange.sendRaw(`{"stream":"${UNKNOWN}","data":${unknown2}}`), 1);
      mark("sent a second frame of the unsubscribed stream");

      // Stall 1, 4.5 s before that socket's planned rotation: the watchdog finds
      // it silent with no successor open (stale, disconnected, reconnect with backoff).
      await untilMs(reconnectAt + 3500);
      stall1At = Date.now();
      exchange.stall(4000);
      mark("stall 4 s");
    });

    // SIGKILL in the middle of a batch: a new BTCUSDT object means its next
    // batch just opened; 450 ms later the journal holds its first lines.
    await step("first run: SIGKILL in the middle of a batch", async () => {
      await until(35.5);
      const btcPrefix =
        `${PREFIX}/exchange=binance/market=spot/channel=depth@100ms/symbol=BTCUSDT/`;
      const before = (await s3.keys(btcPrefix)).length;
      // The precondition of this step: without an upload to time it, the kill
      // would not be known to fall inside a batch, and the test would prove less.
      await waitFor(
        async () => (await s3.keys(btcPrefix)).length > before,
        10_000,
        "a BTCUSDT upload before the SIGKILL (S3 is up and batches are 1 s)",
        25,
      );
      await delay(450);
      killAt = Date.now();
      first.kill("SIGKILL");
      await first.status;
      mark("SIGKILL (450 ms after a BTCUSDT upload)");

      await delay(2000);
      restartAt = Date.now();
    });
    await using second = spawnCollector(env);
    await step("second run: recovery, stall 2 across a rotation, S3 outage, SIGTERM", async () => {
      // The second run's connections: opened after it started. One the first
      // run was opening when it was killed may open on the exchange's side a
      // moment after `killAt` (the upgrade request was already on its way).
      await waitFor(
        () => exchange.connections.some((c) => c.openedAt >= restartAt),
        20_000,
        "the second run to connect",
      );
      secondConnectAt = Math.min(
        ...exchange.connections.filter((c) => c.openedAt >= restartAt).map((c) => c.openedAt),
      );
      timeline.push(`${seconds(restartAt - t0).padStart(8)}  second run started`);
      mark("second run connected");

      // Stall 2, across the second run's first planned rotation (8 s after it
      // connected): the successor opens while the old socket is silent, and the
      // watchdog finds the old one stale only after that.
      await untilMs(secondConnectAt + 6500);
      stall2At = Date.now();
      exchange.stall(3000);
      mark("stall 3 s, across a planned rotation");

      await until(50);
      await s3.stop();
      mark("S3 stopped");
      await until(55);
      await s3.resume();
      mark("S3 resumed");

      await until(60);
      sentBeforeTerm = new Map(
        [...STREAMS, ""].map((s) => [s, exchange.sentFor(s)] as const),
      );
      const termAt = Date.now();
      second.kill("SIGTERM");
      const status = await second.status;
      const exitMs = Date.now() - termAt;
      mark(`SIGTERM; exit code ${status.code} after ${exitMs} ms`);
      assert.equal(status.code, 0, `second run exit code ${status.code}:\n${second.stderr()}`);
      assert.ok(
        exitMs < 10_000,
        `second run took ${exitMs} ms to exit after SIGTERM (README: 10 s)`,
      );
      assert.match(
        second.stderr(),
        /Recovered \d+ batches/,
        "the restart should recover the journal",
      );

      const closedBy: Record<string, number> = {};
      for (const c of exchange.connections) {
        const why = c.closedBy ?? "open";
        closedBy[why] = (closedBy[why] ?? 0) + 1;
      }
      timeline.push(`connections: ${exchange.connections.length} ${JSON.stringify(closedBy)}`);
      const pongs = exchange.connections.reduce((sum, c) => sum + c.pongs, 0);
      assert.equal(closedBy["pong-timeout"], undefined, "every ping was answered in time");
      assert.ok(pongs > 0, "the pings were answered");
      for (const c of exchange.connections) {
        const closed = c.closedAt === undefined
          ? "open"
          : `${seconds(c.closedAt - t0)} (${c.closedBy})`;
        timeline.push(`  conn ${c.id}: opened ${seconds(c.openedAt - t0)}, closed ${closed}`);
      }
    });

    // ---------------------------------------------------------------------
    // Read the bucket back.
    await step(
      "archive: every message once, every chain break marked, the faults told",
      async () => {
        ({ objects, byPartition } = await readBucket(s3));
        p1Conns = new Set(
          exchange.connections.filter((c) => c.openedAt < restartAt).map((c) => c.id),
        );
        dropped = new Set(droppedConns);
        allLines = [...byPartition.values()].flat();

        for (const stream of STREAMS) {
          const lines = byPartition.get(stream) ?? [];
          const own = lines.filter((l) => l.value.stream === stream);
          const dataLines = own.filter((l) => l.value.event === undefined);
          const stored = new Map<string, number>();
          for (const l of dataLines) {
            const p = rawData(l);
            stored.set(p, (stored.get(p) ?? 0) + 1);
          }

          // (2) nothing stored twice
          const twice = [...stored].filter(([, n]) => n > 1);
          if (twice.length > 0) fail(`${stream}: ${twice.length} payload(s) stored more than once`);

          // (1) everything the exchange wrote before SIGTERM is stored, except the SIGKILL tail
          const copies = new Map<string, SentFrame[]>();
          for (const f of sentBeforeTerm.get(stream)!) {
            const p = payloadOf(f);
            const list = copies.get(p) ?? [];
            list.push(f);
            copies.set(p, list);
          }
          const excusedKill = (f: SentFrame) =>
            p1Conns.has(f.connId) && f.at >= killAt - KILL_WINDOW_MS;
          const excusedDrop = (f: SentFrame) =>
            dropped.has(f.connId) && f.at >= dropAt - DROP_IN_FLIGHT_MS && f.at <= dropAt;
          const missing: SentFrame[] = [];
          const lostToKill: SentFrame[] = [];
          const lostToDrop: SentFrame[] = [];
          for (const [p, fs] of copies) {
            if (stored.has(p)) continue;
            const firstCopy = fs.reduce((a, b) => (a.at <= b.at ? a : b));
            if (fs.every(excusedKill)) lostToKill.push(firstCopy);
            else if (fs.every((f) => excusedKill(f) || excusedDrop(f))) lostToDrop.push(firstCopy);
            else missing.push(firstCopy);
          }
          if (copies.size < 800) fail(`${stream}: only ${copies.size} distinct messages sent`);
          if (missing.length > 0) {
            const sample = missing.slice(0, 5).map((f) =>
              `conn ${f.connId} at ${seconds(f.at - t0)}`
            );
            fail(
              `${stream}: ${missing.length} of ${copies.size} sent messages are not in S3 ` +
                `(first: ${sample.join("; ")})`,
            );
          }
          // What the SIGKILL took is the tail of the first run: nothing after it was kept.
          const p1Stored = [...copies].filter(([p, fs]) =>
            stored.has(p) && fs.some((f) => p1Conns.has(f.connId))
          ).map(([, fs]) => Math.min(...fs.map((f) => f.at)));
          const lastP1Stored = Math.max(...p1Stored);
          const notTail = lostToKill.filter((f) => f.at < lastP1Stored);
          if (notTail.length > 0) {
            fail(
              `${stream}: ${notTail.length} message(s) lost before the SIGKILL although later ones ` +
                `of the first run were kept (a hole, not a lost tail)`,
            );
          }
          const lostSpan = lostToKill.length === 0
            ? 0
            : killAt - Math.min(...lostToKill.map((f) => f.at));
          if (lostSpan > KILL_TAIL_MS) {
            fail(
              `${stream}: the SIGKILL lost ${lostToKill.length} message(s) from the last ${lostSpan} ms ` +
                `(README promises the last ${KILL_TAIL_MS} ms at most)`,
            );
          }
          // Frames sent to the second run: all stored.
          const p2Sent = [...copies.values()].filter((fs) =>
            fs.some((f) => f.at >= secondConnectAt)
          )
            .length;
          notes.push(
            `${stream}: ${copies.size} sent, ${dataLines.length} stored, ` +
              `${lostToKill.length} lost to the SIGKILL (last ${lostSpan} ms before it), ` +
              `${lostToDrop.length} in flight at dropAll, ${p2Sent} sent to the second run`,
          );

          // (3) every break of the stored chain is marked between the two messages
          let last: { u: number; ts: number } | undefined;
          let since: ArchivedLine[] = [];
          let breaks = 0;
          const unmarked: string[] = [];
          const how: Record<string, number> = {};
          for (const l of own) {
            if (l.value.event !== undefined) {
              since.push(l);
              continue;
            }
            const { U, u } = l.value.data as { U: number; u: number };
            if (last !== undefined && U > last.u + 1) {
              breaks++;
              const gap = since.find((e) =>
                e.value.event === "gap" && e.value.expected === last!.u + 1 &&
                e.value.received === U
              );
              const spansKill = last.ts < killAt * 1000 && l.value.recv_ts >= restartAt * 1000;
              const crash = spansKill
                ? since.find((e) => e.value.event === "recovered") ??
                  since.find((e) =>
                    e.value.event === "connected" && e.value.recv_ts >= restartAt * 1000
                  )
                : undefined;
              const marker = gap ?? crash;
              if (marker) how[marker.value.event!] = (how[marker.value.event!] ?? 0) + 1;
              else {
                unmarked.push(
                  `U=${U} after u=${last.u} at ${l.key.split("/").at(-1)}:${l.lineNo} ` +
                    `(events between: ${since.map((e) => e.value.event).join(",") || "none"})`,
                );
              }
            } else if (last !== undefined && u <= last.u) {
              fail(`${stream}: u=${u} stored again after u=${last.u} (${l.key}:${l.lineNo})`);
            }
            last = { u: Math.max(u, last?.u ?? u), ts: l.value.recv_ts };
            since = [];
          }
          if (unmarked.length > 0) {
            fail(
              `${stream}: ${unmarked.length} of ${breaks} chain breaks unmarked: ${
                unmarked.join("; ")
              }`,
            );
          }
          chainBreaks.set(stream, breaks);
          notes.push(`${stream}: ${breaks} chain breaks, marked by ${JSON.stringify(how)}`);

          // (6) the archive tells what happened
          const events: Record<string, number> = {};
          for (const l of own) {
            if (l.value.event) events[l.value.event] = (events[l.value.event] ?? 0) + 1;
          }
          notes.push(`${stream}: events ${JSON.stringify(events)}`);
          for (const name of ["rotated", "disconnected", "gap", "connected"]) {
            if (!events[name]) fail(`${stream}: 0 "${name}" event lines`);
          }
          // A link silent for longer than STALE_AFTER_SECONDS is found stale, and the archive says so.
          const stalls = [["stall 1", stall1At, 4000], ["stall 2", stall2At, 3000]] as const;
          for (const [name, at, ms] of stalls) {
            const during = own.filter((l) =>
              l.value.event !== undefined && l.value.recv_ts >= at * 1000 &&
              l.value.recv_ts <= (at + ms + 2000) * 1000
            );
            const said = during.map((e) =>
              `${e.value.event}${e.value.cause ? `(${e.value.cause})` : ""}` +
              `${e.value.confirmed === false ? "(unconfirmed)" : ""}`
            ).join(", ");
            notes.push(`${stream}: ${name} marked by: ${said || "nothing"}`);
            if (!during.some((e) => e.value.event === "stale")) {
              const rotated = during.find((e) => e.value.event === "rotated");
              fail(
                `${stream}: ${name} (link silent ${ms} ms, STALE_AFTER_SECONDS=2): 0 "stale" event ` +
                  `lines; the archive says: ${said || "nothing"}` +
                  (rotated ? `; ${rotated.text}` : ""),
              );
            }
          }
          // Planned rotations at ~8 and ~16 s in the first run and ~8 s into the second.
          if ((events.rotated ?? 0) < 3) {
            fail(`${stream}: ${events.rotated ?? 0} rotations (want >= 3)`);
          }
          const snapshots = lines.filter((l) =>
            l.value.stream === `${stream.split("@")[0]}@depthSnapshot`
          );
          if (snapshots.length < 2) fail(`${stream}: ${snapshots.length} snapshots (want >= 2)`);
        }
      },
    );

    await step(
      "archive: malformed and unsubscribed frames kept once, the spool empty",
      async () => {
        // The malformed frames are kept exactly once, raw, under the stream they name (else the first).
        const rawIn = (stream: string, raw: string) =>
          (byPartition.get(stream) ?? []).filter((l) =>
            l.value.event === "malformed" && l.value.raw === raw && l.value.stream === stream
          ).length;
        const notJsonKept = rawIn(BTC, notJson);
        if (notJsonKept !== 1) {
          fail(`${BTC}: "{not json" kept ${notJsonKept} times as malformed (want 1)`);
        }
        const truncatedKept = rawIn(ETH, truncated);
        if (truncatedKept !== 1) {
          fail(`${ETH}: the truncated frame naming it kept ${truncatedKept} times (want 1)`);
        }
        const recovered = allLines.filter((l) => l.value.event === "recovered").length;
        if (recovered === 0) {
          fail(`0 "recovered" event lines in ${objects} objects (SIGKILL mid-batch)`);
        }
        // A well-formed frame of a stream nobody subscribed to: kept once, as data or as an event.
        for (const [n, payload] of [[1, unknown1], [2, unknown2]] as const) {
          const frame = `{"stream":"${UNKNOWN}","data":${payload}}`;
          const asData = allLines.filter((l) =>
            l.value.stream === UNKNOWN && l.value.event === undefined && rawData(l) === payload
          ).length;
          const asEvent = allLines.filter((l) =>
            l.value.raw === frame
          ).length;
          if (asData + asEvent !== 1) {
            fail(
              `${UNKNOWN}: unsubscribed-stream frame #${n} kept ${asData} times as data and ` +
                `${asEvent} times as an event (want exactly once)`,
            );
          }
        }

        // (5) the spool is empty
        const spoolLeft = (await listFiles(`${data.path}/spool`)).filter((f) => !f.startsWith("."));
        if (spoolLeft.length > 0) {
          fail(`spool: ${spoolLeft.length} file(s) left: ${spoolLeft.join(", ")}`);
        }
        const spooled = (first.stderr().match(/Spooled /g) ?? []).length +
          (second.stderr().match(/Spooled /g) ?? []).length;
        const drained = (first.stderr().match(/Uploaded spooled /g) ?? []).length +
          (second.stderr().match(/Uploaded spooled /g) ?? []).length;
        if (spooled === 0) fail("0 batches spooled during two S3 outages");
        notes.push(`spool: ${spooled} batches spooled, ${drained} drained`);
        for (const [run, proc] of [["first", first], ["second", second]] as const) {
          for (const line of proc.stderr().split("\n")) {
            if (/closed \((stale|error|server)/.test(line)) {
              notes.push(`${run} run log: ${line.trim()}`);
            }
          }
        }
      },
    );

    // (4) verify: clean, or every problem explained by the archive itself
    await step("verify: clean, or every problem explained at a fault", async () => {
      const verified = await runCollector(env, { args: ["verify", "--json"], timeoutMs: 60_000 });
      let report: Report & { exitCode: number } | undefined;
      try {
        report = JSON.parse(verified.stdout);
      } catch {
        fail(
          `verify --json printed no JSON (exit ${verified.code}): ${verified.stderr.slice(0, 500)}`,
        );
      }
      if (report) {
        const unexplained = report.problems.filter((p) => !p.explained);
        if (unexplained.length > 0 || report.problemsOmitted > 0 || verified.code !== 0) {
          fail(
            `verify exit ${verified.code}: ${unexplained.length} unexplained problem(s), ` +
              `${report.problemsOmitted} omitted: ` +
              unexplained.slice(0, 10).map((p) => `${p.kind} ${p.stream} ${p.detail}`).join(" | "),
          );
        }
        // Every explained problem is a break or hole at one of the faults that lose messages.
        const windows: Array<[string, number, number]> = [
          ["dropAll", dropAt - 1000, reconnectAt + 1000],
          ["stall 1", stall1At - 1000, stall1At + 9000],
          ["SIGKILL", killAt - 1500, secondConnectAt + 3000],
          ["stall 2", stall2At - 1000, stall2At + 6000],
        ];
        const attributed: Record<string, number> = {};
        for (const p of report.problems) {
          const ms = (p.recvTs ?? 0) / 1000;
          const fault = windows.find(([, from, to]) => ms >= from && ms <= to)?.[0];
          if (!fault || (p.kind !== "break" && p.kind !== "hole")) {
            fail(
              `verify: ${p.kind} on ${p.stream} at ${seconds(ms - t0)} is not at a fault ` +
                `(${p.detail.slice(0, 200)})`,
            );
            continue;
          }
          const tag = `${p.stream} ${p.kind}@${fault}`;
          attributed[tag] = (attributed[tag] ?? 0) + 1;
          notes.push(
            `verify: ${p.kind} (explained) ${p.stream} at ${seconds(ms - t0)}: ${
              p.detail.split(";")[0].replace(/\(.*?\)/g, "")
            }`,
          );
        }
        notes.push(
          `verify exit ${verified.code}, ok ${report.ok}, ${report.problems.length} problems, ` +
            `${unexplained.length} unexplained: ${JSON.stringify(attributed)}`,
        );
        for (const stream of STREAMS) {
          const s = report.streams.find((r) => r.stream === stream);
          if (!s) {
            fail(`verify: no report for ${stream}`);
            continue;
          }
          if (s.duplicates !== 0) fail(`verify: ${stream} has ${s.duplicates} duplicates`);
          if (s.breaks !== chainBreaks.get(stream)) {
            fail(
              `verify: ${stream} has ${s.breaks} breaks, the archive ${chainBreaks.get(stream)}`,
            );
          }
          notes.push(
            `verify ${stream}: ${s.objects} objects, ${s.messages} messages, ${s.snapshots} ` +
              `snapshots, ${s.breaks} breaks, ${s.holes} holes (${s.holeMs} ms), ` +
              `coverage ${s.coveragePercent}%`,
          );
        }
      }
    });

    // deno-lint-ignore no-console -- the timeline and counts are the test's report
    console.log(["", "chaos timeline:", ...timeline, ...notes].join("\n  "));
    assert.deepEqual(failures, [], `chaos run found ${failures.length} problem(s)`);
  },
});
