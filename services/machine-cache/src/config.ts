import { existsSync } from "node:fs";
import path from "node:path";
import { authConfig, commonEnvShape, ConfigError, env, parseEnv, type AuthConfig } from "@emprops/platform";
import { z } from "zod";
import { DEFAULT_USER_LORA_DIR } from "./cache/cache-layout.js";
import { EVICTION_POLICIES, type EvictionPolicy } from "./db/settings.js";
import type { DownloadSettings } from "./download/download-file.js";

const MIB = 1024 * 1024;

/** How LoRA files are fetched from Blob Storage: how one file is downloaded, and around it. */
export interface DownloadConfig extends DownloadSettings {
  /** LoRAs of one request downloaded at the same time. */
  concurrency: number;
  /** Partial downloads older than this are removed at start-up instead of resumed. */
  partialMaxAgeMs: number;
}

export interface PeerConfig {
  /** Where the peer server listens (when peerAddress is set). */
  listenHost: string;
  listenPort: number;
  /** Peer requests served at once; more are answered 429. */
  maxUploads: number;
  /** Bytes per second all uploads together may send (0: unlimited). */
  uploadBytesPerSecond: number;
  /** Fetch from the peers ResolveLoras offers before the blob. */
  fetchEnabled: boolean;
  /** Ed25519 SPKI PEM the registry's peer tokens are checked with; else a key derived from JWT_SECRET. */
  tokenPublicKeyPem?: string;
}

export interface MachineCacheConfig {
  host: string;
  port: number;
  logLevel: string;
  /** This node's id: durable consumer name and stats key. */
  machineId: string;
  /** The machines that may fetch from each other and are placed together (MACHINE_POOL). */
  pool: string;
  /** Where peers of the pool reach this node's cached files; empty: it serves none. */
  peerAddress: string;
  /** Serving verified files to peers of the pool, and fetching from them. */
  peer: PeerConfig;
  /** What this node holds is reported to the holdings index: a heartbeat this often, a full snapshot that often. */
  holdings: { heartbeatIntervalMs: number; snapshotIntervalMs: number };
  /** ComfyUI's models/loras directory; shared LoRAs go under shared/. */
  loraDir: string;
  /** Where user LoRAs are cached: {dir}/{user_id}/{lora_id}-{name}; by default where ComfyUI lists no model. */
  userLoraDir: string;
  /** The user LoRA directory is readable by the service's group (0750/0640) rather than its user only (0700/0600). */
  userLoraGroupReadable: boolean;
  /** Path of model_cache.db. */
  modelCacheDbPath: string;
  /** Why that file: MODEL_CACHE_DB, the EmProps node package's database, or the default beside ComfyUI. */
  modelCacheDbChosenBy: "MODEL_CACHE_DB" | "emprops_comfy_nodes" | "default";
  /** How long a write waits, without blocking, for another process's lock on model_cache.db before failing retriably. */
  modelCacheDbLockWaitMs: number;
  /** Start-up reconciliation also removes files with no row in model_cache.db (otherwise they are only reported). */
  reconcileRemoveUnowned: boolean;
  registryUrl: string;
  /** Token with the machine role; minted from the JWT secret when empty. */
  machineToken: string;
  /** Environment overrides of the model_cache.db settings (undefined: keep the stored value). */
  settingOverrides: {
    loraCacheMaxGb?: number;
    loraMaxAgeDays?: number;
    loraEvictionEnabled?: boolean;
    minFreeSpaceGb?: number;
    loraEvictionPolicy?: EvictionPolicy;
  };
  /** Croner pattern of the age eviction (default daily at 03:00, local time). */
  ageEvictionCron: string;
  /** A cache hit older than this since its last registry check is checked again (0: every hit). */
  revalidateAfterMs: number;
  /** How long a hit waits for that check before its cached copy is served unchecked. */
  revalidateBudgetMs: number;
  /** Deadline of every call to the registry (a caller's shorter deadline wins). */
  registryTimeoutMs: number;
  download: DownloadConfig;
  /** MachineCacheStatsReported is published this often. */
  statsIntervalMs: number;
  /** Usage rows are sent to the registry this often. */
  usageFlushIntervalMs: number;
  /** Largest LoraUsageBatch. */
  usageBatchSize: number;
  /** Warming may evict at most this share of lora_cache_max_gb per 24 hours. */
  warmMaxEvictPercent: number;
  auth: AuthConfig;
  natsUrl: string;
  natsNamespace: string;
}

