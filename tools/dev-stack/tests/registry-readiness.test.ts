import net from "node:net";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { health, LoraAdminService, LoraResolverService, LoraService } from "@emprops/contracts";
import { bearerInterceptor } from "@emprops/platform";
import { createTestDatabase, eventually, rpcFailure, type TestDatabase } from "@emprops/testkit";
import { startTestStack, type TestStack } from "./support/test-stack.js";

const Status = health.HealthCheckResponse_ServingStatus;

/** A TCP hop to PostgreSQL that can be cut (refusing and resetting like a database that went away) and mended. */
async function cuttableHop(target: { host: string; port: number }) {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
  });
  const listen = (port: number) => new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  await listen(0);
  const { port } = server.address() as net.AddressInfo;
  return {
    port,
    cut: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
    },
    mend: () => listen(port),
    close: async () => {
      for (const s of sockets) s.destroy();
      if (server.listening) await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

let database: TestDatabase;
let hop: Awaited<ReturnType<typeof cuttableHop>>;
let t: TestStack;

beforeAll(async () => {
  database = await createTestDatabase("readiness");
  const url = new URL(database.url);
  hop = await cuttableHop({ host: url.hostname, port: Number(url.port) });
  url.host = `127.0.0.1:${hop.port}`;
  t = await startTestStack("readiness", {
    env: {
      registry: {
        DATABASE_URL: url.toString(),
        DEPENDENCY_CHECK_INTERVAL_MS: "200",
        DEPENDENCY_CHECK_TIMEOUT_MS: "1000",
      },
    },
  });
});

afterAll(async () => {
  await t?.stop();
  await hop?.close();
  await database?.cleanup();
});

const registryHealth = () => createClient(health.Health, createGrpcTransport({ baseUrl: t.stack.registry.url }));

async function statuses() {
  const client = registryHealth();
  const of = async (service: string) => (await client.check({ service }, { timeoutMs: 5000 })).status;
  return {
    liveness: await of(""),
    lora: await of(LoraService.typeName),
    resolver: await of(LoraResolverService.typeName),
    admin: await of(LoraAdminService.typeName),
  };
}

test("every service is SERVING while PostgreSQL and the blob-gateway are up", async () => {
  await eventually(async () =>
    expect(await statuses()).toEqual({
      liveness: Status.SERVING,
      lora: Status.SERVING,
      resolver: Status.SERVING,
      admin: Status.SERVING,
    }),
  );
});

test("PostgreSQL down: every service NOT_SERVING (readiness), the server SERVING (liveness), calls UNAVAILABLE / DEPENDENCY_UNAVAILABLE; back up: SERVING", async () => {
  const lora = createClient(
    LoraService,
    createGrpcTransport({ baseUrl: t.stack.registry.url, interceptors: [bearerInterceptor(t.userToken)] }),
  );
  await hop.cut();
  try {
    await eventually(async () =>
      expect(await statuses()).toEqual({
        liveness: Status.SERVING,
        lora: Status.NOT_SERVING,
        resolver: Status.NOT_SERVING,
        admin: Status.NOT_SERVING,
      }),
    );
    expect(await rpcFailure(lora.listLoras({}))).toMatchObject({
      code: "Unavailable",
      reason: "DEPENDENCY_UNAVAILABLE",
      metadata: { dependency: "postgresql" },
    });
  } finally {
    await hop.mend();
  }
  await eventually(async () => expect((await statuses()).lora).toBe(Status.SERVING));
  expect((await lora.listLoras({})).totalSize).toBe(0);
});

test("blob-gateway down: the services that need it NOT_SERVING, admin and liveness SERVING", async () => {
  await t.stack.gateway.server.close();
  await eventually(async () =>
    expect(await statuses()).toEqual({
      liveness: Status.SERVING,
      lora: Status.NOT_SERVING,
      resolver: Status.NOT_SERVING,
      admin: Status.SERVING,
    }),
  );
});
