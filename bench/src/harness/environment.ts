import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { LoraResolverService, LoraService } from "@emprops/contracts";
import { bearerInterceptor, mintToken } from "@emprops/platform";
import {
  createTestContainers,
  createTestDatabase,
  provideTestDependencies,
  type StartedAzurite,
  startAzurite,
  testNamespace,
} from "@emprops/testkit";
import { Agent } from "undici";
import { type ServiceProcess, startServiceProcess } from "./service-process.js";

export const BENCH_SECRET = "bench-secret-0123456789abcdef-0123456789";

/** The registry and the gateway it calls. */
export interface RegistryAndGateway {
  registry: ServiceProcess;
  gateway: ServiceProcess;
}

export interface BenchEnvironment {
  /** Scratch directory, removed by stop(). */
  work: string;
  azurite: StartedAzurite;
  /** Where PostgreSQL, NATS and Azurite came from. */
  summary: string;
  userContainer: string;
  sharedContainer: string;
  /** The run's NATS and namespace (the services' events). */
  nats: { url: string; namespace: string };
  /** The user owning every LoRA the suites upload. */
  userId: string;
  tokens: { machine: string; admin: string; service: string };
  /** The registry and gateway the suites share. */
  main: RegistryAndGateway;
  /** LoraService as the bench user (gRPC). */
  lora: Client<typeof LoraService>;
  /** LoraResolverService as a machine (gRPC). */
  resolver: Client<typeof LoraResolverService>;
  /** HTTP client pool for plain downloads and Connect JSON calls. */
  dispatcher: Agent;
  /** Another registry + gateway on the same database and containers (e.g. signing URLs through a proxy). */
  startRegistryAndGateway(opts?: {
    azureConnectionString?: string;
    /** Further variables of the registry. */
    registryEnv?: NodeJS.ProcessEnv;
    nodeArgs?: { registry?: string[]; gateway?: string[] };
  }): Promise<RegistryAndGateway>;
  /** A gateway of its own (nothing calls it but the suite), on storage through `azureConnectionString` if given. */
  startGateway(opts?: {
    nodeArgs?: string[];
    env?: NodeJS.ProcessEnv;
    azureConnectionString?: string;
  }): Promise<ServiceProcess>;
  /** A machine cache with its own directory under `work`, asking `registryUrl` (default: the main registry). */
  startMachineCache(
    label: string,
    opts?: { env?: NodeJS.ProcessEnv; nodeArgs?: string[]; registryUrl?: string },
  ): Promise<ServiceProcess>;
  /** Stops every process started here and removes every database, stream, container and file. */
  stop(): Promise<void>;
}

/**
 * PostgreSQL, NATS and Azurite as the tests get them (the usual variables,
 * else embedded), a database, NATS namespace and containers of the run's own,
 * and the services as child processes on free loopback ports.
 */
