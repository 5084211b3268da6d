import path from "node:path";
import { authConfig, commonEnvShape, env, parseEnv, type AuthConfig } from "@emprops/platform";
import { z } from "zod";

export interface MachineCacheConfig {
  host: string;
  port: number;
  logLevel: string;
  /** This node's id: durable consumer name and stats key. */
  machineId: string;
  /** ComfyUI's models/loras directory; user LoRAs go under users/, shared under shared/. */
  loraDir: string;
  /** Path of model_cache.db. */
  modelCacheDbPath: string;
  registryUrl: string;
  /** Token with the machine role; minted from the JWT secret when empty. */
  machineToken: string;
  /** Environment overrides of the model_cache.db settings (undefined: keep the stored value). */
  settingOverrides: {
    loraCacheMaxGb?: number;
    loraMaxAgeDays?: number;
    loraEvictionEnabled?: boolean;
    minFreeSpaceGb?: number;
  };
  auth: AuthConfig;
  natsUrl: string;
  natsNamespace: string;
}

const optionalNonNegative = z.coerce.number().min(0, "must be zero or more").optional();

const shape = {
  ...commonEnvShape,
  MACHINE_CACHE_HOST: env.host(),
  MACHINE_CACHE_PORT: env.port(50053),
  MACHINE_ID: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,128}$/, "must be 1-128 letters, digits, '.', '_' or '-'")
    .default("local-machine"),
  COMFYUI_LORA_DIR: z.string().min(1).default("/workspace/ComfyUI/models/loras"),
  MODEL_CACHE_DB: z.string().optional(),
  REGISTRY_URL: env.url(["http", "https"]).default("http://127.0.0.1:50051"),
  MACHINE_TOKEN: z.string().default(""),
  LORA_CACHE_MAX_GB: optionalNonNegative,
  LORA_MAX_AGE_DAYS: optionalNonNegative,
  LORA_EVICTION_ENABLED: z.enum(["true", "false"], { message: "must be true or false" }).optional(),
  MIN_FREE_SPACE_GB: optionalNonNegative,
};

/** The only place machine-cache reads the environment. */
export function loadConfig(source: NodeJS.ProcessEnv = process.env): MachineCacheConfig {
  const e = parseEnv(shape, source);
  const loraDir = path.resolve(e.COMFYUI_LORA_DIR);
  return {
    host: e.MACHINE_CACHE_HOST,
    port: e.MACHINE_CACHE_PORT,
    logLevel: e.LOG_LEVEL,
    machineId: e.MACHINE_ID,
    loraDir,
    modelCacheDbPath: path.resolve(e.MODEL_CACHE_DB ?? path.join(loraDir, "..", "..", "model_cache.db")),
    registryUrl: e.REGISTRY_URL,
    machineToken: e.MACHINE_TOKEN,
    settingOverrides: {
      loraCacheMaxGb: e.LORA_CACHE_MAX_GB,
      loraMaxAgeDays: e.LORA_MAX_AGE_DAYS,
      loraEvictionEnabled: e.LORA_EVICTION_ENABLED === undefined ? undefined : e.LORA_EVICTION_ENABLED === "true",
      minFreeSpaceGb: e.MIN_FREE_SPACE_GB,
    },
    auth: authConfig(e),
    natsUrl: e.NATS_URL,
    natsNamespace: e.NATS_NAMESPACE,
  };
}
