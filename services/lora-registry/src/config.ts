import { authConfig, commonEnvShape, env, parseEnv, type AuthConfig } from "@emprops/platform";
import { z } from "zod";

const GIB = 1024 ** 3;

/** Limits and defaults of the quota and of uploads. */
export interface QuotaConfig {
  /** Byte limit of a user without an admin override. */
  defaultMaxBytes: number;
  /** LoRA count limit of a user without an admin override. */
  defaultMaxCount: number;
  /** Largest single LoRA accepted. */
  maxLoraBytes: number;
  /** GetQuota warns at this share of the byte or count limit. */
  warningPercent: number;
}

export interface UploadConfig {
  /** An upload session not completed within this time is reaped. */
  sessionTtlSeconds: number;
  /** Lifetime of each signed upload URL (every Put Block is checked against it). */
  urlTtlSeconds: number;
  /** Croner pattern (with seconds) of the expired-session reaper. */
  reaperCron: string;
}

/** The storage consistency sweep (flat_file and upload sessions against the user LoRA container). */
export interface StorageSweepConfig {
  /** Croner pattern (with seconds) of the scheduled sweep. */
  cron: string;
  /** A blob no row or live session points at is deleted only once its last write is older than this. */
  orphanGraceMs: number;
}

export interface RegistryConfig {
  host: string;
  port: number;
  logLevel: string;
  databaseUrl: string;
  /** Connections in the PostgreSQL pool. */
  databasePoolSize: number;
  blobGatewayUrl: string;
  /** Deadline of a blob-gateway call (VerifyBlob has its own); a caller's shorter deadline wins. */
  blobGatewayTimeoutMs: number;
  /** Deadline of VerifyBlob, which streams the whole blob. */
  blobVerifyTimeoutMs: number;
  /** Token for calling the blob-gateway; minted from the JWT secret when empty. */
  serviceToken: string;
  auth: AuthConfig;
  natsUrl: string;
  natsNamespace: string;
  quota: QuotaConfig;
  upload: UploadConfig;
  storageSweep: StorageSweepConfig;
  /** Lifetime of read URLs handed to machines (0: the gateway's default). */
  downloadUrlTtlSeconds: number;
  /** The outbox relay also polls at this interval (other replicas' rows, missed wake-ups). */
  outboxPollMs: number;
  /** PostgreSQL and the blob-gateway are checked this often for the per-service health statuses. */
  dependencyCheckIntervalMs: number;
  /** A dependency check that takes longer counts as down. */
  dependencyCheckTimeoutMs: number;
  /** Applied usage batch ids are kept this long to drop redeliveries. */
  usageBatchRetentionDays: number;
  /** Browser origins (Connect-Web, e.g. the Studio) allowed by CORS; empty: none. */
  corsAllowedOrigins: string[];
  /** A machine whose latest holdings report is older than this is left out of placement answers. */
  holdingsMachineTtlMs: number;
  /** Peer fetch: how many holders of the same file ResolveLoras offers (0: none) and their tokens. */
  peerFetch: {
    maxPeers: number;
    tokenTtlSeconds: number;
    /** Ed25519 PKCS#8 PEM; without it tokens are HS256 with a key derived from JWT_SECRET. */
    tokenPrivateKeyPem?: string;
  };
}

const shape = {
  ...commonEnvShape,
  REGISTRY_HOST: env.host(),
  REGISTRY_PORT: env.port(50051),
  DATABASE_URL: env.url(["postgres", "postgresql"]),
  DATABASE_POOL_SIZE: z.coerce.number().int().min(1).max(500).default(20),
  BLOB_GATEWAY_URL: env.url(["http", "https"]).default("http://127.0.0.1:50052"),
  BLOB_GATEWAY_TIMEOUT_MS: z.coerce.number().int().min(100).max(600_000).default(5_000),
  BLOB_VERIFY_TIMEOUT_MS: z.coerce
    .number()
    .int()
    .min(1_000)
    .max(24 * 3_600_000)
    .default(15 * 60_000),
  REGISTRY_SERVICE_TOKEN: z.string().default(""),
  DEFAULT_QUOTA_BYTES: z.coerce
    .number()
    .int()
    .min(0)
    .max(Number.MAX_SAFE_INTEGER)
    .default(10 * GIB),
  DEFAULT_QUOTA_COUNT: z.coerce.number().int().min(0).max(2_147_483_647).default(100),
  MAX_LORA_BYTES: z.coerce
    .number()
    .int()
    .positive()
    .max(190 * 1024 ** 4, "must not exceed the largest block blob (190.7 TiB)")
    .default(2 * GIB),
  // Whole percent: the warning compares used × 100 ≥ max × percent in integers.
  QUOTA_WARNING_PERCENT: z.coerce.number().int().gt(0).max(100).default(80),
  UPLOAD_SESSION_TTL_SECONDS: z.coerce
    .number()
    .int()
    .min(60)
    .max(7 * 24 * 3600)
    .default(6 * 3600),
  UPLOAD_URL_TTL_SECONDS: z.coerce
    .number()
    .int()
    .min(60)
    .max(7 * 24 * 3600)
    .default(4 * 3600),
  UPLOAD_REAPER_CRON: env.cron("*/30 * * * * *"),
  STORAGE_SWEEP_CRON: env.cron("0 17 * * * *"),
  // Never below an hour: a blob this young may be a completion or preview whose row is being written.
  STORAGE_ORPHAN_GRACE_HOURS: z.coerce
    .number()
    .min(1)
    .max(90 * 24)
    .default(24),
  DOWNLOAD_URL_TTL_SECONDS: z.coerce
    .number()
    .int()
    .min(0)
    .max(24 * 3600)
    .default(0),
  OUTBOX_POLL_MS: z.coerce.number().int().min(50).max(600_000).default(5_000),
  DEPENDENCY_CHECK_INTERVAL_MS: z.coerce.number().int().min(100).max(600_000).default(5_000),
  DEPENDENCY_CHECK_TIMEOUT_MS: z.coerce.number().int().min(50).max(60_000).default(2_000),
  USAGE_BATCH_RETENTION_DAYS: env.positiveInt(14),
  CORS_ALLOWED_ORIGINS: env.origins(),
  HOLDINGS_MACHINE_TTL_SECONDS: z.coerce.number().int().min(5).max(3600).default(90),
  PEER_FETCH_MAX_PEERS: z.coerce.number().int().min(0).max(16).default(3),
  PEER_TOKEN_TTL_SECONDS: z.coerce.number().int().min(30).max(3600).default(300),
  PEER_TOKEN_PRIVATE_KEY: env.pem("PRIVATE KEY"),
};

