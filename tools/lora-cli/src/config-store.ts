import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { CliError, EXIT } from "./errors.js";

/** An upload started from this machine, kept so a re-run resumes it. */
export interface StoredUpload {
  uploadId: string;
  loraId: string;
  registryUrl: string;
  startedAt: string;
}

/** What `lora login` stores, plus the uploads in progress. */
export interface CliConfig {
  registryUrl?: string;
  token?: string;
  /** By file key (see fileKey). */
  uploads?: Record<string, StoredUpload>;
}

/** $LORA_CONFIG, else $XDG_CONFIG_HOME/emprops/lora.json, else ~/.config/emprops/lora.json. */
export function defaultConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.LORA_CONFIG) return path.resolve(env.LORA_CONFIG);
  const base = env.XDG_CONFIG_HOME || path.join(os.homedir(), ".config");
  return path.join(base, "emprops", "lora.json");
}

export function readConfig(file: string): CliConfig {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw new CliError(`cannot read the config file ${file}: ${(err as Error).message}`, EXIT.FAILURE);
  }
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not an object");
    return parsed as CliConfig;
  } catch (err) {
    throw new CliError(
      `the config file ${file} is not valid JSON (${(err as Error).message}); fix or delete it`,
      EXIT.FAILURE,
    );
  }
}

/** Writes atomically and readable by the owner only: it holds a bearer token. */
export function writeConfig(file: string, config: CliConfig): void {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, file);
}

/** Read-modify-write of the config file. */
export function updateConfig(file: string, change: (config: CliConfig) => void): CliConfig {
  const config = readConfig(file);
  change(config);
  writeConfig(file, config);
  return config;
}
