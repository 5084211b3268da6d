import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { LoraAdminService } from "@emprops/contracts";
import { createServiceClient, mintToken } from "@emprops/platform";
import { type RunningGateway, loadConfig as gatewayConfig, startBlobGateway } from "@emprops/blob-gateway";
import { type RunningRegistry, loadConfig as registryConfig, startLoraRegistry } from "@emprops/lora-registry";
import { type RunningMachineCache, loadConfig as machineConfig, startMachineCache } from "@emprops/machine-cache";

/** Where the stack's dependencies are and how its services are set up. */
export interface StackOptions {
  databaseUrl: string;
  natsUrl: string;
  azureConnectionString: string;
  jwtSecret: string;
  /** Directory holding the machine cache's models/loras and model_cache.db. */
  machineDir: string;
  host?: string;
  /** 0 = free ports (tests); npm start uses the documented defaults. */
  ports?: { registry: number; gateway: number; machineCache: number };
  natsNamespace?: string;
  userContainer?: string;
  sharedContainer?: string;
  machineId?: string;
  logLevel?: string;
  /** Extra environment per service, as each service's config reads it. */
  env?: { registry?: NodeJS.ProcessEnv; gateway?: NodeJS.ProcessEnv; machineCache?: NodeJS.ProcessEnv };
}

export interface RunningStack {
  gateway: RunningGateway;
  registry: RunningRegistry;
  machineCache: RunningMachineCache;
  /**
   * Resolves once every service is connected to NATS, the machine cache has
   * published its first statistics and the registry has them (an admin's
   * GetCacheStats lists the machine from then on).
   */
  ready: Promise<void>;
  stop(): Promise<void>;
}

/**
 * The composition root: the three services in one process, wired to each
 * other, each configured through its own environment parser exactly as in
 * production.
 */
export async function startStack(opts: StackOptions): Promise<RunningStack> {
  const host = opts.host ?? "127.0.0.1";
  const ports = opts.ports ?? { registry: 0, gateway: 0, machineCache: 0 };
  const common = {
    JWT_SECRET: opts.jwtSecret,
    NATS_URL: opts.natsUrl,
    NATS_NAMESPACE: opts.natsNamespace ?? "",
    LOG_LEVEL: opts.logLevel ?? "info",
  };
  const gateway = await startBlobGateway(
    gatewayConfig({
      ...common,
      GATEWAY_HOST: host,
      GATEWAY_PORT: String(ports.gateway),
      AZURE_STORAGE_CONNECTION_STRING: opts.azureConnectionString,
      USER_LORA_CONTAINER: opts.userContainer,
      CLOUD_STORAGE_CONTAINER: opts.sharedContainer,
      ...opts.env?.gateway,
    }),
  );
  const started: { stop(): Promise<void> }[] = [gateway];
  try {
    const registry = await startLoraRegistry(
      registryConfig({
        ...common,
        REGISTRY_HOST: host,
        REGISTRY_PORT: String(ports.registry),
        DATABASE_URL: opts.databaseUrl,
        BLOB_GATEWAY_URL: gateway.url,
        ...opts.env?.registry,
      }),
    );
    started.unshift(registry);
    const machineCache = await startMachineCache(
      machineConfig({
        ...common,
        MACHINE_CACHE_HOST: host,
        MACHINE_CACHE_PORT: String(ports.machineCache),
        MACHINE_ID: opts.machineId ?? "local-machine",
        COMFYUI_LORA_DIR: path.join(opts.machineDir, "models", "loras"),
        MODEL_CACHE_DB: path.join(opts.machineDir, "model_cache.db"),
        REGISTRY_URL: registry.url,
        ...opts.env?.machineCache,
      }),
    );
    started.unshift(machineCache);
    const machineId = machineCache.ctx.cfg.machineId;
    const ready = Promise.all([gateway.ready, registry.ready, machineCache.ready]).then(async () => {
      // Separate in-process buses (NATS_URL=memory) never carry the statistics to the registry.
      if (opts.natsUrl === "memory") return;
      await registryHasStats(registry.url, opts.jwtSecret, machineId);
    });
    ready.catch(() => {}); // a stack stopped before it was ready
    return {
      gateway,
      registry,
      machineCache,
      ready,
      stop: async () => {
        for (const s of started) await s.stop();
      },
    };
  } catch (err) {
    for (const s of started) await s.stop().catch(() => {});
    throw err;
  }
}

/** Waits until the registry lists the machine's statistics (they arrive over NATS within moments). */
async function registryHasStats(registryUrl: string, jwtSecret: string, machineId: string): Promise<void> {
  const admin = createServiceClient(LoraAdminService, registryUrl, () =>
    mintToken(jwtSecret, { subject: "dev-stack", roles: ["admin"], ttlSeconds: 60 }),
  );
  for (;;) {
    const { machines } = await admin.getCacheStats({ machineId });
    if (machines.length > 0) return;
    await sleep(50);
  }
}
