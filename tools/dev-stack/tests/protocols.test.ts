import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { health } from "@emprops/contracts";
import {
  createGrpcJsClient,
  createTestContainers,
  createTestDatabase,
  grpcUnary,
  listServicesViaReflection,
  testEnv,
  testNamespace,
  type TestContainers,
  type TestDatabase,
  type TestNamespace,
} from "@emprops/testkit";
import { startStack, type RunningStack } from "../src/index.js";

const SERVING = health.HealthCheckResponse_ServingStatus.SERVING;

describe("every service speaks Connect and gRPC, with health and reflection", () => {
  let db: TestDatabase;
  let ns: TestNamespace;
  let containers: TestContainers;
  let machineDir: string;
  let stack: RunningStack;

  beforeAll(async () => {
    [db, containers] = await Promise.all([createTestDatabase("protocols"), createTestContainers("protocols")]);
    ns = testNamespace("protocols");
    machineDir = mkdtempSync(path.join(os.tmpdir(), "machine-"));
    stack = await startStack({
      databaseUrl: db.url,
      natsUrl: testEnv().natsUrl,
      natsNamespace: ns.namespace,
      azureConnectionString: containers.connectionString,
      userContainer: containers.userContainer,
      sharedContainer: containers.sharedContainer,
      jwtSecret: "protocols-test-secret-0123456789",
      machineDir,
      logLevel: "silent",
    });
  });

  afterAll(async () => {
    await stack?.stop();
    await Promise.all([db?.cleanup(), ns?.cleanup(), containers?.cleanup()]);
    rmSync(machineDir, { recursive: true, force: true });
  });

  const services = () => [
    {
      name: "lora-registry",
      url: stack.registry.url,
      expected: [
        "emprops.lora.v1.LoraService",
        "emprops.lora.v1.LoraAdminService",
        "emprops.lora.v1.LoraResolverService",
      ],
    },
    { name: "blob-gateway", url: stack.gateway.url, expected: ["emprops.blob.v1.BlobGatewayService"] },
    { name: "machine-cache", url: stack.machineCache.url, expected: ["emprops.cache.v1.MachineCacheService"] },
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
});
