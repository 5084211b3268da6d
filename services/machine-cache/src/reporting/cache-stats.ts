import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type MachineCacheStats, MachineCacheStatsSchema } from "@emprops/contracts";
import type { Clock } from "@emprops/platform";
import { lastUsedMs } from "../cache/eviction-policies.js";
import { diskFreeBytes } from "../cache/space-manager.js";
import { eventTotalsSince } from "../db/cache-events.js";
import { contentBytes, modelsUnder, USER_LORA, userLoraBytes } from "../db/models.js";
import type { Db } from "../db/open-database.js";
import { GIB, readSettings } from "../db/settings.js";

const DAY_MS = 24 * 3600 * 1000;

/**
 * The specification's cache-stats fields for this machine. Every row under
 * models/loras and the user LoRA directory counts: user_lora rows as user
 * LoRAs, the rest (shared/ and what the node package put there) as shared ones.
 * Bytes are each content's once (paths linked to one file share it): user
 * bytes as the budget counts them, shared bytes with every content a shared
 * path holds, so together they are what the files take on disk.
 */
export async function cacheStats(deps: {
  db: Db;
  loraDir: string;
  userLoraDir: string;
  machineId: string;
  clock: Clock;
}): Promise<MachineCacheStats> {
  const { db, loraDir, userLoraDir, machineId, clock } = deps;
  const now = clock.now();
  const settings = readSettings(db);
  const byPath = new Map([...modelsUnder(db, loraDir), ...modelsUnder(db, userLoraDir)].map((r) => [r.path, r]));
  const rows = [...byPath.values()];
  const user = rows.filter((r) => r.model_type === USER_LORA);
  const shared = rows.filter((r) => r.model_type !== USER_LORA);
  const userBytes = userLoraBytes(db);
  const sharedBytes = contentBytes(
    db,
    shared.map((r) => r.path),
  );
  const totals = eventTotalsSince(db, now.getTime() - DAY_MS);
  const requests = totals.hits + totals.misses;
  const oldest = rows.length > 0 ? Math.min(...rows.map(lastUsedMs)) : now.getTime();
  return create(MachineCacheStatsSchema, {
    machineId,
    totalLoraCacheGb: (userBytes + sharedBytes) / GIB,
    maxLoraCacheGb: settings.loraCacheMaxBytes / GIB,
    utilizationPercent: settings.loraCacheMaxBytes > 0 ? (userBytes / settings.loraCacheMaxBytes) * 100 : 0,
    userLoraCount: user.length,
    sharedLoraCount: shared.length,
    cacheHitRate24h: requests > 0 ? totals.hits / requests : 0,
    evictionsLast24h: totals.evictions,
    oldestLoraAgeDays: Math.max(0, (now.getTime() - oldest) / DAY_MS),
    reportTime: timestampFromDate(now),
    userLoraBytes: BigInt(userBytes),
    sharedLoraBytes: BigInt(sharedBytes),
    hits24h: BigInt(totals.hits),
    misses24h: BigInt(totals.misses),
    bytesDownloaded24h: BigInt(totals.bytesDownloaded),
    diskFreeBytes: BigInt(await diskFreeBytes(loraDir)),
  });
}
