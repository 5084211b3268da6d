import http from "node:http";
import type { AddressInfo } from "node:net";

/** What the proxy does to one forwarded response. */
export type Fault =
  /** Forward this many body bytes, then cut the connection. */
  | { kind: "cut"; afterBytes: number }
  /** Flip the byte at this offset of the body. */
  | { kind: "corrupt"; atByte: number }
  /** Answer with this status instead of forwarding. */
  | { kind: "status"; status: number }
  /** Forward this many body bytes, then send nothing more. */
  | { kind: "stall"; afterBytes: number };

export interface SeenRequest {
  method: string;
  /** Path and query, as sent. */
  path: string;
  range: string | undefined;
  /** Status sent back (0 until the response starts). */
  status: number;
}

export interface FaultProxy {
  /** http://127.0.0.1:port */
  origin: string;
  /** Every GET forwarded to a blob, in arrival order. */
  requests: SeenRequest[];
  /** Faults applied to the next matching GET responses, one each, in order. */
  faults: Fault[];
  /** Which GETs faults apply to (default: every GET). */
  faultWhen: (url: string) => boolean;
  /** The same URL through the proxy. */
  via(url: string): string;
  close(): Promise<void>;
}

/**
 * A real HTTP proxy in front of Azurite (or any origin) that counts blob
 * GETs and can cut, corrupt, stall or refuse a response: the faults a
 * download meets on a real network.
 */
export async function startFaultProxy(upstream: string): Promise<FaultProxy> {
  const target = new URL(upstream);
  const proxy = { faultWhen: () => true } as unknown as FaultProxy;
  const requests: SeenRequest[] = [];
  const faults: Fault[] = [];
  const stalled = new Set<http.ServerResponse>();
  const server = http.createServer((req, res) => {
    const url = req.url ?? "";
    const fault = req.method === "GET" && proxy.faultWhen(url) ? faults.shift() : undefined;
    const seen: SeenRequest = { method: req.method ?? "", path: url, range: req.headers.range, status: 0 };
    if (req.method === "GET") requests.push(seen);
    if (fault?.kind === "status") {
      seen.status = fault.status;
      res.writeHead(fault.status, { "content-type": "application/xml" });
      res.end(`<Error><Code>Injected</Code></Error>`);
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
        res.writeHead(up.statusCode ?? 502, up.headers);
        let sent = 0;
        up.on("data", (chunk: Buffer) => {
          let out = chunk;
          if (fault?.kind === "corrupt" && fault.atByte >= sent && fault.atByte < sent + chunk.length) {
            out = Buffer.from(chunk);
            const i = fault.atByte - sent;
            out[i] = (out[i] as number) ^ 0xff;
          }
          if ((fault?.kind === "cut" || fault?.kind === "stall") && sent + out.length >= fault.afterBytes) {
            const keep = out.subarray(0, Math.max(0, fault.afterBytes - sent));
            up.destroy();
            if (fault.kind === "cut") res.write(keep, () => res.socket?.destroy());
            else {
              res.write(keep);
              stalled.add(res);
            }
            sent += keep.length;
            return;
          }
          sent += out.length;
          if (!res.write(out)) {
            up.pause();
            res.once("drain", () => up.resume());
          }
        });
        up.on("end", () => res.end());
        up.on("error", () => res.socket?.destroy());
      },
    );
    upstreamReq.on("error", () => res.socket?.destroy());
    req.pipe(upstreamReq);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const origin = `http://127.0.0.1:${port}`;
  Object.assign(proxy, {
    origin,
    requests,
    faults,
    via: (url: string) => {
      const u = new URL(url);
      return `${origin}${u.pathname}${u.search}`;
    },
    close: async () => {
      for (const res of stalled) res.socket?.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
  return proxy;
}
