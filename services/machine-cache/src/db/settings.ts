import { Code } from "@connectrpc/connect";
import { ErrorReason } from "@emprops/contracts";
import { rpcError } from "@emprops/platform";
import type { Db } from "./open-database.js";
import { writeTransaction } from "./write-transaction.js";

export const GIB = 1024 ** 3;

/** The settings rows this service reads, with the defaults it seeds (min_free_space_gb as the node package seeds it). */
export const SETTING_DEFAULTS = {
  lora_cache_max_gb: "50",
  lora_max_age_days: "7",
  lora_eviction_enabled: "true",
  min_free_space_gb: "10",
  lora_eviction_policy: "lru",
} as const;

/** How room is made when the cache is full: least recently used, or GDSF (frequency and size aware). */
export const EVICTION_POLICIES = ["lru", "gdsf"] as const;
export type EvictionPolicy = (typeof EVICTION_POLICIES)[number];

export type SettingKey = keyof typeof SETTING_DEFAULTS;

export interface CacheSettings {
  loraCacheMaxBytes: number;
  loraMaxAgeDays: number;
  evictionEnabled: boolean;
  minFreeBytes: number;
  evictionPolicy: EvictionPolicy;
}

export interface SettingOverrides {
  loraCacheMaxGb?: number;
  loraMaxAgeDays?: number;
  loraEvictionEnabled?: boolean;
  minFreeSpaceGb?: number;
  loraEvictionPolicy?: EvictionPolicy;
}

/** Seeds missing settings, then writes the environment's overrides so the table shows what is in force. */
export async function seedSettings(db: Db, overrides: SettingOverrides): Promise<void> {
  const insert = db.prepare("INSERT OR IGNORE INTO settings (key, value) VALUES (?, ?)");
  const upsert = db.prepare(
    "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
  );
  const forced: [SettingKey, string | undefined][] = [
    ["lora_cache_max_gb", overrides.loraCacheMaxGb?.toString()],
    ["lora_max_age_days", overrides.loraMaxAgeDays?.toString()],
    ["lora_eviction_enabled", overrides.loraEvictionEnabled?.toString()],
    ["min_free_space_gb", overrides.minFreeSpaceGb?.toString()],
    ["lora_eviction_policy", overrides.loraEvictionPolicy],
  ];
  await writeTransaction(db, () => {
    for (const [key, value] of Object.entries(SETTING_DEFAULTS)) insert.run(key, value);
    for (const [key, value] of forced) if (value !== undefined) upsert.run(key, value);
  });
  readSettings(db);
}

/**
 * The settings in force, read on every use so an operator's UPDATE of the
 * table takes effect without a restart. A value that cannot be read is an
 * error naming the row, never silently a default.
 */
export function readSettings(db: Db): CacheSettings {
  const rows = db.prepare<[], { key: string; value: string }>("SELECT key, value FROM settings").all();
  const get = (key: SettingKey) => rows.find((r) => r.key === key)?.value ?? SETTING_DEFAULTS[key];
  const number = (key: SettingKey) => {
    const text = get(key).trim();
    const value = Number(text);
    if (text === "" || !Number.isFinite(value) || value < 0) throw badSetting(key, text, "a number of zero or more");
    return value;
  };
  const flag = (key: SettingKey) => {
    const text = get(key).trim().toLowerCase();
    if (["true", "1", "yes"].includes(text)) return true;
    if (["false", "0", "no"].includes(text)) return false;
    throw badSetting(key, text, "true or false");
  };
  const policy = (key: SettingKey) => {
    const text = get(key).trim().toLowerCase();
    const found = EVICTION_POLICIES.find((p) => p === text);
    if (!found) throw badSetting(key, text, EVICTION_POLICIES.join(" or "));
    return found;
  };
  return {
    loraCacheMaxBytes: Math.floor(number("lora_cache_max_gb") * GIB),
    loraMaxAgeDays: number("lora_max_age_days"),
    evictionEnabled: flag("lora_eviction_enabled"),
    minFreeBytes: Math.floor(number("min_free_space_gb") * GIB),
    evictionPolicy: policy("lora_eviction_policy"),
  };
}

function badSetting(key: string, value: string, expected: string) {
  return rpcError(
    Code.FailedPrecondition,
    ErrorReason.INVALID_REQUEST,
    `model_cache.db setting ${key} is ${JSON.stringify(value)}; it must be ${expected}`,
    { setting: key },
  );
}
