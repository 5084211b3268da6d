import { loadConfig as gatewayConfig } from "@emprops/blob-gateway";
import { loadConfig as registryConfig } from "@emprops/lora-registry";
import { loadConfig as machineCacheConfig } from "@emprops/machine-cache";
import { ConfigError, TELEMETRY_ENV_VARIABLES } from "@emprops/platform";

export type ConfigLoader = (env: NodeJS.ProcessEnv) => { port: number };

/** Each service's own environment parser: the single source of the variables it accepts. */
export const CONFIG_LOADERS: Record<string, ConfigLoader> = {
  "lora-registry": registryConfig,
  "blob-gateway": gatewayConfig,
  "machine-cache": machineCacheConfig,
};

/** Read by Node.js itself, not by a service's config. */
export const RUNTIME_VARIABLES = ["NODE_ENV", "NODE_OPTIONS", "NODE_EXTRA_CA_CERTS", "TZ", "UV_THREADPOOL_SIZE"];

/**
 * The variables a service's config reads, observed rather than listed: the
 * loader is handed an environment that records every name looked up
 * (parseEnv looks up each key of the zod shape), plus the OTEL_* variables
 * the telemetry SDK reads and Node's own.
 */
export function acceptedVariables(load: ConfigLoader): Set<string> {
  const read = new Set<string>();
  const recorder = new Proxy({} as NodeJS.ProcessEnv, {
    get(_target, key) {
      if (typeof key === "string") read.add(key);
      return undefined;
    },
  });
  try {
    load(recorder);
  } catch (err) {
    // An empty environment is incomplete (DATABASE_URL, storage); only the names matter here.
    if (!(err instanceof ConfigError)) throw err;
  }
  return new Set([...read, ...TELEMETRY_ENV_VARIABLES, ...RUNTIME_VARIABLES]);
}

/** The one *_PORT variable of a service's config (its listen port). */
export function portVariable(load: ConfigLoader): string | undefined {
  const ports = [...acceptedVariables(load)].filter((v) => /_PORT$/.test(v));
  return ports.length === 1 ? ports[0] : undefined;
}

/** Runs a loader; returns the problems it names (empty when the environment is valid). */
export function configProblems(load: ConfigLoader, env: NodeJS.ProcessEnv): string[] {
  try {
    load(env);
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
}
