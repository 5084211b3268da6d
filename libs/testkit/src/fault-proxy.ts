import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type { Readable, Writable } from "node:stream";
import { blobEndpointOf } from "./infra/azurite.js";
import { createTestContainers, type TestContainers } from "./isolation.js";

/**
 * What a rule does to a request. The body it acts on is the one being sent:
 * the request body of a PUT or POST (an upload), the response body otherwise
 * (a download).
 */
export type Fault =
  /** Answer with this status (and x-ms-error-code, as Blob Storage sends it) instead of forwarding. */
  | { kind: "status"; status: number; errorCode?: string }
  /** Pass this many body bytes, then drop the connection. */
  | { kind: "cut"; afterBytes: number }
  /** Pass this many body bytes, then send nothing more and keep the connection open. */
  | { kind: "stall"; afterBytes: number }
  /** Flip the byte at this offset of the body. */
  | { kind: "corrupt"; atByte: number };

/** Which requests a rule takes, and what it does to them. Every condition given must hold. */
export interface FaultRule {
  /** "GET", "PUT", …; any method when left out. */
  method?: string;
  /** Tested against the path and query, as sent. */
  path?: RegExp | ((pathAndQuery: string) => boolean);
  /** Tested against the range asked for (x-ms-range, else Range; undefined when the request has neither). */
  range?: RegExp | ((range: string | undefined) => boolean);
  /** How many matching requests it applies to (default 1; Infinity: every one). */
  times?: number;
  /** Wait this long before anything else (then forward, or apply `fault`). */
  delayMs?: number;
  fault?: Fault;
}

export interface SeenRequest {
  method: string;
  /** Path and query, as sent. */
  path: string;
  /** The byte range asked for: x-ms-range (as the storage SDK sends it, and Blob Storage prefers it) or Range. */
  range: string | undefined;
  /** Status sent back; 0 until the response starts, and for a request cut before any answer. */
  status: number;
  /** The fault applied to it, if a rule took it. */
  fault?: Fault["kind"] | "delay";
}

/**
 * A network like the one between a cloud VM and Blob Storage: each TCP
 * connection carries a limited rate (what one stream gets from the storage
 * front end and the TCP window over the round trip), the round trip adds
 * latency, and the VM's NIC caps all connections together.
 */
export interface LinkShape {
  /** Bytes per second one client connection carries in each direction; unlimited when left out. */
  connectionBytesPerSecond?: number;
  /** Bytes per second all connections together carry in each direction; unlimited when left out. */
  totalBytesPerSecond?: number;
  /**
   * Added round-trip time: each request's answer starts this much later, and
   * a new connection's first request one round trip more (its handshake).
   */
  rttMs?: number;
}

export interface FaultProxyOptions {
  /** Shape every connection's traffic like a cloud link (rules still apply on top). */
  shape?: LinkShape;
}

export interface FaultProxy {
  /** http://127.0.0.1:port */
  origin: string;
  /** Every request, in arrival order. */
  requests: SeenRequest[];
  /**
   * Tried in order for each request: the first rule that matches applies, and
   * is removed once it has applied `times` times. Push to add, empty to clear.
   */
  rules: FaultRule[];
  /** Forgets the requests seen and drops every rule. */
  reset(): void;
  /** The same URL through the proxy. */
  via(url: string): string;
  /** The same storage connection string with its BlobEndpoint through the proxy (the account path kept). */
  viaConnectionString(connectionString: string): string;
  /** Client connections accepted so far. */
  connections(): number;
  close(): Promise<void>;
}

/**
 * A real HTTP proxy in front of Azurite (or any origin) that records every
 * request and applies request-level faults: a status code, a delay, a
 * connection cut or stalled after N bytes, a corrupted byte — on downloads
 * (GET) and uploads (PUT) alike, the faults a client meets on a real network.
 * With `shape` it also paces every connection like a cloud link (rate per
 * connection, total rate, round-trip time).
 */
