/**
 * Server pings for the fake exchange (fake_exchange.ts). Binance pings every
 * WebSocket connection and disconnects one that does not answer with a pong
 * in time (BINANCE.md, "Connection rules": spot a ping every 20 s, pong within
 * a minute; USD-M every 3 min, within 10 min). `Deno.upgradeWebSocket`
 * sockets cannot send a ping nor report a pong, so the fake's TCP relay does
 * it: it reads the frames passing through a link (RFC 6455 §5.2: server
 * frames unmasked, client frames masked), writes a ping between two server
 * frames when one is due, and reads the client's pongs. A pong answers a ping
 * only with the ping's payload (RFC 6455 §5.5.3); any other is unsolicited
 * and answers nothing.
 */

/** How often a connection is pinged and how long it has to answer, ms. */
export interface PingSettings {
  readonly intervalMs: number;
  readonly deadlineMs: number;
}

/** BINANCE.md, "Connection rules": the documented ping interval and pong deadline per market. */
export const BINANCE_PINGS: Readonly<Record<"spot" | "usdm", PingSettings>> = {
  spot: { intervalMs: 20_000, deadlineMs: 60_000 },
  usdm: { intervalMs: 180_000, deadlineMs: 600_000 },
};

/** What a link tells the exchange; `port` is the link's local port towards the server. */
export interface PingHooks {
  /** Whether the exchange writes anything now (false while it is stalled). */
  canPing(): boolean;
  ping(port: number): void;
  /** A pong arrived; `answered` when it carried an outstanding ping's payload. */
  pong(port: number, answered: boolean): void;
  /** A ping went unanswered past the deadline: the link is cut right after. */
  timeout(port: number): void;
}

const OPCODE_PING = 0x9;
const OPCODE_PONG = 0xa;
const HEAD_END = "\r\n\r\n";

/**
 * Follows WebSocket frames through a byte stream cut anywhere: where each
 * frame ends, and the payload of each control frame (at most 125 bytes),
 * unmasked.
 */
export class FrameReader {
  #header: number[] = [];
  /** payload bytes of the current frame still to come */
  #left = 0;
  /** the current frame's control payload being collected, when it is a control frame */
  #control: { opcode: number; mask?: number[]; payload: number[] } | undefined;

  /** No frame is partly read: a frame may be inserted here. */
  get atBoundary(): boolean {
    return this.#header.length === 0 && this.#left === 0;
  }

