import { createRegistryClients, type RegistryClients } from "./clients.js";
import { type CliConfig, defaultConfigPath, readConfig } from "./config-store.js";

export const DEFAULT_REGISTRY_URL = "http://127.0.0.1:50051";

/** Global options every command accepts. */
export interface GlobalOptions {
  registry?: string;
  token?: string;
  config?: string;
}

/** What a command needs: where to call, with which token, where to write. */
export interface CliContext {
  configFile: string;
  config: CliConfig;
  registryUrl: string;
  token: string | undefined;
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
  stdin: NodeJS.ReadableStream & { isTTY?: boolean };
  env: NodeJS.ProcessEnv;
  clients(): RegistryClients;
  print(text: string): void;
  note(text: string): void;
}

export interface Streams {
  stdout: CliContext["stdout"];
  stderr: CliContext["stderr"];
  stdin: CliContext["stdin"];
}

/**
 * Settings by precedence: a flag, then the environment (LORA_REGISTRY_URL,
 * LORA_TOKEN), then what `lora login` stored, then the local default.
 */
export function createContext(global: GlobalOptions, env: NodeJS.ProcessEnv, streams: Streams): CliContext {
  const configFile = global.config ?? defaultConfigPath(env);
  const config = readConfig(configFile);
  const registryUrl = (global.registry ?? env.LORA_REGISTRY_URL ?? config.registryUrl ?? DEFAULT_REGISTRY_URL).replace(
    /\/+$/,
    "",
  );
  const token = global.token ?? (env.LORA_TOKEN || undefined) ?? config.token;
  let clients: RegistryClients | undefined;
  return {
    configFile,
    config,
    registryUrl,
    token,
    ...streams,
    env,
    clients: () => (clients ??= createRegistryClients(registryUrl, token)),
    print: (text) => streams.stdout.write(`${text}\n`),
    note: (text) => streams.stderr.write(`${text}\n`),
  };
}

/** The JWT's subject and roles, read without verifying (for display only). */
export function tokenClaims(token: string): { sub?: string; roles?: string[]; exp?: number } | undefined {
  const payload = token.split(".")[1];
  if (!payload) return undefined;
  try {
    return JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as { sub?: string; roles?: string[] };
  } catch {
    return undefined;
  }
}
