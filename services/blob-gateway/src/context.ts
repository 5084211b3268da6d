import type { EventNames } from "@emprops/contracts";
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

/** Everything a route or job needs, wired in one place so tests can swap parts. */
export interface AppContext {
  cfg: GatewayConfig;
  logger: Logger;
  bus: EventBus;
  names: EventNames;
  verifyToken: TokenVerifier;
  clock: Clock;
}

export function createContext(cfg: GatewayConfig, overrides: Partial<AppContext> = {}): AppContext {
  const logger = overrides.logger ?? createLogger("blob-gateway", cfg.logLevel);
  const { bus, names } = createEventBus({
    natsUrl: cfg.natsUrl,
    namespace: cfg.natsNamespace,
    logger,
    name: "blob-gateway",
  });
  return {
    cfg,
    logger,
    bus,
    names,
    verifyToken: createTokenVerifier(cfg.auth),
    clock: systemClock,
    ...overrides,
  };
}
