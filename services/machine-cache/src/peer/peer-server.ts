import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { pipeline } from "node:stream/promises";
import { ErrorReason, reasonName } from "@emprops/contracts";
import { type Logger, PeerTokenError, type PeerTokenVerifier } from "@emprops/platform";
import { isIntact } from "../cache/cached-copy.js";
import { loraFilesWithSha256 } from "../db/lora-files.js";
import type { Db } from "../db/open-database.js";
import type { Metrics } from "../telemetry.js";
import { UploadPace } from "./upload-pace.js";

/** GET {PEER_PATH}{sha256}: the only resource a peer server has. */
export const PEER_PATH = "/peer/v1/sha256/";

const SHA256 = /^[0-9a-f]{64}$/;

export interface PeerServerDeps {
  db: Db;
  machineId: string;
  verify: PeerTokenVerifier;
  logger: Logger;
  metrics: Metrics;
  host: string;
  port: number;
  maxUploads: number;
  uploadBytesPerSecond: number;
}

export interface PeerServer {
  /** http://host:port as bound. */
  url: string;
  close(): Promise<void>;
}

/**
 * Serves this node's verified files to the peers of its pool: GET (and
 * HEAD) of one file by its sha256, whole or one byte range, only with a
 * peer token the registry signed for that sha256 and this machine. A file
 * is served only once it is registered (downloaded and its sha256 checked)
 * and intact on disk; a partial download never is. At most `maxUploads`
 * requests at once (429 beyond), all paced together to
 * `uploadBytesPerSecond`, so the node's own jobs keep their disk and link.
 * Every refusal is JSON: {code, reason, message}.
 */
export async function startPeerServer(deps: PeerServerDeps): Promise<PeerServer> {
  const pace = new UploadPace(deps.uploadBytesPerSecond);
  let uploads = 0;

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    const refuse = (status: number, code: string, reason: ErrorReason, message: string, headers = {}) => {
      deps.metrics.peerRequests.add(1, { outcome: String(status) });
      res.writeHead(status, { "content-type": "application/json", ...headers });
      res.end(JSON.stringify({ code, reason: reasonName(reason), message }));
    };
    if (req.method !== "GET" && req.method !== "HEAD") {
      return refuse(405, "unimplemented", ErrorReason.INVALID_REQUEST, "only GET and HEAD", { allow: "GET, HEAD" });
    }
    const url = new URL(req.url ?? "/", "http://peer");
    if (!url.pathname.startsWith(PEER_PATH)) {
      return refuse(404, "not_found", ErrorReason.INVALID_REQUEST, `no such resource: ask for ${PEER_PATH}{sha256}`);
    }
    const sha256 = url.pathname.slice(PEER_PATH.length);
    if (!SHA256.test(sha256)) {
      return refuse(
        400,
        "invalid_argument",
        ErrorReason.INVALID_REQUEST,
        "the path must end in a lower-case hex sha256",
      );
    }
    const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? "")?.[1] ?? "";
    let requester: string;
    try {
      ({ requester } = await deps.verify(bearer, { sha256, server: deps.machineId }));
    } catch (err) {
      if (!(err instanceof PeerTokenError)) throw err;
      const code = err.status === 401 ? "unauthenticated" : "permission_denied";
      return refuse(err.status, code, err.reason, err.message);
    }
    const file = loraFilesWithSha256(deps.db, sha256).find((row) => isIntact(deps.db, row));
    if (!file) {
      return refuse(404, "not_found", ErrorReason.LORA_NOT_FOUND, `this machine holds no verified copy of ${sha256}`);
    }
    const range = parseRange(req.headers.range, file.size_bytes);
    if (range === "unsatisfiable") {
      deps.metrics.peerRequests.add(1, { outcome: "416" });
      res.writeHead(416, { "content-range": `bytes */${file.size_bytes}`, "content-type": "application/json" });
      return res.end(
        JSON.stringify({
          code: "out_of_range",
          reason: reasonName(ErrorReason.INVALID_REQUEST),
          message: `one range within the file's ${file.size_bytes} bytes, as bytes=first-last`,
        }),
      );
    }
    if (uploads >= deps.maxUploads) {
      return refuse(
        429,
        "resource_exhausted",
        ErrorReason.PEER_BUSY,
        `this machine already serves ${deps.maxUploads} peer requests; fetch from the blob`,
        { "retry-after": "1" },
      );
    }
    const { start, end } = range ?? { start: 0, end: file.size_bytes - 1 };
    const length = end - start + 1;
    // Opened before the answer starts: an eviction after this point cannot cut the file short (the inode stays).
    let handle: fs.promises.FileHandle;
    try {
      handle = await fs.promises.open(file.path, "r");
    } catch {
      return refuse(404, "not_found", ErrorReason.LORA_NOT_FOUND, `this machine no longer holds ${sha256}`);
    }
    uploads++;
    const started = performance.now();
    let sent = 0;
    try {
      res.writeHead(range ? 206 : 200, {
        "content-type": "application/octet-stream",
        "content-length": String(length),
        "accept-ranges": "bytes",
        ...(range ? { "content-range": `bytes ${start}-${end}/${file.size_bytes}` } : {}),
      });
      deps.metrics.peerRequests.add(1, { outcome: String(range ? 206 : 200) });
      if (req.method === "HEAD" || length === 0) return void res.end();
      const body = handle.createReadStream({ start, end, highWaterMark: 256 * 1024, autoClose: false });
      body.on("data", (chunk: string | Buffer) => void (sent += chunk.length));
      await pipeline(body, pace.stream(), res);
    } catch (err) {
      // The peer went away (or the disk failed): it falls back to another source.
      deps.logger.debug({ err, sha256, requester }, "peer upload ended early");
      res.destroy();
    } finally {
      uploads--;
      await handle.close().catch(() => {});
      deps.metrics.peerUploadedBytes.add(sent);
      deps.logger.debug(
        { sha256, requester, from: start, bytes: sent, ms: Math.round(performance.now() - started) },
        "served a peer",
      );
    }
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      deps.logger.error({ err }, "peer request failed");
      if (!res.headersSent) res.writeHead(500, { "content-type": "application/json" });
      res.end(
        JSON.stringify({ code: "internal", reason: reasonName(ErrorReason.UNSPECIFIED), message: "internal error" }),
      );
    });
  });
  server.keepAliveTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(deps.port, deps.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://${deps.host.includes(":") ? `[${deps.host}]` : deps.host}:${port}`;
  deps.logger.info({ url, max_uploads: deps.maxUploads }, "serving verified LoRAs to peers of the pool");
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * One range of `bytes=first-last`, `bytes=first-` or `bytes=-suffix`
 * (RFC 9110 §14.1.2); undefined for none (the whole file). Several ranges
 * are not served: the downloader asks for one at a time.
 */
function parseRange(
  header: string | undefined,
  size: number,
): { start: number; end: number } | undefined | "unsatisfiable" {
  if (header === undefined) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === "" && m[2] === "")) return "unsatisfiable";
  if (m[1] === "") {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (start >= size || end < start) return "unsatisfiable";
  return { start, end };
}
