import http from "node:http";
import type net from "node:net";

/** A pass-through proxy in front of Blob Storage that can cut Put Block requests, like a failing network. */
export interface BlobProxy {
  /** The proxy's blob endpoint: http://127.0.0.1:port/<account> */
  blobEndpoint: string;
  /** Block indexes of the Put Block requests that reached storage, in order. */
  storedBlocks: number[];
  /** Put Block requests cut, by block index. */
  cutBlocks: number[];
  /** Decides, per Put Block, whether to cut the connection instead of forwarding. */
  cut: (blockIndex: number) => boolean;
  stop(): Promise<void>;
}

/** The index of block id base64("block-000042"), or -1. */
function blockIndex(url: URL): number {
  const id = url.searchParams.get("blockid");
  if (url.searchParams.get("comp") !== "block" || !id) return -1;
  const match = /^block-(\d+)$/.exec(Buffer.from(id, "base64").toString("utf8"));
  return match ? Number(match[1]) : -1;
}

export async function startBlobProxy(targetEndpoint: string): Promise<BlobProxy> {
  const target = new URL(targetEndpoint);
  const sockets = new Set<net.Socket>();
  const proxy: BlobProxy = {
    blobEndpoint: "",
    storedBlocks: [],
    cutBlocks: [],
    cut: () => false,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://proxy");
    const index = req.method === "PUT" ? blockIndex(url) : -1;
    if (index >= 0 && proxy.cut(index)) {
      proxy.cutBlocks.push(index);
      req.socket.destroy();
      return;
    }
    const upstream = http.request(
      {
        host: target.hostname,
        port: target.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: target.host },
      },
      (up) => {
        if (index >= 0 && up.statusCode && up.statusCode < 300) proxy.storedBlocks.push(index);
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on("error", () => res.destroy());
    req.pipe(upstream);
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const { port } = server.address() as net.AddressInfo;
  proxy.blobEndpoint = `http://127.0.0.1:${port}${target.pathname.replace(/\/$/, "")}`;
  return proxy;
}

/** The same connection string with another BlobEndpoint. */
export function withBlobEndpoint(connectionString: string, blobEndpoint: string): string {
  return connectionString.replace(/BlobEndpoint=[^;]*/, `BlobEndpoint=${blobEndpoint}`);
}

/** BlobEndpoint of a connection string. */
export function blobEndpointOf(connectionString: string): string {
  const match = /BlobEndpoint=([^;]*)/.exec(connectionString);
  if (!match?.[1]) throw new Error("the connection string names no BlobEndpoint");
  return match[1];
}
