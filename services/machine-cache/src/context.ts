import { randomUUID } from "node:crypto";
import type { Client } from "@connectrpc/connect";
import { type EventNames, LoraResolverService } from "@emprops/contracts";
import {
  type Clock,
  createEventBus,
  createLogger,
  createServiceClient,
  createTokenVerifier,
  type EventBus,
  type Logger,
  mintToken,
  systemClock,
  type TokenVerifier,
} from "@emprops/platform";
import { Agent, type Dispatcher } from "undici";
import { userLoraModes } from "./cache/cache-layout.js";
import { Evictor } from "./cache/evictor.js";
import { type FetchedLora, LoraFetcher } from "./cache/fetch-lora.js";
import { LoraCache } from "./cache/lora-cache.js";
import { Pins } from "./cache/pins.js";
import { SpaceManager } from "./cache/space-manager.js";
import { Warmer } from "./cache/warmer.js";
import type { MachineCacheConfig } from "./config.js";
import { type Db, openDatabase } from "./db/open-database.js";
import { HashPool } from "./download/hash-pool.js";
import { SingleFlight } from "./download/singleflight.js";
import { HoldingsPublisher } from "./reporting/holdings-publisher.js";
import { StatsPublisher } from "./reporting/stats-publisher.js";
import { UsageReporter } from "./reporting/usage-reporter.js";
import { cacheStats } from "./reporting/cache-stats.js";
import { createMetrics, type Metrics, observeCacheStats } from "./telemetry.js";

/** What tests and the composition root may replace. */
export interface BaseContext {
  cfg: MachineCacheConfig;
  logger: Logger;
  resolver: Client<typeof LoraResolverService>;
  bus: EventBus;
  names: EventNames;
  verifyToken: TokenVerifier;
  clock: Clock;
  newId: () => string;
  /** model_cache.db. */
  db: Db;
  /** HTTP client pool for Blob Storage downloads. */
  dispatcher: Dispatcher;
  metrics: Metrics;
}

/** Everything a route or job needs, wired in one place so tests can swap parts. */
export interface AppContext extends BaseContext {
  /** The budget and every eviction decision. */
  space: SpaceManager;
  /** One flight per file: reserve, download, verify, register. */
  fetcher: LoraFetcher;
  /** EnsureLoras batches. */
  cache: LoraCache;
  usage: UsageReporter;
  stats: StatsPublisher;
  /** What this node holds, for the registry's holdings index. */
  holdings: HoldingsPublisher;
  warmer: Warmer;
  /** The cache-statistics gauges; stopped with the service. */
  gauges: { stop(): void };
}

export function createContext(cfg: MachineCacheConfig, overrides: Partial<BaseContext> = {}): AppContext {
  const logger = overrides.logger ?? createLogger("machine-cache", cfg.logLevel).child({ machine_id: cfg.machineId });
  const machineToken = cfg.machineToken
    ? cfg.machineToken
    : () => mintToken(cfg.auth.secret ?? "", { subject: cfg.machineId, roles: ["machine"], ttlSeconds: 300 });
  const { bus, names } = overrides.bus
    ? { bus: overrides.bus, names: overrides.names as EventNames }
    : createEventBus({
        natsUrl: cfg.natsUrl,
        namespace: cfg.natsNamespace,
        logger,
        name: `machine-cache-${cfg.machineId}`,
      });
  const base: BaseContext = {
    cfg,
    logger,
    resolver: overrides.resolver ?? createServiceClient(LoraResolverService, cfg.registryUrl, machineToken),
    bus,
    names,
    verifyToken: overrides.verifyToken ?? createTokenVerifier(cfg.auth),
    clock: overrides.clock ?? systemClock,
    newId: overrides.newId ?? randomUUID,
    db: overrides.db ?? openDatabase(cfg.modelCacheDbPath, { lockWaitMs: cfg.modelCacheDbLockWaitMs }),
    dispatcher:
      overrides.dispatcher ??
      new Agent({
        connections: cfg.download.concurrency * cfg.download.partsPerFile + 2,
        keepAliveTimeout: 10_000,
      }),
    metrics: overrides.metrics ?? createMetrics(),
  };
  const gauges = observeCacheStats(() =>
    cacheStats({
      db: base.db,
      loraDir: cfg.loraDir,
      userLoraDir: cfg.userLoraDir,
      machineId: cfg.machineId,
      clock: base.clock,
    }),
  );
  const { db, clock, metrics, resolver, dispatcher } = base;
  const { loraDir, machineId } = cfg;
  const holdings = new HoldingsPublisher({
    db,
    bus,
    names,
    machineId,
    pool: cfg.pool,
    peerAddress: cfg.peerAddress,
    loraDir,
    clock,
    logger,
    ...cfg.holdings,
  });
  const pins = new Pins();
  const downloads = new SingleFlight<FetchedLora>();
  const space = new SpaceManager({
    db,
    loraDir,
    evictor: new Evictor({ db, loraDir, clock, logger, metrics, holdings }),
    clock,
    logger,
    busy: (p) => pins.has(p) || downloads.has(p),
    warmMaxEvictPercent: cfg.warmMaxEvictPercent,
  });
  const resolving = { resolver, machineId, logger, registryTimeoutMs: cfg.registryTimeoutMs };
  const fetcher = new LoraFetcher({
    ...resolving,
    db,
    loraDir,
    userLoraDir: cfg.userLoraDir,
    userLoraFileMode: userLoraModes(cfg.userLoraGroupReadable).file,
    download: cfg.download,
    dispatcher,
    hashes: new HashPool(),
    clock,
    metrics,
    space,
    downloads,
    holdings,
    peerFetch: cfg.peer.fetchEnabled,
  });
  const cache = new LoraCache({
    ...resolving,
    db,
    loraDir,
    clock,
    metrics,
    revalidateAfterMs: cfg.revalidateAfterMs,
    revalidateBudgetMs: cfg.revalidateBudgetMs,
    concurrency: cfg.download.concurrency,
    pins,
    space,
    fetcher,
  });
  return {
    ...base,
    space,
    fetcher,
    cache,
    gauges,
    holdings,
    usage: new UsageReporter({
      db: base.db,
      bus,
      names,
      machineId: cfg.machineId,
      newId: base.newId,
      logger,
      batchSize: cfg.usageBatchSize,
      intervalMs: cfg.usageFlushIntervalMs,
    }),
    stats: new StatsPublisher({
      db: base.db,
      bus,
      names,
      machineId: cfg.machineId,
      loraDir: cfg.loraDir,
      userLoraDir: cfg.userLoraDir,
      clock: base.clock,
      logger,
      intervalMs: cfg.statsIntervalMs,
    }),
    warmer: new Warmer({ ...resolving, db, cache, fetcher }),
  };
}
