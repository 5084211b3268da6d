import { authConfig, commonEnvShape, env, parseEnv, type AuthConfig } from "@emprops/platform";
import { z } from "zod";

export interface GatewayConfig {
  host: string;
  port: number;
  logLevel: string;
  /** Shared-key connection string (Azurite, or accounts without Azure AD). */
  storageConnectionString?: string;
  /** Account name + key, the names machines use today. */
  storageAccount?: string;
  storageKey?: string;
  /** Container of user LoRAs. */
  userContainer: string;
  /** Container of shared LoRAs (models/loras/{name}). */
  sharedContainer: string;
  auth: AuthConfig;
  natsUrl: string;
  natsNamespace: string;
}

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
  USER_LORA_CONTAINER: z
    .string()
    .regex(/^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$/, "is not a valid container name")
    .default("user-loras"),
  CLOUD_STORAGE_CONTAINER: z
    .string()
    .regex(/^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$/, "is not a valid container name")
    .default("emprops-share"),
};

/** The only place blob-gateway reads the environment. */
export function loadConfig(source: NodeJS.ProcessEnv = process.env): GatewayConfig {
  const e = parseEnv(shape, source);
  return {
    host: e.GATEWAY_HOST,
    port: e.GATEWAY_PORT,
    logLevel: e.LOG_LEVEL,
    storageConnectionString: e.AZURE_STORAGE_CONNECTION_STRING,
    storageAccount: e.AZURE_STORAGE_ACCOUNT,
    storageKey: e.AZURE_STORAGE_KEY,
    userContainer: e.USER_LORA_CONTAINER,
    sharedContainer: e.CLOUD_STORAGE_CONTAINER,
    auth: authConfig(e),
    natsUrl: e.NATS_URL,
    natsNamespace: e.NATS_NAMESPACE,
  };
}
