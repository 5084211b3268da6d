import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { cacheV1, ErrorInfoSchema, health, MachineCacheService } from "@emprops/contracts";
import { createGrpcJsClient, grpcUnary, listServicesViaReflection } from "@emprops/testkit";
import {
  authInterceptor,
  createLogger,
  createTokenVerifier,
  errorReason,
  mintToken,
  startRpcServer,
  type RpcRule,
  type RpcServer,
  servicePolicy,
} from "../src/index.js";

const SECRET = "test-secret-0123456789abcdef";
const logger = createLogger("test", "silent");
const ANY_MACHINE: RpcRule = { allow: ["machine", "admin"] };

describe("RPC server", () => {
  let server: RpcServer;
  let adminToken: string;

  beforeAll(async () => {
    server = await startRpcServer({
      name: "test",
      host: "127.0.0.1",
      port: 0,
      logger,
      interceptors: [
        authInterceptor(createTokenVerifier({ secret: SECRET }), [
          servicePolicy(MachineCacheService, {
            ensureLoras: ANY_MACHINE,
            ensureLorasWithProgress: ANY_MACHINE,
            getCacheStats: ANY_MACHINE,
            listCachedModels: ANY_MACHINE,
            evictLoras: ANY_MACHINE,
            warmLoras: ANY_MACHINE,
          }),
        ]),
      ],
      routes: (router) => {
        router.service(MachineCacheService, {
          getCacheStats: () => create(cacheV1.GetCacheStatsResponseSchema, {}),
        });
      },
    });
    adminToken = await mintToken(SECRET, { subject: "admin-1", roles: ["admin"] });
  });
  afterAll(() => server.close());

  const transports = {
    connect: () => createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" }),
    "connect-h2": () => createConnectTransport({ baseUrl: server.url, httpVersion: "2" }),
    grpc: () => createGrpcTransport({ baseUrl: server.url }),
    "grpc-web": () => createGrpcWebTransport({ baseUrl: server.url, httpVersion: "1.1" }),
  };

  test.each(Object.keys(transports))("health answers SERVING over %s", async (name) => {
    const client = createClient(health.Health, transports[name as keyof typeof transports]());
    const res = await client.check({});
    expect(res.status).toBe(health.HealthCheckResponse_ServingStatus.SERVING);
    const svc = await client.check({ service: "emprops.cache.v1.MachineCacheService" });
    expect(svc.status).toBe(health.HealthCheckResponse_ServingStatus.SERVING);
    await expect(client.check({ service: "no.such.Service" })).rejects.toMatchObject({ code: Code.NotFound });
  });

  test("an unimplemented RPC answers UNIMPLEMENTED over Connect and over gRPC (grpc-js)", async () => {
    const headers = { authorization: `Bearer ${adminToken}` };
    const connect = createClient(MachineCacheService, transports.connect());
    await expect(connect.evictLoras({}, { headers })).rejects.toMatchObject({ code: Code.Unimplemented });

    const address = server.url.replace("http://", "");
    const grpcClient = createGrpcJsClient(address, "emprops.cache.v1.MachineCacheService");
    try {
      await expect(grpcUnary(grpcClient, "EvictLoras", {}, { metadata: headers })).rejects.toMatchObject({
        code: grpc.status.UNIMPLEMENTED,
      });
      // an implemented one answers
      await expect(grpcUnary(grpcClient, "GetCacheStats", {}, { metadata: headers })).resolves.toBeDefined();
    } finally {
      grpcClient.close();
    }
  });

  test("reflection lists the services over grpc-js (v1 and v1alpha) and connect-node", async () => {
    const address = server.url.replace("http://", "");
    for (const version of ["v1", "v1alpha"] as const) {
      const names = await listServicesViaReflection(address, { version });
      expect(names).toEqual(expect.arrayContaining(["emprops.cache.v1.MachineCacheService", "grpc.health.v1.Health"]));
    }
    const { reflectionV1 } = await import("@emprops/contracts");
    const client = createClient(reflectionV1.ServerReflection, transports.grpc());
    async function* ask() {
      yield create(reflectionV1.ServerReflectionRequestSchema, {
        messageRequest: { case: "fileContainingSymbol", value: "emprops.cache.v1.MachineCacheService" },
      });
    }
    for await (const res of client.serverReflectionInfo(ask())) {
      expect(res.messageResponse.case).toBe("fileDescriptorResponse");
    }
  });

  test("missing, malformed and under-privileged tokens are refused with reasons", async () => {
    const client = createClient(MachineCacheService, transports.connect());
    const reasonOf = async (headers: Record<string, string>) => {
      try {
        await client.getCacheStats({}, { headers });
        return "ok";
      } catch (err) {
        const ce = ConnectError.from(err);
        return `${Code[ce.code]}:${errorReason(ce)}`;
      }
    };
    expect(await reasonOf({})).toBe("Unauthenticated:TOKEN_MISSING");
    expect(await reasonOf({ authorization: "Bearer not-a-jwt" })).toBe("Unauthenticated:TOKEN_INVALID");
    expect(await reasonOf({ authorization: "Basic abc" })).toBe("Unauthenticated:TOKEN_INVALID");
    const expired = await mintToken(SECRET, { subject: "a", roles: ["admin"], ttlSeconds: -10 });
    expect(await reasonOf({ authorization: `Bearer ${expired}` })).toBe("Unauthenticated:TOKEN_EXPIRED");
    const otherKey = await mintToken("another-secret-0123456789", { subject: "a", roles: ["admin"] });
    expect(await reasonOf({ authorization: `Bearer ${otherKey}` })).toBe("Unauthenticated:TOKEN_INVALID");
    const user = await mintToken(SECRET, { subject: "00000000-0000-4000-8000-000000000009" });
    expect(await reasonOf({ authorization: `Bearer ${user}` })).toBe("PermissionDenied:ROLE_REQUIRED");
    expect(await reasonOf({ authorization: `Bearer ${adminToken}` })).toBe("ok");
  });

  test("errors carry google.rpc.ErrorInfo readable by plain JSON clients", async () => {
    const res = await fetch(`${server.url}/emprops.cache.v1.MachineCacheService/GetCacheStats`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    expect(res.status).toBe(401);
    const body = (await res.json()) as { code: string; details: { type: string; debug: { reason: string } }[] };
    expect(body.code).toBe("unauthenticated");
    expect(body.details[0]?.type).toBe(ErrorInfoSchema.typeName);
    expect(body.details[0]?.debug.reason).toBe("TOKEN_MISSING");
  });

  test("close drains and stops serving", async () => {
    const other = await startRpcServer({ name: "t2", host: "127.0.0.1", port: 0, logger, routes: () => {} });
    const client = createClient(health.Health, createGrpcTransport({ baseUrl: other.url }));
    await client.check({});
    await other.close();
    await expect(client.check({})).rejects.toBeInstanceOf(ConnectError);
  });
});
