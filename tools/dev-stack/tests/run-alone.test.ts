import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { BlobGatewayService, LoraAdminService, LoraService, MachineCacheService } from "@emprops/contracts";
import { bearerInterceptor, mintToken, type Role } from "@emprops/platform";
import {
  eventually,
  freePort,
  spawnService,
  testEnv,
  testNamespace,
  type SpawnedService,
  type TestNamespace,
} from "@emprops/testkit";
import pg from "pg";
import { markedBlock, ROOT } from "./support/readme-blocks.js";

/**
 * Each service started the way its README's "Run it alone" block says, each
 * block run by bash as printed, with only what would clash on a shared machine
 * changed: the documented ports become free ones, the database gets a unique
 * name, NATS is this run's server (with a namespace), the ComfyUI directory a
 * temporary one. The last command is exec'd so the stop signal reaches the
 * service, as Ctrl-C would in a terminal.
 */
describe("every service starts alone from its README", () => {
  const started: SpawnedService<true>[] = [];
  let ns: TestNamespace;
  let comfyDir: string;
  let databaseName: string;
  let ports: Record<"registry" | "gateway" | "machineCache" | "azurite", number>;
  let secret: string;

  const run = (name: string, block: string, ready: RegExp, env: Record<string, string> = {}) => {
    const lines = block.split("\n");
    const last = lines.pop() as string;
    const script = ["set -e", `cd ${JSON.stringify(ROOT)}`, ...lines, `exec ${last}`].join("\n");
    return spawnService({
      name,
      command: "bash",
      args: ["-c", script],
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        NATS_NAMESPACE: ns.namespace,
        REGISTRY_PORT: String(ports.registry),
        GATEWAY_PORT: String(ports.gateway),
        MACHINE_CACHE_PORT: String(ports.machineCache),
        ...env,
      },
      ready: (output) => (ready.test(output) ? true : undefined),
      timeoutMs: 60_000,
    }).then((s) => {
      started.push(s);
      return s;
    });
  };
  /** The block as printed, with the clashing values replaced. */
  const localize = (block: string) => {
    const server = new URL(testEnv().databaseUrl);
    server.pathname = `/${databaseName}`;
    return block
      .replaceAll("postgres://postgres@127.0.0.1:5432/lora_registry", server.toString())
      .replaceAll("nats://127.0.0.1:4222", testEnv().natsUrl)
      .replaceAll("127.0.0.1:50051", `127.0.0.1:${ports.registry}`)
      .replaceAll("127.0.0.1:50052", `127.0.0.1:${ports.gateway}`)
      .replaceAll("127.0.0.1:10000", `127.0.0.1:${ports.azurite}`)
      .replaceAll("--blobPort 10000", `--blobPort ${ports.azurite}`)
      .replaceAll("/tmp/ComfyUI", comfyDir);
  };
  const token = (subject: string, roles: Role[] = []) => mintToken(secret, { subject, roles, ttlSeconds: 600 });
  const client = async <S extends Parameters<typeof createClient>[0]>(service: S, port: number, t: string) =>
    createClient(
      service,
      createConnectTransport({
        baseUrl: `http://127.0.0.1:${port}`,
        httpVersion: "1.1",
        interceptors: [bearerInterceptor(t)],
      }),
    );

  const blocks = {
    registry: markedBlock("services/lora-registry/README.md", "run-alone: lora-registry"),
    azurite: markedBlock("services/blob-gateway/README.md", "run-alone: azurite"),
    gateway: markedBlock("services/blob-gateway/README.md", "run-alone: blob-gateway"),
    machineCache: markedBlock("services/machine-cache/README.md", "run-alone: machine-cache"),
  };

  beforeAll(async () => {
    ns = testNamespace("run-alone");
    comfyDir = mkdtempSync(path.join(os.tmpdir(), "run-alone-comfyui-"));
    databaseName = `t_run_alone_${process.pid}_${Date.now().toString(36)}`;
    ports = {
      registry: await freePort(),
      gateway: await freePort(),
      machineCache: await freePort(),
      azurite: await freePort(),
    };
    const secrets = new Set(
      Object.values(blocks).flatMap((b) => [...b.matchAll(/JWT_SECRET=(\S+)/g)].map((m) => m[1])),
    );
    expect(secrets.size).toBe(1);
    secret = [...secrets][0] as string;

    // The registry creates its database; the gateway needs Azurite first, the machine-cache the registry.
    await Promise.all([
      run("lora-registry", localize(blocks.registry), /"msg":"lora-registry ready"/),
      run("azurite", localize(blocks.azurite), /successfully listens on/),
    ]);
    await run("blob-gateway", localize(blocks.gateway), /"msg":"blob-gateway ready"/);
    await run("machine-cache", localize(blocks.machineCache), /"msg":"machine-cache ready"/);
  });

  afterAll(async () => {
    for (const s of started.reverse()) await s.stop();
    await ns?.cleanup();
    if (databaseName) {
      const admin = new pg.Client({ connectionString: testEnv().databaseUrl });
      await admin.connect();
      await admin.query(`DROP DATABASE IF EXISTS "${databaseName}" WITH (FORCE)`);
      await admin.end();
    }
    if (comfyDir) rmSync(comfyDir, { recursive: true, force: true });
  });

  test("the blocks use the documented defaults that the test replaces", () => {
    expect(blocks.registry).toContain("postgres://postgres@127.0.0.1:5432/lora_registry");
    expect(blocks.gateway).toContain("BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1");
    expect(blocks.azurite).toContain("--skipApiVersionCheck");
    expect(blocks.machineCache).toContain("REGISTRY_URL=http://127.0.0.1:50051");
  });

  test("the registry created its database, and serves a user", async () => {
    const user = "00000000-0000-4000-8000-00000000a10e";
    const lora = await client(LoraService, ports.registry, await token(user));
    expect((await lora.listLoras({})).loras).toEqual([]);
    expect((await lora.getQuota({})).quota?.usedBytes).toBe(0n);
  });

  test("the gateway signs upload URLs for Azurite's account on the port it was given", async () => {
    const gateway = await client(BlobGatewayService, ports.gateway, await token("lora-registry", ["service"]));
    const res = await gateway.createUploadUrl({
      upload: {
        userId: "00000000-0000-4000-8000-00000000a10e",
        uploadId: "00000000-0000-4000-8000-0000000000a1",
        extension: "safetensors",
      },
      sizeBytes: 1024n,
    });
    expect(new URL(res.uploadUrl).host).toBe(`127.0.0.1:${ports.azurite}`);
  });

  test("the machine-cache serves, and its statistics reached the registry over NATS", async () => {
    const machine = await client(MachineCacheService, ports.machineCache, await token("gpu-node-1", ["machine"]));
    expect((await machine.getCacheStats({})).stats?.machineId).toBe("gpu-node-1");
    const admin = await client(LoraAdminService, ports.registry, await token("ops", ["admin"]));
    await eventually(async () =>
      expect((await admin.getCacheStats({})).machines.map((m) => m.machineId)).toEqual(["gpu-node-1"]),
    );
  });
});