const optionalNonNegative = z.coerce.number().min(0, "must be zero or more").optional();
const int = (min: number, max: number, fallback: number) => z.coerce.number().int().min(min).max(max).default(fallback);

const shape = {
  ...commonEnvShape,
  MACHINE_CACHE_HOST: env.host(),
  MACHINE_CACHE_PORT: env.port(50053),
  MACHINE_ID: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,128}$/, "must be 1-128 letters, digits, '.', '_' or '-'")
    .default("local-machine"),
  MACHINE_POOL: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,64}$/, "must be 1-64 letters, digits, '.', '_' or '-'")
    .default("default"),
  MACHINE_PEER_ADDRESS: z
    .string()
    .regex(/^$|^[A-Za-z0-9.-]+:\d{1,5}$|^\[[0-9A-Fa-f:.]+\]:\d{1,5}$/, "must be host:port, or empty")
    .default(""),
  PEER_LISTEN_ADDRESS: z
    .string()
    .regex(/^[A-Za-z0-9.-]+:\d{1,5}$|^\[[0-9A-Fa-f:.]+\]:\d{1,5}$/, "must be host:port")
    .optional(),
  PEER_MAX_UPLOADS: int(1, 256, 8),
  PEER_UPLOAD_MAX_MB_PER_SECOND: z.coerce.number().min(0).max(100_000).default(400),
  PEER_FETCH_ENABLED: env.bool(true),
  PEER_FETCH_CONNECTIONS: int(1, 32, 2),
  PEER_STALL_TIMEOUT_MS: int(100, 600_000, 3_000),
  PEER_TOKEN_PUBLIC_KEY: env.pem("PUBLIC KEY"),
  HOLDINGS_HEARTBEAT_SECONDS: int(1, 600, 30),
  // Below half of LORA_HOLDINGS' retention (an hour), so the stream always holds a live node's latest snapshot.
  HOLDINGS_SNAPSHOT_SECONDS: int(10, 1800, 600),
  COMFYUI_LORA_DIR: z.string().min(1).default("/workspace/ComfyUI/models/loras"),
  USER_LORA_DIR: z.string().optional(),
  USER_LORA_DIR_IN_MODELS: env.bool(false),
  USER_LORA_GROUP_READABLE: env.bool(false),
  MODEL_CACHE_DB: z.string().optional(),
  MODEL_CACHE_DB_LOCK_WAIT_MS: int(0, 600_000, 5_000),
  LORA_RECONCILE_REMOVE_UNOWNED: env.bool(false),
  REGISTRY_URL: env.url(["http", "https"]).default("http://127.0.0.1:50051"),
  MACHINE_TOKEN: z.string().default(""),
  LORA_CACHE_MAX_GB: optionalNonNegative,
  LORA_MAX_AGE_DAYS: optionalNonNegative,
  LORA_EVICTION_ENABLED: z.enum(["true", "false"], { message: "must be true or false" }).optional(),
  MIN_FREE_SPACE_GB: optionalNonNegative,
  LORA_EVICTION_POLICY: z.enum(EVICTION_POLICIES, { message: `must be ${EVICTION_POLICIES.join(" or ")}` }).optional(),
  LORA_AGE_EVICTION_CRON: env.cron("0 3 * * *"),
  LORA_REVALIDATE_AFTER_SECONDS: int(0, 30 * 24 * 3600, 60),
  LORA_REVALIDATE_BUDGET_MS: int(0, 60_000, 1_500),
  REGISTRY_TIMEOUT_MS: int(100, 600_000, 5_000),
  LORA_DOWNLOAD_CONCURRENCY: int(1, 64, 4),
  LORA_DOWNLOAD_PARALLEL_MIN_MB: int(1, 1 << 20, 64),
  LORA_DOWNLOAD_PART_MB: int(1, 1024, 16),
  LORA_DOWNLOAD_PARTS: int(1, 32, 4),
  LORA_DOWNLOAD_MAX_ATTEMPTS: int(1, 50, 5),
  LORA_DOWNLOAD_RETRY_MIN_MS: int(0, 600_000, 500),
  LORA_DOWNLOAD_RETRY_MAX_MS: int(0, 3_600_000, 30_000),
  LORA_DOWNLOAD_STALL_TIMEOUT_SECONDS: int(1, 3600, 30),
  LORA_PARTIAL_MAX_AGE_HOURS: int(0, 24 * 365, 24),
  CACHE_STATS_INTERVAL_SECONDS: int(1, 24 * 3600, 60),
  USAGE_FLUSH_INTERVAL_SECONDS: int(1, 3600, 5),
  USAGE_BATCH_SIZE: int(1, 10_000, 500),
  LORA_WARM_MAX_EVICT_PERCENT: z.coerce.number().min(0).max(100).default(20),
};

