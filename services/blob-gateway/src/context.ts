import { eventNames, type EventNames } from "@emprops/contracts";
import {
  type Clock,
  createEventBus,
  createLogger,
  createTokenVerifier,
  type EventBus,
  type Logger,
  systemClock,
  type TokenVerifier,
} from "@emprops/platform";
import type { GatewayConfig } from "./config.js";
import { SharedVerifications } from "./shared/shared-verifications.js";
import { BlobStorage } from "./storage/blob-storage.js";
import { createMetrics, type GatewayMetrics } from "./telemetry.js";

/** Everything a route or job needs, wired in one place so tests can swap parts. */
export interface AppContext {
  cfg: GatewayConfig;
  logger: Logger;
  bus: EventBus;
  names: EventNames;
  verifyToken: TokenVerifier;
  clock: Clock;
  storage: BlobStorage;
  metrics: GatewayMetrics;
  /** Shared LoRAs verified once per version before their URLs are signed. */
  shared: SharedVerifications;
}

export function createContext(cfg: GatewayConfig, overrides: Partial<AppContext> = {}): AppContext {
  const logger = overrides.logger ?? createLogger("blob-gateway", cfg.logLevel);
  const clock = overrides.clock ?? systemClock;
  const { bus, names } = overrides.bus
    ? { bus: overrides.bus, names: overrides.names ?? eventNames(cfg.natsNamespace) }
    : createEventBus({ natsUrl: cfg.natsUrl, namespace: cfg.natsNamespace, logger, name: "blob-gateway" });
  const ctx: AppContext = {
    cfg,
    logger,
    bus,
    names,
    verifyToken: createTokenVerifier(cfg.auth),
    clock,
    storage: overrides.storage ?? BlobStorage.fromConfig(cfg, clock),
    metrics: createMetrics(),
    ...overrides,
  } as AppContext;
  ctx.shared = overrides.shared ?? new SharedVerifications(ctx);
  return ctx;
}