  /**
   * Reads `bytes`; returns the offsets within them at which a frame ended,
   * and hands each whole control frame to `onControl`.
   */
  feed(bytes: Uint8Array, onControl?: (opcode: number, payload: Uint8Array) => void): number[] {
    const ends: number[] = [];
    let i = 0;
    while (i < bytes.length) {
      if (this.#left > 0) {
        const take = Math.min(this.#left, bytes.length - i);
        if (this.#control) this.#control.payload.push(...bytes.subarray(i, i + take));
        i += take;
        this.#left -= take;
        if (this.#left === 0) this.#endFrame(ends, i, onControl);
        continue;
      }
      this.#header.push(bytes[i++]);
      if (this.#header.length < headerLength(this.#header)) continue;
      this.#startPayload();
      if (this.#left === 0) this.#endFrame(ends, i, onControl);
    }
    return ends;
  }

  #startPayload(): void {
    const h = this.#header;
    const len7 = h[1] & 0x7f;
    const extra = len7 === 126 ? 2 : len7 === 127 ? 8 : 0;
    let length = len7;
    if (extra > 0) {
      length = 0;
      for (let k = 2; k < 2 + extra; k++) length = length * 256 + h[k];
    }
    const opcode = h[0] & 0x0f;
    const mask = (h[1] & 0x80) !== 0 ? h.slice(2 + extra, 6 + extra) : undefined;
    this.#control = (opcode & 0x8) !== 0 ? { opcode, mask, payload: [] } : undefined;
    this.#left = length;
    this.#header = [];
  }

  #endFrame(
    ends: number[],
    at: number,
    onControl?: (opcode: number, payload: Uint8Array) => void,
  ): void {
    ends.push(at);
    const control = this.#control;
    this.#control = undefined;
    if (!control || !onControl) return;
    const mask = control.mask;
    const payload = Uint8Array.from(control.payload, (b, k) => mask ? b ^ mask[k % 4] : b);
    onControl(control.opcode, payload);
  }
}

/** Bytes of a frame header once its first two bytes are known (2 until then). */
function headerLength(header: readonly number[]): number {
  if (header.length < 2) return 2;
  const len7 = header[1] & 0x7f;
  const masked = (header[1] & 0x80) !== 0;
  return 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (masked ? 4 : 0);
}

/**
 * Pings one link's client once it upgraded to WebSocket (the server answered
 * 101), and watches for the pongs. Driven by the link: `fromServer` for each
 * chunk the server wrote (it returns what to forward, a due ping inserted at a
 * frame boundary), `fromClient` for each chunk forwarded to the server.
 */
export class Pinger {
  readonly #settings: PingSettings;
  readonly #hooks: PingHooks;
  readonly #port: number;
  /** Queues bytes to the client behind those already queued. */
  readonly #write: (bytes: Uint8Array) => void;
  #phase: "head" | "frames" | "off" = "head";
  #head = "";
  readonly #fromServer = new FrameReader();
  readonly #fromClient = new FrameReader();
  #timer: ReturnType<typeof setInterval> | undefined;
  #nextPingAt = 0;
  #pending = false;
  #count = 0;
  /** pings not answered yet, oldest first (performance.now() when written) */
  readonly #outstanding: Array<{ payload: string; at: number }> = [];

  constructor(
    options: {
      settings: PingSettings;
      hooks: PingHooks;
      port: number;
      write: (bytes: Uint8Array) => void;
    },
  ) {
    this.#settings = options.settings;
    this.#hooks = options.hooks;
    this.#port = options.port;
    this.#write = options.write;
  }

  /** The pieces to forward to the client for this chunk of the server's bytes. */
  fromServer(chunk: Uint8Array): Uint8Array[] {
    if (this.#phase === "off") return [chunk];
    let start = 0;
    if (this.#phase === "head") {
      const framesAt = this.#readHead(chunk);
      if (framesAt === undefined) return [chunk];
      start = framesAt;
    }
    const ends = this.#fromServer.feed(chunk.subarray(start)).map((end) => end + start);
    const at = ends[0];
    if (!this.#pending || at === undefined) return [chunk];
    this.#pending = false;
    return [chunk.subarray(0, at), this.#ping(), chunk.subarray(at)];
  }

  /** Reads a chunk the client sent (and the server gets): pongs. */
  fromClient(chunk: Uint8Array): void {
    if (this.#phase !== "frames") return;
    this.#fromClient.feed(chunk, (opcode, payload) => {
      if (opcode !== OPCODE_PONG) return;
      const text = new TextDecoder().decode(payload);
      const answered = this.#outstanding.findIndex((p) => p.payload === text);
      // A pong answers its ping and any older one still open.
      if (answered >= 0) this.#outstanding.splice(0, answered + 1);
      this.#hooks.pong(this.#port, answered >= 0);
    });
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#phase = "off";
  }

  /**
   * Reads the HTTP head; returns where the frames start in `chunk` once it
   * ended with 101 Switching Protocols, undefined until then (or never).
   */
  #readHead(chunk: Uint8Array): number | undefined {
    const before = this.#head.length;
    this.#head += String.fromCharCode(...chunk.subarray(0, Math.min(chunk.length, 4096)));
    const end = this.#head.indexOf(HEAD_END);
    if (end < 0) {
      if (this.#head.length > 16_384) this.#phase = "off";
      return undefined;
    }
    if (!this.#head.startsWith("HTTP/1.1 101")) {
      this.#phase = "off"; // a REST answer: no WebSocket on this link
      return undefined;
    }
    this.#phase = "frames";
    this.#nextPingAt = performance.now() + this.#settings.intervalMs;
    const step = Math.max(5, Math.min(this.#settings.intervalMs, this.#settings.deadlineMs) / 5);
    this.#timer = setInterval(() => this.#tick(), step);
    return end + HEAD_END.length - before;
  }

  #tick(): void {
    const now = performance.now();
    const oldest = this.#outstanding[0];
    if (oldest && now - oldest.at > this.#settings.deadlineMs) {
      this.stop();
      this.#hooks.timeout(this.#port);
      return;
    }
    if (now < this.#nextPingAt) return;
    // Behind by more than an interval (this process was stalled): one ping now, none to catch
    // up with (a burst of pongs would break the message rate for nothing the client did).
    const next = this.#nextPingAt + this.#settings.intervalMs;
    this.#nextPingAt = next <= now ? now + this.#settings.intervalMs : next;
    if (!this.#hooks.canPing() || this.#pending) return;
    if (this.#fromServer.atBoundary) this.#write(this.#ping());
    else this.#pending = true; // written between the server's next two frames
  }

  /** The next ping frame (unmasked, FIN, payload `ping <n>`), counted as outstanding. */
  #ping(): Uint8Array {
    const payload = new TextEncoder().encode(`ping ${++this.#count}`);
    this.#outstanding.push({ payload: `ping ${this.#count}`, at: performance.now() });
    this.#hooks.ping(this.#port);
    return Uint8Array.of(0x80 | OPCODE_PING, payload.length, ...payload);
  }
}
