import { existsSync } from "node:fs";
import http from "node:http";
import type net from "node:net";
import path from "node:path";
import sirv from "sirv";

/** What the page reads from /config.json at start. */
export interface StudioPageConfig {
  /** lora-registry's address as the browser reaches it (Connect-Web). */
  registryUrl: string;
}

export interface StudioServerOptions {
  /** The built page (apps/studio-lora-library/dist). */
  dir: string;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** A function when the registry starts after the page's origin is known (its CORS needs the origin). */
  config: StudioPageConfig | (() => StudioPageConfig);
}

export interface StudioServer {
  /** http://host:port/ */
  url: string;
  /** The origin the registry and Blob Storage must allow (CORS). */
  origin: string;
  stop(): Promise<void>;
}

/** apps/studio-lora-library/dist of this checkout. */
export function defaultStudioDir(): string {
  return path.resolve(__dirname, "..", "..", "..", "apps", "studio-lora-library", "dist");
}

/**
 * Serves the built Studio LoRA library page and its /config.json. Development
 * and tests only: in production the Studio serves the page from its own origin.
 */
export async function startStudioServer(opts: StudioServerOptions): Promise<StudioServer> {
  if (!existsSync(path.join(opts.dir, "index.html"))) {
    throw new Error(`the Studio page is not built (${opts.dir}/index.html is missing): run npm run build`);
  }
  const files = sirv(opts.dir, {
    etag: true,
    // index.html names the hashed assets: always revalidate it; assets may be cached.
    setHeaders: (res, pathname) => {
      res.setHeader(
        "Cache-Control",
        pathname.startsWith("/assets/") ? "public, max-age=31536000, immutable" : "no-cache",
      );
    },
  });
  const config = () => JSON.stringify(typeof opts.config === "function" ? opts.config() : opts.config);
  const server = http.createServer((req, res) => {
    if (req.url?.split("?")[0] === "/config.json") {
      res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
      res.end(config());
      return;
    }
    files(req, res, () => {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("not found");
    });
  });
  const sockets = new Set<net.Socket>();
  server.on("connection", (s) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, opts.host ?? "127.0.0.1", () => resolve());
  });
  const address = server.address() as net.AddressInfo;
  const origin = `http://${address.family === "IPv6" ? `[${address.address}]` : address.address}:${address.port}`;
  return {
    url: `${origin}/`,
    origin,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}
