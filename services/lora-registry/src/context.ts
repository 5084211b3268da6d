import { randomUUID } from "node:crypto";
import { BlobGatewayService, type EventNames, health } from "@emprops/contracts";
import {
  type Clock,
  createEventBus,
  createLogger,
  createServiceClient,
  createTokenVerifier,
  type EventBus,
  handlePostgresPoolErrors,
  type Logger,
  mintToken,
  createPeerTokenSigner,
  type PeerTokenSigner,
  systemClock,
  type TokenVerifier,
} from "@emprops/platform";
import type { Client } from "@connectrpc/connect";
import { Kysely, PostgresDialect } from "kysely";
import pg from "pg";
import type { RegistryConfig } from "./config.js";
import { pgTypes } from "./db/pg-types.js";
import type { Database } from "./db/schema/index.js";
import { HoldingsIndex } from "./holdings/holdings-index.js";
import { Signal } from "./jobs/signal.js";
import { createMetrics, type RegistryMetrics } from "./telemetry.js";

/** Everything a route or job needs, wired in one place so tests can swap parts. */
export interface AppContext {
  cfg: RegistryConfig;
  logger: Logger;
  db: Kysely<Database>;
  blobGateway: Client<typeof BlobGatewayService>;
  /** The gateway's grpc.health.v1, for this service's readiness. */
  blobGatewayHealth: Client<typeof health.Health>;
  bus: EventBus;
  names: EventNames;
  verifyToken: TokenVerifier;
  clock: Clock;
  /** New ids (upload sessions, events). */
  newId: () => string;
  metrics: RegistryMetrics;
  /** Raised after outbox rows are committed, so the relay publishes them at once. */
  outboxWritten: Signal;
  /** What every machine holds (this replica's copy, folded from LORA_HOLDINGS). */
  holdings: HoldingsIndex;
  /** Signs the tokens ResolveLoras hands out with peers; undefined when peer fetch is off. */
  peerTokens?: PeerTokenSigner;
}

export function createContext(cfg: RegistryConfig, overrides: Partial<AppContext> = {}): AppContext {
  const logger = overrides.logger ?? createLogger("lora-registry", cfg.logLevel);
  const db =
    overrides.db ??
    new Kysely<Database>({
      dialect: new PostgresDialect({
        pool: handlePostgresPoolErrors(
          new pg.Pool({ connectionString: cfg.databaseUrl, max: cfg.databasePoolSize, types: pgTypes }),
          logger,
        ),
      }),
    });
  const serviceToken = cfg.serviceToken
    ? cfg.serviceToken
    : () => mintToken(cfg.auth.secret ?? "", { subject: "lora-registry", roles: ["service"], ttlSeconds: 300 });
  const bus =
    overrides.bus && overrides.names
      ? { bus: overrides.bus, names: overrides.names }
      : createEventBus({ natsUrl: cfg.natsUrl, namespace: cfg.natsNamespace, logger, name: "lora-registry" });
  return {
    cfg,
    logger,
    db,
    blobGateway: createServiceClient(BlobGatewayService, cfg.blobGatewayUrl, serviceToken, [], {
      defaultTimeoutMs: cfg.blobGatewayTimeoutMs,
    }),
    blobGatewayHealth: createServiceClient(health.Health, cfg.blobGatewayUrl, serviceToken),
    bus: bus.bus,
    names: bus.names,
    verifyToken: createTokenVerifier(cfg.auth),
    clock: systemClock,
    newId: randomUUID,
    metrics: createMetrics(),
    outboxWritten: new Signal(),
    holdings: new HoldingsIndex(),
    peerTokens:
      cfg.peerFetch.maxPeers > 0
        ? createPeerTokenSigner(
            { privateKeyPem: cfg.peerFetch.tokenPrivateKeyPem, secret: cfg.auth.secret },
            { ttlSeconds: cfg.peerFetch.tokenTtlSeconds, clock: overrides.clock },
          )
        : undefined,
    ...overrides,
  };
}
