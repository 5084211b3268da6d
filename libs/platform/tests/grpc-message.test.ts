import http2 from "node:http2";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import type * as grpc from "@grpc/grpc-js";
import { MachineCacheService } from "@emprops/contracts";
import { createGrpcJsClient, debianGrpcTools, grpcUnary, runDebianPython } from "@emprops/testkit";
import {
  authInterceptor,
  createLogger,
  createTokenVerifier,
  mintToken,
  startRpcServer,
  type RpcRule,
  type RpcServer,
  servicePolicy,
} from "../src/index.js";
import { encodeGrpcMessage } from "../src/rpc/grpc-message.js";

const SECRET = "grpc-message-test-secret-0123456789";
const METHOD = "/emprops.cache.v1.MachineCacheService/GetCacheStats";
const MACHINE: RpcRule = { allow: ["machine"] };

/** Messages the handler refuses with, chosen by the x-message header; the last is the server's real refusal. */
const MESSAGES = [
  "quota exceeded: 9.0 MiB of 10.0 MiB used, 2.0 MiB requested (100% full)",
  "naïve café — 日本語 ✓",
  "line one\nline two\ttab",
  "already%20encoded? #1 & a+b=c; /path?q",
];
const AUTH_REFUSAL = "an authorization: Bearer <token> header is required";
const ALL = [...MESSAGES, AUTH_REFUSAL];

describe("grpc-message is percent-encoded as the gRPC HTTP/2 spec says", () => {
  let server: RpcServer;
  let token: string;
  /** x-message header for the i-th message; the auth refusal comes from calling without a token. */
  const headersFor = (i: number): Record<string, string> =>
    i < MESSAGES.length ? { authorization: `Bearer ${token}`, "x-message": String(i) } : {};

  beforeAll(async () => {
    token = await mintToken(SECRET, { subject: "m1", roles: ["machine"] });
    server = await startRpcServer({
      name: "grpc-message-test",
      host: "127.0.0.1",
      port: 0,
      logger: createLogger("test", "silent"),
      interceptors: [
        authInterceptor(createTokenVerifier({ secret: SECRET }), [
          servicePolicy(MachineCacheService, {
            ensureLoras: MACHINE,
            ensureLorasWithProgress: MACHINE,
            getCacheStats: MACHINE,
            listCachedModels: MACHINE,
            evictLoras: MACHINE,
            warmLoras: MACHINE,
          }),
        ]),
      ],
      routes: (router) => {
        router.service(MachineCacheService, {
          getCacheStats: (_req, ctx) => {
            throw new ConnectError(MESSAGES[Number(ctx.requestHeader.get("x-message"))]!, Code.FailedPrecondition);
          },
        });
      },
    });
  });
  afterAll(() => server.close());

  test("the encoder: only bytes outside 0x20-0x7E and '%' are encoded", () => {
    expect(encodeGrpcMessage(AUTH_REFUSAL)).toBe(AUTH_REFUSAL);
    expect(encodeGrpcMessage(MESSAGES[0]!)).toBe(
      "quota exceeded: 9.0 MiB of 10.0 MiB used, 2.0 MiB requested (100%25 full)",
    );
    expect(encodeGrpcMessage("é\n~ ")).toBe("%C3%A9%0A~ ");
    expect(encodeGrpcMessage("")).toBe("");
  });

  test("on the wire: the trailer holds the spec's encoding", async () => {
    const session = http2.connect(server.url);
    try {
      for (const [i, message] of ALL.entries()) {
        const trailers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
          const stream = session.request({
            ":method": "POST",
            ":path": METHOD,
            "content-type": "application/grpc",
            te: "trailers",
            ...headersFor(i),
          });
          let seen: http2.IncomingHttpHeaders = {};
          stream.on("response", (headers) => (seen = headers));
          stream.on("trailers", (t) => (seen = { ...seen, ...t }));
          stream.on("error", reject);
          stream.on("close", () => resolve(seen));
          stream.resume();
          stream.end(Buffer.alloc(5)); // one empty, uncompressed message
        });
        expect(trailers["grpc-message"]).toBe(encodeGrpcMessage(message));
      }
    } finally {
      session.close();
    }
  });

  test("grpc-js reads the text as sent", async () => {
    const client = createGrpcJsClient(server.url.replace("http://", ""), "emprops.cache.v1.MachineCacheService");
    try {
      for (const [i, message] of ALL.entries()) {
        const err = (await grpcUnary(client, "GetCacheStats", {}, { metadata: headersFor(i) }).catch(
          (e: unknown) => e,
        )) as grpc.ServiceError;
        expect(err.details).toBe(message);
      }
    } finally {
      client.close();
    }
  });

  test("connect-node reads the text as sent, over gRPC and gRPC-Web", async () => {
    for (const transport of [
      createGrpcTransport({ baseUrl: server.url }),
      createGrpcWebTransport({ baseUrl: server.url, httpVersion: "2" }),
    ]) {
      const client = createClient(MachineCacheService, transport);
      for (const [i, message] of ALL.entries()) {
        const err = ConnectError.from(await client.getCacheStats({}, { headers: headersFor(i) }).catch((e) => e));
        expect(err.rawMessage).toBe(message);
      }
    }
  });

  const tools = debianGrpcTools();
  (tools ? test : test.skip)("Python grpcio (Debian) reads the text as sent", async () => {
    const script = `
import grpc, json, sys
channel = grpc.insecure_channel(sys.argv[1])
call = channel.unary_unary(sys.argv[2])
out = []
for headers in json.loads(sys.argv[3]):
    try:
        call(b"", metadata=tuple(headers.items()), timeout=10)
        out.append(None)
    except grpc.RpcError as e:
        out.append(e.details())
print(json.dumps(out))
`;
    const stdout = await runDebianPython(tools!, script, [
      server.url.replace("http://", ""),
      METHOD,
      JSON.stringify(ALL.map((_, i) => headersFor(i))),
    ]);
    expect(JSON.parse(stdout)).toEqual(ALL);
  });
});
