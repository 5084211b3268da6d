import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { health, LoraAdminService } from "@emprops/contracts";
import { bearerInterceptor } from "@emprops/platform";
import { createGrpcJsClient, grpcUnary, listServicesViaReflection } from "@emprops/testkit";
import { startTestStack, type TestStack } from "./support/test-stack.js";

const SERVING = health.HealthCheckResponse_ServingStatus.SERVING;

describe("every service speaks Connect and gRPC, with health and reflection", () => {
  let t: TestStack;

  beforeAll(async () => {
    // Statistics every hour: only the report at start-up can make the stack ready.
    t = await startTestStack("protocols", { env: { machineCache: { CACHE_STATS_INTERVAL_SECONDS: "3600" } } });
  });

  afterAll(async () => {
    await t?.stop();
  });

  const services = () => [
    {
      name: "lora-registry",
      url: t.stack.registry.url,
      expected: [
        "emprops.lora.v1.LoraService",
        "emprops.lora.v1.LoraAdminService",
        "emprops.lora.v1.LoraResolverService",
      ],
    },
    { name: "blob-gateway", url: t.stack.gateway.url, expected: ["emprops.blob.v1.BlobGatewayService"] },
    { name: "machine-cache", url: t.stack.machineCache.url, expected: ["emprops.cache.v1.MachineCacheService"] },
  ];

  test.each(["lora-registry", "blob-gateway", "machine-cache"])(
    "%s answers health and reflection to grpc-js and connect-node clients",
    async (name) => {
      const svc = services().find((s) => s.name === name)!;
      const address = svc.url.replace("http://", "");

      // grpc-js: health for the server and each service, then reflection
      const grpcHealth = createGrpcJsClient(address, "grpc.health.v1.Health");
      try {
        for (const service of ["", ...svc.expected]) {
          await expect(grpcUnary(grpcHealth, "Check", { service })).resolves.toMatchObject({ status: "SERVING" });
        }
      } finally {
        grpcHealth.close();
      }
      const listed = await listServicesViaReflection(address);
      expect(listed).toEqual(expect.arrayContaining([...svc.expected, "grpc.health.v1.Health"]));

      // connect-node: gRPC over h2 and Connect over HTTP/1.1
      for (const transport of [
        createGrpcTransport({ baseUrl: svc.url }),
        createConnectTransport({ baseUrl: svc.url, httpVersion: "1.1" }),
      ]) {
        const client = createClient(health.Health, transport);
        for (const service of ["", ...svc.expected]) {
          expect((await client.check({ service })).status).toBe(SERVING);
        }
      }
    },
  );

  test("ready: every service is on NATS and an admin sees the machine's statistics at once", async () => {
    const { gateway, registry, machineCache } = t.stack;
    expect([gateway.ctx.bus.connected, registry.ctx.bus.connected, machineCache.ctx.bus.connected]).toEqual([
      true,
      true,
      true,
    ]);
    const admin = createClient(
      LoraAdminService,
      createConnectTransport({
        baseUrl: registry.url,
        httpVersion: "1.1",
        interceptors: [bearerInterceptor(t.adminToken)],
      }),
    );
    const { machines } = await admin.getCacheStats({});
    expect(machines.map((m) => m.machineId)).toEqual(["protocols-machine"]);
  });

  test("a reason has one spelling: ErrorInfo of a refusal and an item error in Connect JSON", async () => {
    const post = async (url: string, method: string, token: string, body: unknown) =>
      (await fetch(`${url}/${method}`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify(body),
      }).then((r) => r.json())) as {
        details?: { debug: { reason: string } }[];
        results?: { error?: { code: string; reason: string } }[];
      };
    const refusal = await post(t.stack.registry.url, "emprops.lora.v1.LoraService/GetLora", t.userToken, {
      loraId: "999999",
    });
    const ensured = await post(
      t.stack.machineCache.url,
      "emprops.cache.v1.MachineCacheService/EnsureLoras",
      t.machineToken,
      { jobId: "job-1", userId: t.userId, refs: [{ source: "LORA_SOURCE_USER", identifier: "999999" }] },
    );
    expect(refusal.details?.[0]?.debug.reason).toBe("LORA_NOT_FOUND");
    expect(ensured.results?.[0]?.error).toMatchObject({ code: "not_found", reason: "LORA_NOT_FOUND" });
  });
});