/** The only place lora-registry reads the environment. */
export function loadConfig(source: NodeJS.ProcessEnv = process.env): RegistryConfig {
  const e = parseEnv(shape, source);
  return {
    host: e.REGISTRY_HOST,
    port: e.REGISTRY_PORT,
    logLevel: e.LOG_LEVEL,
    databaseUrl: e.DATABASE_URL,
    databasePoolSize: e.DATABASE_POOL_SIZE,
    blobGatewayUrl: e.BLOB_GATEWAY_URL,
    blobGatewayTimeoutMs: e.BLOB_GATEWAY_TIMEOUT_MS,
    blobVerifyTimeoutMs: e.BLOB_VERIFY_TIMEOUT_MS,
    serviceToken: e.REGISTRY_SERVICE_TOKEN,
    auth: authConfig(e, { REGISTRY_SERVICE_TOKEN: e.REGISTRY_SERVICE_TOKEN }),
    natsUrl: e.NATS_URL,
    natsNamespace: e.NATS_NAMESPACE,
    quota: {
      defaultMaxBytes: e.DEFAULT_QUOTA_BYTES,
      defaultMaxCount: e.DEFAULT_QUOTA_COUNT,
      maxLoraBytes: e.MAX_LORA_BYTES,
      warningPercent: e.QUOTA_WARNING_PERCENT,
    },
    upload: {
      sessionTtlSeconds: e.UPLOAD_SESSION_TTL_SECONDS,
      urlTtlSeconds: e.UPLOAD_URL_TTL_SECONDS,
      reaperCron: e.UPLOAD_REAPER_CRON,
    },
    storageSweep: { cron: e.STORAGE_SWEEP_CRON, orphanGraceMs: e.STORAGE_ORPHAN_GRACE_HOURS * 3_600_000 },
    downloadUrlTtlSeconds: e.DOWNLOAD_URL_TTL_SECONDS,
    outboxPollMs: e.OUTBOX_POLL_MS,
    dependencyCheckIntervalMs: e.DEPENDENCY_CHECK_INTERVAL_MS,
    dependencyCheckTimeoutMs: e.DEPENDENCY_CHECK_TIMEOUT_MS,
    usageBatchRetentionDays: e.USAGE_BATCH_RETENTION_DAYS,
    corsAllowedOrigins: e.CORS_ALLOWED_ORIGINS,
    holdingsMachineTtlMs: e.HOLDINGS_MACHINE_TTL_SECONDS * 1000,
    peerFetch: peerFetchConfig(e),
  };
}

/** Peer tokens need a key to be signed with: PEER_TOKEN_PRIVATE_KEY, else JWT_SECRET; with neither no peer is offered. */
function peerFetchConfig(e: {
  PEER_FETCH_MAX_PEERS: number;
  PEER_TOKEN_TTL_SECONDS: number;
  PEER_TOKEN_PRIVATE_KEY?: string;
  JWT_SECRET?: string;
}): RegistryConfig["peerFetch"] {
  return {
    maxPeers: e.PEER_TOKEN_PRIVATE_KEY || e.JWT_SECRET ? e.PEER_FETCH_MAX_PEERS : 0,
    tokenTtlSeconds: e.PEER_TOKEN_TTL_SECONDS,
    tokenPrivateKeyPem: e.PEER_TOKEN_PRIVATE_KEY,
  };
}
