import { authConfig, commonEnvShape, env, parseEnv, type AuthConfig } from "@emprops/platform";
import { z } from "zod";

export interface RegistryConfig {
  host: string;
  port: number;
  logLevel: string;
  databaseUrl: string;
  blobGatewayUrl: string;
  /** Token for calling the blob-gateway; minted from the JWT secret when empty. */
  serviceToken: string;
  auth: AuthConfig;
  natsUrl: string;
  natsNamespace: string;
}

const shape = {
  ...commonEnvShape,
  REGISTRY_HOST: env.host(),
  REGISTRY_PORT: env.port(50051),
  DATABASE_URL: env.url(["postgres", "postgresql"]),
  BLOB_GATEWAY_URL: env.url(["http", "https"]).default("http://127.0.0.1:50052"),
  REGISTRY_SERVICE_TOKEN: z.string().default(""),
};

/** The only place lora-registry reads the environment. */
export function loadConfig(source: NodeJS.ProcessEnv = process.env): RegistryConfig {
  const e = parseEnv(shape, source);
  return {
    host: e.REGISTRY_HOST,
    port: e.REGISTRY_PORT,
    logLevel: e.LOG_LEVEL,
    databaseUrl: e.DATABASE_URL,
    blobGatewayUrl: e.BLOB_GATEWAY_URL,
    serviceToken: e.REGISTRY_SERVICE_TOKEN,
    auth: authConfig(e),
    natsUrl: e.NATS_URL,
    natsNamespace: e.NATS_NAMESPACE,
  };
}