export async function startFaultProxy(upstream: string, options: FaultProxyOptions = {}): Promise<FaultProxy> {
  const target = new URL(upstream);
  const requests: SeenRequest[] = [];
  const rules: FaultRule[] = [];
  /** Stalled or delayed exchanges, ended by close(). */
  const held = new Set<() => void>();
  const link = options.shape ? new ShapedLink(options.shape) : undefined;
  let accepted = 0;

  const take = (seen: SeenRequest): FaultRule | undefined => {
    const i = rules.findIndex((rule) => matches(rule, seen));
    const rule = rules[i];
    if (!rule) return undefined;
    const left = (rule.times ?? 1) - 1;
    if (left <= 0) rules.splice(i, 1);
    else rule.times = left;
    return rule;
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    const range = (req.headers["x-ms-range"] as string | undefined) ?? req.headers.range;
    const seen: SeenRequest = { method: req.method ?? "", path: req.url ?? "", range, status: 0 };
    requests.push(seen);
    const rule = take(seen);
    const fault = rule?.fault;
    if (rule) seen.fault = fault?.kind ?? "delay";
    // A rule's delay, and on a shaped link the round trip (two for a new connection's handshake).
    const wait = (rule?.delayMs ?? 0) + (link?.latencyOf(req.socket) ?? 0);
    if (wait > 0) {
      const waited = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => {
          held.delete(stop);
          resolve(true);
        }, wait);
        const stop = () => {
          clearTimeout(timer);
          resolve(false);
        };
        held.add(stop);
      });
      // close() ended the wait: the proxy is going away.
      if (!waited) return void req.socket.destroy();
    }
    const pace = link?.pacersOf(req.socket);

    if (fault?.kind === "status") {
      req.resume();
      seen.status = fault.status;
      const code = fault.errorCode ?? "InjectedFault";
      res.writeHead(fault.status, { "content-type": "application/xml", "x-ms-error-code": code });
      res.end(`<?xml version="1.0" encoding="utf-8"?><Error><Code>${code}</Code></Error>`);
      return;
    }
    const upload = req.method === "PUT" || req.method === "POST";
    if (upload && fault?.kind === "cut" && fault.afterBytes === 0) {
      // Before a byte reaches the origin, as when the network fails at once.
      req.socket.destroy();
      return;
    }
    const upstreamReq = http.request(
      {
        host: target.hostname,
        port: target.port,
        method: req.method,
        path: req.url,
        // The Host the client named, as on a real network path: Azurite's Copy Blob checks a signed
        // source URL against it (CannotVerifyCopySource, a 404, when the URL names another host).
        headers: req.headers,
      },
      (up) => {
        seen.status = up.statusCode ?? 502;
        res.writeHead(seen.status, up.headers);
        res.on("close", () => up.destroy());
        relay(up, res, upload ? undefined : fault, pace?.down, {
          cut: (last) => {
            up.destroy();
            res.write(last, () => res.socket?.destroy());
          },
          stall: (last) => {
            up.destroy();
            res.write(last);
            held.add(() => res.socket?.destroy());
          },
        });
      },
    );
    upstreamReq.on("error", () => res.socket?.destroy());
    req.on("close", () => {
      if (!req.complete) upstreamReq.destroy();
    });
    relay(req, upstreamReq, upload ? fault : undefined, pace?.up, {
      cut: (last) =>
        upstreamReq.write(last, () => {
          upstreamReq.destroy();
          req.socket.destroy();
        }),
      stall: (last) => {
        upstreamReq.write(last);
        held.add(() => {
          upstreamReq.destroy();
          req.socket.destroy();
        });
      },
    });
  };

  const server = http.createServer((req, res) => void handle(req, res));
  server.on("connection", () => accepted++);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const origin = `http://127.0.0.1:${port}`;
  return {
    origin,
    requests,
    rules,
    reset: () => {
      requests.length = 0;
      rules.length = 0;
    },
    via: (url) => {
      const u = new URL(url);
      return `${origin}${u.pathname}${u.search}`;
    },
    viaConnectionString: (connectionString) => {
      const account = new URL(blobEndpointOf(connectionString)).pathname;
      return connectionString.replace(/BlobEndpoint=[^;]+/, `BlobEndpoint=${origin}${account}`);
    },
    connections: () => accepted,
    close: async () => {
      for (const end of held) end();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Fresh test containers (createTestContainers) with a fault proxy in front of their storage. */
export async function createProxiedTestContainers(
  label: string,
): Promise<{ containers: TestContainers; proxy: FaultProxy; stop(): Promise<void> }> {
  const containers = await createTestContainers(label);
  const proxy = await startFaultProxy(blobEndpointOf(containers.connectionString)).catch(async (err: unknown) => {
    await containers.cleanup();
    throw err;
  });
  return {
    containers,
    proxy,
    stop: async () => {
      await proxy.close();
      await containers.cleanup();
    },
  };
}

function matches(rule: FaultRule, seen: SeenRequest): boolean {
  if (rule.method !== undefined && rule.method.toUpperCase() !== seen.method) return false;
  if (rule.path !== undefined && !test(rule.path, seen.path)) return false;
  if (rule.range !== undefined) {
    if (typeof rule.range === "function") return rule.range(seen.range);
    return seen.range !== undefined && rule.range.test(seen.range);
  }
  return true;
}

const test = (pattern: RegExp | ((s: string) => boolean), s: string) =>
  typeof pattern === "function" ? pattern(s) : pattern.test(s);

/**
 * Spaces bytes out to a rate. A chunk is delivered when the link would have
 * finished carrying it; a little credit (BURST_MS) makes up for timers that
 * fire late, so the rate holds on a busy machine without exceeding it.
 */
class Pacer {
  private freeAt = 0;

  constructor(private readonly bytesPerMs: number) {}

  /** Books `bytes` on the link; milliseconds until they have crossed it. */
  book(bytes: number, now: number): number {
    const start = Math.max(this.freeAt, now - BURST_MS);
    this.freeAt = start + bytes / this.bytesPerMs;
    return this.freeAt - now;
  }
}

const BURST_MS = 10;

/** Milliseconds until `bytes` may be delivered. */
type Pace = (bytes: number) => number;

/** The pacers and round trips of one shaped proxy. */
class ShapedLink {
  private readonly total?: { up: Pacer; down: Pacer };
  private readonly perSocket = new WeakMap<Socket, { up: Pace; down: Pace }>();
  private readonly used = new WeakSet<Socket>();

  constructor(private readonly shape: LinkShape) {
    const rate = shape.totalBytesPerSecond;
    if (rate) this.total = { up: new Pacer(rate / 1000), down: new Pacer(rate / 1000) };
  }

  /** The round trip of a request, and one more for a new connection's handshake. */
  latencyOf(socket: Socket): number {
    const rtt = this.shape.rttMs ?? 0;
    if (this.used.has(socket)) return rtt;
    this.used.add(socket);
    return 2 * rtt;
  }

  /** Pacing of a connection's two directions: its own rate and the total, whichever is later. */
  pacersOf(socket: Socket): { up: Pace; down: Pace } | undefined {
    const existing = this.perSocket.get(socket);
    if (existing) return existing;
    const rate = this.shape.connectionBytesPerSecond;
    if (!rate && !this.total) return undefined;
    const direction = (total: Pacer | undefined): Pace => {
      const own = rate ? new Pacer(rate / 1000) : undefined;
      return (bytes) => {
        const now = performance.now();
        return Math.max(own?.book(bytes, now) ?? 0, total?.book(bytes, now) ?? 0);
      };
    };
    const paces = { up: direction(this.total?.up), down: direction(this.total?.down) };
    this.perSocket.set(socket, paces);
    return paces;
  }
}

/** Copies a body, paced when the link is shaped, applying a cut, stall or corrupt fault on the way. */
function relay(
  from: Readable,
  to: Writable,
  fault: Fault | undefined,
  pace: Pace | undefined,
  on: { cut: (last: Buffer) => void; stall: (last: Buffer) => void },
): void {
  let sent = 0;
  let stopped = false;
  /** A paced chunk waits for its time: the end (which a paused stream still emits) must wait for it. */
  let waiting = false;
  let ended = false;
  const send = (out: Buffer, paused: boolean) => {
    waiting = false;
    const more = to.write(out);
    if (ended) {
      to.end();
      return;
    }
    if (more) {
      if (paused) from.resume();
      return;
    }
    if (!paused) from.pause();
    to.once("drain", () => from.resume());
  };
  from.on("data", (chunk: Buffer) => {
    if (stopped) return;
    let out = chunk;
    if (fault?.kind === "corrupt" && fault.atByte >= sent && fault.atByte < sent + chunk.length) {
      out = Buffer.from(chunk);
      const i = fault.atByte - sent;
      out[i] = (out[i] as number) ^ 0xff;
    }
    if ((fault?.kind === "cut" || fault?.kind === "stall") && sent + out.length >= fault.afterBytes) {
      const last = out.subarray(0, Math.max(0, fault.afterBytes - sent));
      sent += last.length;
      stopped = true;
      from.pause();
      on[fault.kind](last);
      return;
    }
    sent += out.length;
    const wait = pace?.(out.length) ?? 0;
    if (wait < 1) return send(out, false);
    from.pause();
    waiting = true;
    setTimeout(() => send(out, true), wait);
  });
  from.on("end", () => {
    ended = true;
    if (!stopped && !waiting) to.end();
  });
}

/** The block index of a Put Block request (block ids are base64 "block-000042"), or -1 for any other request. */
export function putBlockIndex(url: string | URL): number {
  const u = typeof url === "string" ? new URL(url, "http://any") : url;
  const id = u.searchParams.get("blockid");
  if (u.searchParams.get("comp") !== "block" || !id) return -1;
  const match = /^block-(\d+)$/.exec(Buffer.from(id, "base64").toString("utf8"));
  return match ? Number(match[1]) : -1;
}