/** The only place machine-cache reads the environment. */
export function loadConfig(source: NodeJS.ProcessEnv = process.env): MachineCacheConfig {
  const e = parseEnv(shape, source);
  const loraDir = path.resolve(e.COMFYUI_LORA_DIR);
  const userLoraDir = userLoraDirOf(e.USER_LORA_DIR, loraDir, e.USER_LORA_DIR_IN_MODELS);
  return {
    host: e.MACHINE_CACHE_HOST,
    port: e.MACHINE_CACHE_PORT,
    logLevel: e.LOG_LEVEL,
    machineId: e.MACHINE_ID,
    pool: e.MACHINE_POOL,
    peerAddress: e.MACHINE_PEER_ADDRESS,
    peer: {
      ...peerListen(e.PEER_LISTEN_ADDRESS, e.MACHINE_PEER_ADDRESS),
      maxUploads: e.PEER_MAX_UPLOADS,
      uploadBytesPerSecond: e.PEER_UPLOAD_MAX_MB_PER_SECOND * MIB,
      fetchEnabled: e.PEER_FETCH_ENABLED,
      tokenPublicKeyPem: e.PEER_TOKEN_PUBLIC_KEY,
    },
    holdings: {
      heartbeatIntervalMs: e.HOLDINGS_HEARTBEAT_SECONDS * 1000,
      snapshotIntervalMs: e.HOLDINGS_SNAPSHOT_SECONDS * 1000,
    },
    loraDir,
    userLoraDir,
    userLoraGroupReadable: e.USER_LORA_GROUP_READABLE,
    ...modelCacheDb(e.MODEL_CACHE_DB, loraDir),
    modelCacheDbLockWaitMs: e.MODEL_CACHE_DB_LOCK_WAIT_MS,
    reconcileRemoveUnowned: e.LORA_RECONCILE_REMOVE_UNOWNED,
    registryUrl: e.REGISTRY_URL,
    machineToken: e.MACHINE_TOKEN,
    settingOverrides: {
      loraCacheMaxGb: e.LORA_CACHE_MAX_GB,
      loraMaxAgeDays: e.LORA_MAX_AGE_DAYS,
      loraEvictionEnabled: e.LORA_EVICTION_ENABLED === undefined ? undefined : e.LORA_EVICTION_ENABLED === "true",
      minFreeSpaceGb: e.MIN_FREE_SPACE_GB,
      loraEvictionPolicy: e.LORA_EVICTION_POLICY,
    },
    ageEvictionCron: e.LORA_AGE_EVICTION_CRON,
    revalidateAfterMs: e.LORA_REVALIDATE_AFTER_SECONDS * 1000,
    revalidateBudgetMs: e.LORA_REVALIDATE_BUDGET_MS,
    registryTimeoutMs: e.REGISTRY_TIMEOUT_MS,
    download: {
      concurrency: e.LORA_DOWNLOAD_CONCURRENCY,
      parallelThresholdBytes: e.LORA_DOWNLOAD_PARALLEL_MIN_MB * MIB,
      partSizeBytes: e.LORA_DOWNLOAD_PART_MB * MIB,
      partsPerFile: e.LORA_DOWNLOAD_PARTS,
      maxAttempts: e.LORA_DOWNLOAD_MAX_ATTEMPTS,
      retryMinMs: e.LORA_DOWNLOAD_RETRY_MIN_MS,
      retryMaxMs: Math.max(e.LORA_DOWNLOAD_RETRY_MIN_MS, e.LORA_DOWNLOAD_RETRY_MAX_MS),
      stallTimeoutMs: e.LORA_DOWNLOAD_STALL_TIMEOUT_SECONDS * 1000,
      peerStallTimeoutMs: e.PEER_STALL_TIMEOUT_MS,
      peerConnections: e.PEER_FETCH_CONNECTIONS,
      partialMaxAgeMs: e.LORA_PARTIAL_MAX_AGE_HOURS * 3600 * 1000,
    },
    statsIntervalMs: e.CACHE_STATS_INTERVAL_SECONDS * 1000,
    usageFlushIntervalMs: e.USAGE_FLUSH_INTERVAL_SECONDS * 1000,
    usageBatchSize: e.USAGE_BATCH_SIZE,
    warmMaxEvictPercent: e.LORA_WARM_MAX_EVICT_PERCENT,
    auth: authConfig(e, { MACHINE_TOKEN: e.MACHINE_TOKEN }),
    natsUrl: e.NATS_URL,
    natsNamespace: e.NATS_NAMESPACE,
  };
}

