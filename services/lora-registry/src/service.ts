import { authInterceptor, type Consumer, startRpcServer, type RpcServer } from "@emprops/platform";
import { registryAccessPolicy } from "./access-policy.js";
import type { RegistryConfig } from "./config.js";
import { type AppContext, createContext } from "./context.js";
import { observeRegistry } from "./telemetry.js";
import { ensureDatabase } from "./db/ensure-database.js";
import { dependencyErrorInterceptor } from "./dependency-errors.js";
import { startDependencyHealth } from "./jobs/dependency-health.js";
import { migrateToLatest } from "./db/migrate.js";
import { startCacheStatsConsumer } from "./jobs/cache-stats-consumer.js";
import { startHoldingsFollower } from "./jobs/holdings-follower.js";
import { startOutboxRelay } from "./jobs/outbox-relay.js";
import { startStorageSweep } from "./jobs/storage-sweep.js";
import { startUploadReaper } from "./jobs/upload-reaper.js";
import { startUsageConsumer } from "./jobs/usage-consumer.js";
import { routes } from "./routes/index.js";

export interface RunningRegistry {
  ctx: AppContext;
  server: RpcServer;
  url: string;
  /** Resolves once connected to NATS (the outbox relay and the consumers then work). */
  ready: Promise<void>;
  stop(): Promise<void>;
}

/**
 * Migrates the database, starts the background work (outbox relay, upload
 * reaper, storage consistency sweep, usage and cache-stats consumers), then serves; stop() drains
 * calls, stops the jobs and closes everything.
 */
export async function startLoraRegistry(
  cfg: RegistryConfig,
  overrides: Partial<AppContext> = {},
): Promise<RunningRegistry> {
  const ctx = createContext(cfg, overrides);
  const stopObserving = observeRegistry(ctx.db, cfg.quota, ctx.clock);
  const jobs: { stop(): Promise<void> }[] = [];
  const stopJobs = async () => {
    for (const job of jobs.splice(0).reverse()) await job.stop();
  };
  try {
    if (!overrides.db) await ensureDatabase(cfg.databaseUrl, ctx.logger);
    await migrateToLatest(ctx.db);
    jobs.push(startOutboxRelay(ctx), startUploadReaper(ctx), startStorageSweep(ctx), startHoldingsFollower(ctx));
    const consumers: Consumer[] = await Promise.all([startUsageConsumer(ctx), startCacheStatsConsumer(ctx)]);
    jobs.push(...consumers);
    const server = await startRpcServer({
      name: "lora-registry",
      host: cfg.host,
      port: cfg.port,
      logger: ctx.logger,
      routes: routes(ctx),
      cors: { allowedOrigins: cfg.corsAllowedOrigins },
      interceptors: [authInterceptor(ctx.verifyToken, registryAccessPolicy), dependencyErrorInterceptor(ctx.logger)],
    });
    const dependencies = startDependencyHealth(ctx, server.health);
    await dependencies.firstChecked;
    let stopping: Promise<void> | undefined;
    const stop = () =>
      (stopping ??= (async () => {
        await dependencies.stop();
        await server.close();
        await stopJobs();
        stopObserving();
        await ctx.bus.close();
        await ctx.db.destroy();
      })());
    return { ctx, server, url: server.url, ready: ctx.bus.whenReady(), stop };
  } catch (err) {
    await stopJobs().catch(() => {});
    stopObserving();
    await ctx.bus.close().catch(() => {});
    await ctx.db.destroy().catch(() => {});
    throw err;
  }
}
