import fs from "node:fs/promises";
import {
  authInterceptor,
  type Consumer,
  createPeerTokenVerifier,
  peerTokensConfigured,
  startRpcServer,
  type RpcServer,
} from "@emprops/platform";
import { machineCacheAccessPolicy } from "./access-policy.js";
import { userLoraModes } from "./cache/cache-layout.js";
import type { MachineCacheConfig } from "./config.js";
import { type AppContext, type BaseContext, createContext } from "./context.js";
import { seedSettings } from "./db/settings.js";
import { databaseBusyInterceptor } from "./db/write-transaction.js";
import { startAgeEvictionJob } from "./jobs/age-eviction-job.js";
import { startInvalidationConsumer } from "./jobs/invalidation-consumer.js";
import { moveUserLorasOutOfComfyFolders } from "./jobs/move-user-loras.js";
import { reconcile } from "./jobs/reconcile.js";
import { type PeerServer, startPeerServer } from "./peer/peer-server.js";
import { routes } from "./routes/index.js";

export interface RunningMachineCache {
  ctx: AppContext;
  server: RpcServer;
  url: string;
  /** Where peers of the pool fetch this node's files (when MACHINE_PEER_ADDRESS is set). */
  peer?: PeerServer;
  /** Resolves once connected to NATS and the first cache statistics are published. */
  ready: Promise<void>;
  stop(): Promise<void>;
}

/**
 * Serves this node's cache: seeds the settings, reconciles model_cache.db with
 * the disk, then serves and starts the invalidation consumer, the age
 * eviction schedule and the usage and statistics reporters. stop() drains
 * calls, cancels downloads (their partial files stay for a resume) and
 * closes everything.
 */
export async function startMachineCache(
  cfg: MachineCacheConfig,
  overrides: Partial<BaseContext> = {},
): Promise<RunningMachineCache> {
  const ctx = createContext(cfg, overrides);
  ctx.logger.info({ path: cfg.modelCacheDbPath, chosen_by: cfg.modelCacheDbChosenBy }, "model_cache.db in use");
  let server: RpcServer | undefined;
  let peer: PeerServer | undefined;
  let consumer: Consumer | undefined;
  let ageJob: { stop(): void } | undefined;
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      // Downloads in flight are cancelled rather than waited for (their partial files stay for a
      // resume), so the calls waiting on them answer and the server drains at once.
      await Promise.all([server?.close(), peer?.close(), ctx.cache.stop(), ctx.warmer.stop()]);
      ageJob?.stop();
      ctx.stats.stop();
      await ctx.holdings.stop();
      ctx.gauges.stop();
      await consumer?.stop();
      await ctx.usage.stop();
      ctx.db.close();
      await ctx.dispatcher.close();
      await ctx.bus.close();
    })());
  try {
    await seedSettings(ctx.db, cfg.settingOverrides);
    // Only this service's user (or group) may enter the user LoRA directory; ComfyUI reads it as that user.
    const modes = userLoraModes(cfg.userLoraGroupReadable);
    await fs.mkdir(cfg.userLoraDir, { recursive: true, mode: modes.dir });
    await fs.chmod(cfg.userLoraDir, modes.dir);
    await moveUserLorasOutOfComfyFolders({
      db: ctx.db,
      loraDir: cfg.loraDir,
      userLoraDir: cfg.userLoraDir,
      fileMode: modes.file,
      logger: ctx.logger,
    });
    await reconcile({
      db: ctx.db,
      loraDir: cfg.loraDir,
      userLoraDir: cfg.userLoraDir,
      clock: ctx.clock,
      logger: ctx.logger,
      partialMaxAgeMs: cfg.download.partialMaxAgeMs,
      removeUnownedFiles: cfg.reconcileRemoveUnowned,
      metrics: ctx.metrics,
    });
    server = await startRpcServer({
      name: "machine-cache",
      host: cfg.host,
      port: cfg.port,
      logger: ctx.logger,
      routes: routes(ctx),
      interceptors: [authInterceptor(ctx.verifyToken, machineCacheAccessPolicy), databaseBusyInterceptor],
    });
    peer = await startPeerServerIfAddressed(ctx);
    consumer = await startInvalidationConsumer({
      bus: ctx.bus,
      names: ctx.names,
      machineId: cfg.machineId,
      db: ctx.db,
      space: ctx.space,
      clock: ctx.clock,
      logger: ctx.logger,
    });
    ageJob = startAgeEvictionJob({ pattern: cfg.ageEvictionCron, space: ctx.space, logger: ctx.logger });
    ctx.usage.start();
    ctx.stats.start();
    ctx.holdings.start();
    return { ctx, server, url: server.url, peer, ready: ctx.stats.firstPublished, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** The peer server, when the node has a peer address and a key to check peer tokens with. */
async function startPeerServerIfAddressed(ctx: AppContext): Promise<PeerServer | undefined> {
  const { cfg } = ctx;
  if (cfg.peerAddress === "") return undefined;
  const keys = { publicKeyPem: cfg.peer.tokenPublicKeyPem, secret: cfg.auth.secret };
  if (!peerTokensConfigured(keys, "verify")) {
    ctx.logger.warn("MACHINE_PEER_ADDRESS is set but no PEER_TOKEN_PUBLIC_KEY (or JWT_SECRET): serving no peers");
    return undefined;
  }
  return startPeerServer({
    db: ctx.db,
    machineId: cfg.machineId,
    verify: createPeerTokenVerifier(keys, { clock: ctx.clock, clockSkewSeconds: cfg.auth.clockSkewSeconds }),
    logger: ctx.logger,
    metrics: ctx.metrics,
    host: cfg.peer.listenHost,
    port: cfg.peer.listenPort,
    maxUploads: cfg.peer.maxUploads,
    uploadBytesPerSecond: cfg.peer.uploadBytesPerSecond,
  });
}
