import { authConfig, commonEnvShape, ConfigError, env, parseEnv, type AuthConfig } from "@emprops/platform";
import { z } from "zod";
import type { BlobReadSettings } from "./storage/blob-reader.js";
import { parseConnectionString } from "./storage/connection-string.js";

/** How the gateway reaches and signs for the storage account. */
export type StorageSettings =
  /** Account key: shared-key SAS (Azurite, or accounts without Azure AD). */
  | { auth: "shared-key"; accountUrl: string; accountName: string; accountKey: string }
  /** Azure AD identity (DefaultAzureCredential): user delegation SAS, no key held. */
  | { auth: "azure-ad"; accountUrl: string; accountName: string };

export interface GatewayConfig {
  host: string;
  port: number;
  logLevel: string;
  storage: StorageSettings;
  /** Plain http storage endpoints are accepted (local emulator only). */
  allowHttpStorage: boolean;
  /** Container of user LoRAs. */
  userContainer: string;
  /** Container of shared LoRAs (models/loras/{name}). */
  sharedContainer: string;
  /** Lifetime of an upload URL when the caller does not ask for one. */
  uploadUrlTtlSeconds: number;
  uploadUrlMaxTtlSeconds: number;
  /** Lifetime of a download URL when the caller does not ask for one. */
  downloadUrlTtlSeconds: number;
  downloadUrlMaxTtlSeconds: number;
  /** Smallest recommended Put Block size; larger files get larger blocks (≤ 50,000 blocks). */
  blockSizeBytes: number;
  /** Largest LoRA accepted by VerifyBlob and UploadBlob. */
  maxLoraSizeBytes: number;
  /** Put Block calls in flight per UploadBlob stream (and per conversion). */
  uploadBlocksInFlight: number;
  /** How VerifyBlob reads a blob: ranged GETs in flight (1: one stream) and their size. */
  verifyRead: BlobReadSettings;
  /** How long CreateDownloadUrls waits for a shared LoRA's first verification before answering "pending". */
  sharedVerifyWaitMs: number;
  /** Browser origins allowed to Put Block to signed URLs (the account's Blob CORS rule); empty: rules untouched. */
  storageCorsAllowedOrigins: string[];
  auth: AuthConfig;
  natsUrl: string;
  natsNamespace: string;
}

const containerName = z.string().regex(/^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$/, "is not a valid container name");

const MiB = 1024 * 1024;

const shape = {
  ...commonEnvShape,
  GATEWAY_HOST: env.host(),
  GATEWAY_PORT: env.port(50052),
  AZURE_STORAGE_CONNECTION_STRING: z
    .string()
    .refine(
      (v) => /AccountName=|BlobEndpoint=|UseDevelopmentStorage=true/.test(v),
      "is not a storage connection string",
    )
    .optional(),
  AZURE_STORAGE_ACCOUNT: z
    .string()
    .regex(/^[a-z0-9]{3,24}$/, "must be 3-24 lower-case letters and digits")
    .optional(),
  AZURE_STORAGE_KEY: z.string().optional(),
  /** Blob service URL; with no key, the gateway signs with its Azure AD identity. */
  AZURE_STORAGE_ACCOUNT_URL: env.url(["https", "http"]).optional(),
  /** Unset: http only for a storage endpoint on this machine (Azurite). */
  GATEWAY_ALLOW_HTTP_STORAGE: z
    .enum(["true", "false", "1", "0", "yes", "no"], { message: "must be true or false" })
    .transform((v) => v === "true" || v === "1" || v === "yes")
    .optional(),
  USER_LORA_CONTAINER: containerName.default("user-loras"),
  CLOUD_STORAGE_CONTAINER: containerName.default("emprops-share"),
  UPLOAD_URL_TTL_SECONDS: env.positiveInt(6 * 3600),
  UPLOAD_URL_MAX_TTL_SECONDS: env.positiveInt(24 * 3600),
  DOWNLOAD_URL_TTL_SECONDS: env.positiveInt(15 * 60),
  DOWNLOAD_URL_MAX_TTL_SECONDS: env.positiveInt(3600),
  UPLOAD_BLOCK_SIZE_BYTES: z.coerce
    .number()
    .int()
    .min(MiB, "must be at least 1 MiB")
    .max(4000 * MiB, "must be at most 4000 MiB (the Put Block limit)")
    .default(8 * MiB),
  MAX_LORA_BYTES: env.positiveInt(2 * 1024 * MiB),
  UPLOAD_BLOCKS_IN_FLIGHT: z.coerce.number().int().min(1).max(16).default(4),
  VERIFY_READ_CONNECTIONS: z.coerce.number().int().min(1).max(16).default(4),
  VERIFY_READ_RANGE_MB: z.coerce.number().int().min(1).max(256).default(16),
  SHARED_LORA_VERIFY_WAIT_MS: z.coerce.number().int().min(0).max(600_000).default(10_000),
  STORAGE_CORS_ALLOWED_ORIGINS: env.origins(),
};

type Env = z.infer<z.ZodObject<typeof shape>>;