/**
 * USER_LORA_DIR, by default <ComfyUI>/user_lora_cache: outside ComfyUI's
 * models directory, so no model folder of ComfyUI lists another user's
 * LoRA. A directory inside it (the specification's models/loras/users) is
 * refused unless USER_LORA_DIR_IN_MODELS=true accepts that risk: ComfyUI's
 * own LoraLoader then lists every cached user LoRA and loads any by name,
 * without the job's user being checked.
 */
function userLoraDirOf(setting: string | undefined, loraDir: string, inModelsAllowed: boolean): string {
  const comfyDir = path.resolve(loraDir, "..", "..");
  const dir = path.resolve(setting ?? path.join(comfyDir, DEFAULT_USER_LORA_DIR));
  const models = path.dirname(loraDir);
  const inside = (parent: string) => {
    const rel = path.relative(parent, dir);
    return rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel));
  };
  if ((inside(models) || inside(loraDir)) && !inModelsAllowed) {
    throw new ConfigError([
      `USER_LORA_DIR: ${dir} is inside ComfyUI's models directory (${models}), where ComfyUI lists every file to ` +
        "every workflow; choose a directory outside it, or set USER_LORA_DIR_IN_MODELS=true to accept that risk",
    ]);
  }
  return dir;
}

/**
 * model_cache.db: MODEL_CACHE_DB when set; else, when the EmProps node
 * package is installed in this ComfyUI (<ComfyUI>/models/loras is the LoRA
 * directory), the database the package itself uses,
 * custom_nodes/emprops_comfy_nodes/db/model_cache.db, so both see one set
 * of models and one LRU; else <ComfyUI>/model_cache.db.
 */
function modelCacheDb(
  setting: string | undefined,
  loraDir: string,
): Pick<MachineCacheConfig, "modelCacheDbPath" | "modelCacheDbChosenBy"> {
  if (setting) return { modelCacheDbPath: path.resolve(setting), modelCacheDbChosenBy: "MODEL_CACHE_DB" };
  const comfyDir = path.resolve(loraDir, "..", "..");
  const packageDbDir = path.join(comfyDir, "custom_nodes", "emprops_comfy_nodes", "db");
  // The package's db module (model_cache.py) or the file it made: the package is there even before ComfyUI ran.
  if (["model_cache.py", "model_cache.db"].some((file) => existsSync(path.join(packageDbDir, file)))) {
    return { modelCacheDbPath: path.join(packageDbDir, "model_cache.db"), modelCacheDbChosenBy: "emprops_comfy_nodes" };
  }
  return { modelCacheDbPath: path.join(comfyDir, "model_cache.db"), modelCacheDbChosenBy: "default" };
}

/** PEER_LISTEN_ADDRESS, by default every interface on the port peers are told (MACHINE_PEER_ADDRESS). */
function peerListen(listen: string | undefined, advertised: string): { listenHost: string; listenPort: number } {
  const [, host = "0.0.0.0", port = "0"] = /^\[?(.*?)\]?:(\d+)$/.exec(listen ?? `0.0.0.0:${portOf(advertised)}`) ?? [];
  return { listenHost: host, listenPort: Number(port) };
}

const portOf = (address: string) => /:(\d+)$/.exec(address)?.[1] ?? "0";
