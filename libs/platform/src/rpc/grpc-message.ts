import type http from "node:http";
import type http2 from "node:http2";

/**
 * Percent-encodes a gRPC status message as PROTOCOL-HTTP2.md ("Status-Message")
 * asks: UTF-8, with only the bytes outside 0x20-0x7E and "%" itself encoded.
 * The same rule as grpc-go's encodeGrpcMessage (internal/transport/http_util.go).
 */
export function encodeGrpcMessage(message: string): string {
  let out = "";
  for (const byte of Buffer.from(message, "utf8")) {
    out +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;
type NodeHandler = (req: NodeRequest, res: NodeResponse) => void;
type HeaderMap = Record<string, string | string[] | number | undefined>;

const GRPC_MESSAGE = "grpc-message";

/**
 * connect-node writes `grpc-message` with encodeURIComponent, which also
 * encodes ":", "," and the like; grpc-js decodes it with decodeURI and so
 * shows "quota exceeded%3A …". This re-encodes the header (or trailer) of
 * gRPC responses per the spec, so grpc-js, grpc-go, grpcio and Connect
 * clients all read the same text. gRPC-Web carries its trailers in the body
 * and keeps Connect's encoding (its clients decode it in full).
 */
export function withSpecGrpcMessage(next: NodeHandler): NodeHandler {
  return (req, res) => {
    const type = req.headers["content-type"] ?? "";
    if (type.startsWith("application/grpc") && !type.startsWith("application/grpc-web")) {
      patchResponse(res);
    }
    next(req, res);
  };
}

function patchResponse(res: NodeResponse): void {
  const writeHead = res.writeHead.bind(res) as (...args: unknown[]) => NodeResponse;
  const addTrailers = res.addTrailers.bind(res) as (headers: HeaderMap) => void;
  (res as { writeHead: unknown }).writeHead = (...args: unknown[]) => {
    const last = args[args.length - 1];
    if (last && typeof last === "object" && !Array.isArray(last)) reencode(last as HeaderMap);
    return writeHead(...args);
  };
  (res as { addTrailers: unknown }).addTrailers = (headers: HeaderMap) => {
    reencode(headers);
    addTrailers(headers);
  };
}

function reencode(headers: HeaderMap): void {
  const value = headers[GRPC_MESSAGE];
  if (typeof value !== "string") return;
  let raw: string;
  try {
    raw = decodeURIComponent(value);
  } catch {
    return; // not what connect-node wrote: leave it as it is
  }
  headers[GRPC_MESSAGE] = encodeGrpcMessage(raw);
}