export async function startBenchEnvironment(opts: { azuriteOnDisk?: boolean } = {}): Promise<BenchEnvironment> {
  const work = await fs.mkdtemp(path.join(os.tmpdir(), "emprops-bench-"));
  const cleanups: (() => Promise<unknown>)[] = [() => fs.rm(work, { recursive: true, force: true })];
  const processes: ServiceProcess[] = [];
  const stop = async () => {
    for (const p of processes.splice(0).reverse()) await p.stop();
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  };
  try {
    const azurite = await startAzurite(
      opts.azuriteOnDisk ? { persistent: true, dataDir: path.join(work, "azurite") } : {},
    );
    cleanups.push(() => azurite.stop());
    const deps = await provideTestDependencies({
      ...process.env,
      AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString,
    });
    cleanups.push(() => deps.stop());
    Object.assign(process.env, deps.env);
    const [db, containers] = await Promise.all([createTestDatabase("bench"), createTestContainers("bench")]);
    const ns = testNamespace("bench");
    cleanups.push(() => Promise.all([db.cleanup(), containers.cleanup(), ns.cleanup()]));

    const common = {
      JWT_SECRET: BENCH_SECRET,
      NATS_URL: ns.natsUrl,
      NATS_NAMESPACE: ns.namespace,
    };
    const track = (p: ServiceProcess) => {
      processes.push(p);
      const stopOne = p.stop;
      return {
        ...p,
        stop: async () => {
          const i = processes.indexOf(p);
          if (i >= 0) processes.splice(i, 1);
          await stopOne();
        },
      };
    };
    const startGateway = async (
      nodeArgs: string[] = [],
      connectionString = azurite.connectionString,
      extraEnv: NodeJS.ProcessEnv = {},
    ) =>
      track(
        await startServiceProcess(
          "blob-gateway",
          {
            ...common,
            GATEWAY_HOST: "127.0.0.1",
            GATEWAY_PORT: "0",
            AZURE_STORAGE_CONNECTION_STRING: connectionString,
            USER_LORA_CONTAINER: containers.userContainer,
            CLOUD_STORAGE_CONTAINER: containers.sharedContainer,
            ...extraEnv,
          },
          nodeArgs,
        ),
      );
    const startRegistryAndGateway: BenchEnvironment["startRegistryAndGateway"] = async (o = {}) => {
      const gateway = await startGateway(o.nodeArgs?.gateway, o.azureConnectionString);
      const registry = track(
        await startServiceProcess(
          "lora-registry",
          {
            ...common,
            REGISTRY_HOST: "127.0.0.1",
            REGISTRY_PORT: "0",
            DATABASE_URL: db.url,
            BLOB_GATEWAY_URL: gateway.url,
            // The suites upload several GB for one user.
            DEFAULT_QUOTA_BYTES: String(1024 ** 4),
            DEFAULT_QUOTA_COUNT: "100000",
            ...o.registryEnv,
          },
          o.nodeArgs?.registry,
        ),
      );
      return { registry, gateway };
    };
    const main = await startRegistryAndGateway();
    const userId = "6f1c2a7e-3b4d-4e5f-8a9b-0c1d2e3f4a5b";
    const tokens = {
      machine: await mintToken(BENCH_SECRET, { subject: "bench-machine", roles: ["machine"], ttlSeconds: 86_400 }),
      admin: await mintToken(BENCH_SECRET, { subject: "bench-admin", roles: ["admin"], ttlSeconds: 86_400 }),
      service: await mintToken(BENCH_SECRET, { subject: "bench", roles: ["service"], ttlSeconds: 86_400 }),
    };
    const userToken = await mintToken(BENCH_SECRET, { subject: userId, roles: [], ttlSeconds: 86_400 });
    const dispatcher = new Agent({ connections: 128 });
    cleanups.push(() => dispatcher.close());
    const grpc = (url: string, token: string) =>
      createGrpcTransport({ baseUrl: url, interceptors: [bearerInterceptor(token)] });
    return {
      work,
      azurite,
      // Azurite came from this harness, not from the variable the summary names.
      summary: deps.summary
        .replace(/^testkit: /, "")
        .replace("azurite: $AZURE_STORAGE_CONNECTION_STRING", "azurite: spawned by the harness")
        .replace(/ \| /g, "; "),
      userContainer: containers.userContainer,
      sharedContainer: containers.sharedContainer,
      nats: { url: ns.natsUrl, namespace: ns.namespace },
      userId,
      tokens,
      main,
      lora: createClient(LoraService, grpc(main.registry.url, userToken)),
      resolver: createClient(LoraResolverService, grpc(main.registry.url, tokens.machine)),
      dispatcher,
      startRegistryAndGateway,
      startGateway: (o = {}) => startGateway(o.nodeArgs, o.azureConnectionString, o.env),
      startMachineCache: async (label, o = {}) => {
        const dir = path.join(work, `machine-${label}`);
        const cache = track(
          await startServiceProcess(
            "machine-cache",
            {
              ...common,
              MACHINE_CACHE_HOST: "127.0.0.1",
              MACHINE_CACHE_PORT: "0",
              MACHINE_ID: `bench-${label}`,
              COMFYUI_LORA_DIR: path.join(dir, "models", "loras"),
              MODEL_CACHE_DB: path.join(dir, "model_cache.db"),
              REGISTRY_URL: o.registryUrl ?? main.registry.url,
              MIN_FREE_SPACE_GB: "0",
              LORA_CACHE_MAX_GB: "20",
              ...o.env,
            },
            o.nodeArgs,
          ),
        );
        // A stopped bench machine's files are of no further use: free the disk at once.
        return { ...cache, stop: () => cache.stop().then(() => fs.rm(dir, { recursive: true, force: true })) };
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
