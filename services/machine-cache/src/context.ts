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
import type { MachineCacheConfig } from "./config.js";

/** Everything a route or job needs, wired in one place so tests can swap parts. */
export interface AppContext {
  cfg: MachineCacheConfig;
  logger: Logger;
  resolver: Client<typeof LoraResolverService>;
  bus: EventBus;
  names: EventNames;
  verifyToken: TokenVerifier;
  clock: Clock;
}

export function createContext(cfg: MachineCacheConfig, overrides: Partial<AppContext> = {}): AppContext {
  const logger = overrides.logger ?? createLogger("machine-cache", cfg.logLevel).child({ machine_id: cfg.machineId });
  const machineToken = cfg.machineToken
    ? cfg.machineToken
    : () => mintToken(cfg.auth.secret ?? "", { subject: cfg.machineId, roles: ["machine"], ttlSeconds: 300 });
  const { bus, names } = createEventBus({
    natsUrl: cfg.natsUrl,
    namespace: cfg.natsNamespace,
    logger,
    name: `machine-cache-${cfg.machineId}`,
  });
  return {
    cfg,
    logger,
    resolver: createServiceClient(LoraResolverService, cfg.registryUrl, machineToken),
    bus,
    names,
    verifyToken: createTokenVerifier(cfg.auth),
    clock: systemClock,
    ...overrides,
  };
}