/** The only place blob-gateway reads the environment. */
export function loadConfig(source: NodeJS.ProcessEnv = process.env): GatewayConfig {
  const e = parseEnv(shape, source);
  const storage = storageSettings(e);
  const allowHttpStorage = e.GATEWAY_ALLOW_HTTP_STORAGE ?? isLoopback(storage.accountUrl);
  const problems: string[] = [];
  if (new URL(storage.accountUrl).protocol === "http:" && !allowHttpStorage) {
    problems.push(
      `GATEWAY_ALLOW_HTTP_STORAGE: the storage endpoint ${storage.accountUrl} is plain http; ` +
        "signed URLs would travel unencrypted (set GATEWAY_ALLOW_HTTP_STORAGE=true only for an emulator)",
    );
  }
  if (e.UPLOAD_URL_TTL_SECONDS > e.UPLOAD_URL_MAX_TTL_SECONDS) {
    problems.push("UPLOAD_URL_TTL_SECONDS: must not exceed UPLOAD_URL_MAX_TTL_SECONDS");
  }
  if (e.UPLOAD_URL_MAX_TTL_SECONDS > 7 * 24 * 3600) {
    problems.push("UPLOAD_URL_MAX_TTL_SECONDS: must be at most 7 days (a user delegation key's lifetime)");
  }
  if (e.DOWNLOAD_URL_TTL_SECONDS > e.DOWNLOAD_URL_MAX_TTL_SECONDS) {
    problems.push("DOWNLOAD_URL_TTL_SECONDS: must not exceed DOWNLOAD_URL_MAX_TTL_SECONDS");
  }
  if (e.DOWNLOAD_URL_MAX_TTL_SECONDS > 7 * 24 * 3600) {
    problems.push("DOWNLOAD_URL_MAX_TTL_SECONDS: must be at most 7 days (a user delegation key's lifetime)");
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return {
    host: e.GATEWAY_HOST,
    port: e.GATEWAY_PORT,
    logLevel: e.LOG_LEVEL,
    storage,
    allowHttpStorage,
    userContainer: e.USER_LORA_CONTAINER,
    sharedContainer: e.CLOUD_STORAGE_CONTAINER,
    uploadUrlTtlSeconds: e.UPLOAD_URL_TTL_SECONDS,
    uploadUrlMaxTtlSeconds: e.UPLOAD_URL_MAX_TTL_SECONDS,
    downloadUrlTtlSeconds: e.DOWNLOAD_URL_TTL_SECONDS,
    downloadUrlMaxTtlSeconds: e.DOWNLOAD_URL_MAX_TTL_SECONDS,
    blockSizeBytes: e.UPLOAD_BLOCK_SIZE_BYTES,
    maxLoraSizeBytes: e.MAX_LORA_BYTES,
    uploadBlocksInFlight: e.UPLOAD_BLOCKS_IN_FLIGHT,
    verifyRead: { connections: e.VERIFY_READ_CONNECTIONS, rangeBytes: e.VERIFY_READ_RANGE_MB * MiB },
    sharedVerifyWaitMs: e.SHARED_LORA_VERIFY_WAIT_MS,
    storageCorsAllowedOrigins: e.STORAGE_CORS_ALLOWED_ORIGINS,
    auth: authConfig(e),
    natsUrl: e.NATS_URL,
    natsNamespace: e.NATS_NAMESPACE,
  };
}

/**
 * Which credentials, in order: a connection string; an account name and key
 * (the variables machines use today); an account URL or name without a key,
 * which selects the Azure AD identity.
 */
function storageSettings(e: Env): StorageSettings {
  if (e.AZURE_STORAGE_CONNECTION_STRING) {
    try {
      return { auth: "shared-key", ...parseConnectionString(e.AZURE_STORAGE_CONNECTION_STRING) };
    } catch (err) {
      throw new ConfigError([`AZURE_STORAGE_CONNECTION_STRING: ${(err as Error).message}`]);
    }
  }
  const accountUrl = (e.AZURE_STORAGE_ACCOUNT_URL ?? defaultAccountUrl(e.AZURE_STORAGE_ACCOUNT)).replace(/\/+$/, "");
  if (!accountUrl) {
    throw new ConfigError([
      "AZURE_STORAGE_CONNECTION_STRING: storage is not configured; set it, or AZURE_STORAGE_ACCOUNT (+ AZURE_STORAGE_KEY), or AZURE_STORAGE_ACCOUNT_URL",
    ]);
  }
  const accountName = e.AZURE_STORAGE_ACCOUNT ?? accountNameOf(accountUrl);
  if (!accountName) {
    throw new ConfigError(["AZURE_STORAGE_ACCOUNT: required when AZURE_STORAGE_ACCOUNT_URL does not name the account"]);
  }
  if (e.AZURE_STORAGE_KEY) {
    return { auth: "shared-key", accountUrl, accountName, accountKey: e.AZURE_STORAGE_KEY };
  }
  return { auth: "azure-ad", accountUrl, accountName };
}

function defaultAccountUrl(account: string | undefined): string {
  return account ? `https://${account}.blob.core.windows.net` : "";
}

/** acct from https://acct.blob.core.windows.net, or from an emulator's path-style URL. */
function accountNameOf(url: string): string | undefined {
  const u = new URL(url);
  const host = /^([a-z0-9]{3,24})\.blob\./.exec(u.hostname)?.[1];
  return host ?? u.pathname.split("/").filter(Boolean)[0];
}

function isLoopback(url: string): boolean {
  const host = new URL(url).hostname;
  return host === "localhost" || host === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(host);
}
