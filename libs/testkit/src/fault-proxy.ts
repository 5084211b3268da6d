import http from "node:http";
import type { AddressInfo } from "node:net";
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
  /** Tested against the Range header (undefined when the request has none). */
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
  range: string | undefined;
  /** Status sent back; 0 until the response starts, and for a request cut before any answer. */
  status: number;
  /** The fault applied to it, if a rule took it. */
  fault?: Fault["kind"] | "delay";
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
  close(): Promise<void>;
}

/**
 * A real HTTP proxy in front of Azurite (or any origin) that records every
 * request and applies request-level faults: a status code, a delay, a
 * connection cut or stalled after N bytes, a corrupted byte — on downloads
 * (GET) and uploads (PUT) alike, the faults a client meets on a real network.
 */
export async function startFaultProxy(upstream: string): Promise<FaultProxy> {
  const target = new URL(upstream);
  const requests: SeenRequest[] = [];
  const rules: FaultRule[] = [];
  /** Stalled or delayed exchanges, ended by close(). */
  const held = new Set<() => void>();

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
    const seen: SeenRequest = { method: req.method ?? "", path: req.url ?? "", range: req.headers.range, status: 0 };
    requests.push(seen);
    const rule = take(seen);
    const fault = rule?.fault;
    if (rule) seen.fault = fault?.kind ?? "delay";
    if (rule?.delayMs) {
      const waited = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => {
          held.delete(stop);
          resolve(true);
        }, rule.delayMs);
        const stop = () => {
          clearTimeout(timer);
          resolve(false);
        };
        held.add(stop);
      });
      // close() ended the wait: the proxy is going away.
      if (!waited) return void req.socket.destroy();
    }

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
        headers: { ...req.headers, host: target.host },
      },
      (up) => {
        seen.status = up.statusCode ?? 502;
        res.writeHead(seen.status, up.headers);
        res.on("close", () => up.destroy());
        relay(up, res, upload ? undefined : fault, {
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
    relay(req, upstreamReq, upload ? fault : undefined, {
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

/** Copies a body, applying a cut, stall or corrupt fault on the way. */
function relay(
  from: Readable,
  to: Writable,
  fault: Fault | undefined,
  on: { cut: (last: Buffer) => void; stall: (last: Buffer) => void },
): void {
  let sent = 0;
  let stopped = false;
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
    if (!to.write(out)) {
      from.pause();
      to.once("drain", () => from.resume());
    }
  });
  from.on("end", () => {
    if (!stopped) to.end();
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
