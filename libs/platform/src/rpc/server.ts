import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { DescService } from "@bufbuild/protobuf";
import { type ConnectRouter, cors as connectCors, type Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { health } from "@emprops/contracts";
import type { Logger } from "pino";
import { callerDeadlineInterceptor } from "./deadline.js";
import { withSpecGrpcMessage } from "./grpc-message.js";
import { HealthState, registerHealth, ServingStatus } from "./health.js";
import { registerReflection } from "./reflection.js";
import { serverTracingInterceptor } from "../telemetry.js";

export interface RpcServerOptions {
  /** Service name for logs. */
  name: string;
  host: string;
  /** 0 picks a free port. */
  port: number;
  logger: Logger;
  /** The application's services, implemented on this router. */
  routes: (router: ConnectRouter) => void;
  interceptors?: Interceptor[];
  /** Largest message accepted, in bytes (default 8 MiB). */
  readMaxBytes?: number;
  /** Seconds to wait for in-flight calls at shutdown before cutting them. */
  shutdownGraceSeconds?: number;
  /** Browsers (Connect-Web) of these origins may call; unset or empty: no CORS headers at all. */
  cors?: CorsOptions;
}

export interface CorsOptions {
  /** Exact origins such as "https://studio.emprops.ai"; "*" allows any origin. */
  allowedOrigins: string[];
  /** How long a browser may cache a preflight answer (default 2 hours). */
  maxAgeSeconds?: number;
}

export interface RpcServer {
  /** http://host:port */
  url: string;
  port: number;
  health: HealthState;
  /** Stops accepting, drains in-flight calls, then closes. Idempotent. */
  close(): Promise<void>;
}

const HTTP2_PREFACE = Buffer.from("PRI * HTTP/2.0");

/**
 * One plaintext port serving Connect, gRPC and gRPC-Web: HTTP/2 (h2c) for
 * gRPC and Connect clients, HTTP/1.1 for browsers (Connect-Web) and curl.
 * Adds grpc.health.v1 and server reflection for the application's services.
 */
export async function startRpcServer(opts: RpcServerOptions): Promise<RpcServer> {
  let appServices: DescService[] = [];
  let healthState: HealthState | undefined;
  const handler = connectNodeAdapter({
    interceptors: [serverTracingInterceptor(), callerDeadlineInterceptor, ...(opts.interceptors ?? [])],
    readMaxBytes: opts.readMaxBytes ?? 8 * 1024 * 1024,
    routes(router) {
      opts.routes(router);
      appServices = uniqueServices(router);
      healthState = new HealthState(
        appServices.map((s) => s.typeName),
        ServingStatus.NOT_SERVING,
      );
      registerHealth(router, healthState);
      registerReflection(router, [...appServices, health.Health]);
    },
  });
  const state = healthState as HealthState | undefined;
  if (!state) throw new Error("router was not built");

  const rpc = withSpecGrpcMessage(handler);
  const served = opts.cors && opts.cors.allowedOrigins.length > 0 ? withCors(rpc, opts.cors) : rpc;
  const h1 = http.createServer(served);
  const h2 = http2.createServer({}, served);
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });

  const front = net.createServer((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const n = Math.min(head.length, HTTP2_PREFACE.length);
      const isH2 = head.subarray(0, n).equals(HTTP2_PREFACE.subarray(0, n));
      if (isH2 && head.length < HTTP2_PREFACE.length) return;
      socket.off("data", onData);
      socket.pause();
      socket.unshift(head);
      (isH2 ? h2 : h1).emit("connection", socket);
      // http2 reads the buffered preface itself on the next tick; a flowing socket would drop it.
      if (!isH2) socket.resume();
    };
    socket.on("data", onData);
    socket.on("error", () => socket.destroy());
  });

  await new Promise<void>((resolve, reject) => {
    front.once("error", reject);
    front.listen(opts.port, opts.host, () => resolve());
  });
  // h1 and h2 never listen themselves; "listening" starts h1's connection
  // tracking, without which closeIdleConnections() cannot close keep-alives.
  h1.emit("listening");
  const address = front.address() as net.AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  state.set(ServingStatus.SERVING);
  opts.logger.info({ url, services: appServices.map((s) => s.typeName) }, `${opts.name} listening`);

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      state.set(ServingStatus.NOT_SERVING);
      const stopped = new Promise<void>((resolve) => front.close(() => resolve()));
      for (const session of sessions) session.close();
      h1.closeIdleConnections();
      const grace = setTimeout(
        () => {
          for (const socket of sockets) socket.destroy();
        },
        (opts.shutdownGraceSeconds ?? 10) * 1000,
      );
      grace.unref();
      const drained = async () => {
        while (sockets.size > 0) {
          h1.closeIdleConnections();
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      await Promise.all([stopped, drained()]);
      clearTimeout(grace);
      opts.logger.info(`${opts.name} stopped`);
    })());

  return { url, port: address.port, health: state, close };
}

function uniqueServices(router: ConnectRouter): DescService[] {
  const byName = new Map<string, DescService>();
  for (const h of router.handlers) byName.set(h.service.typeName, h.service);
  return [...byName.values()];
}

type NodeHandler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

/**
 * CORS for Connect-Web, with the Connect CORS constants plus the bearer
 * token header: preflights of allowed origins are answered here, other
 * requests get the allow/expose headers and go on to the RPC handler.
 */
function withCors(next: NodeHandler, opts: CorsOptions): NodeHandler {
  const any = opts.allowedOrigins.includes("*");
  const origins = new Set(opts.allowedOrigins);
  // The bearer token and W3C trace context (the Studio page sends traceparent) beside Connect's own.
  const allowHeaders = [...connectCors.allowedHeaders, "Authorization", "Traceparent", "Tracestate"].join(", ");
  const allowMethods = connectCors.allowedMethods.join(", ");
  const exposeHeaders = connectCors.exposedHeaders.join(", ");
  const maxAge = String(opts.maxAgeSeconds ?? 7200);
  return (req, res) => {
    const origin = req.headers.origin;
    const allowed = typeof origin === "string" && (any || origins.has(origin));
    res.setHeader("Vary", "Origin");
    if (allowed) {
      res.setHeader("Access-Control-Allow-Origin", origin);
      res.setHeader("Access-Control-Expose-Headers", exposeHeaders);
    }
    if (req.method === "OPTIONS" && typeof req.headers["access-control-request-method"] === "string") {
      if (allowed) {
        res.setHeader("Access-Control-Allow-Methods", allowMethods);
        res.setHeader("Access-Control-Allow-Headers", allowHeaders);
        res.setHeader("Access-Control-Max-Age", maxAge);
      }
      // A refused origin gets no allow headers: the browser then blocks the call.
      res.writeHead(allowed ? 204 : 403);
      res.end();
      return;
    }
    next(req, res);
  };
}
