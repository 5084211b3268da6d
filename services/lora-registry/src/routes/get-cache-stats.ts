import { create, fromJson, type JsonValue } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { GetCacheStatsResponseSchema, type LoraAdminService, MachineCacheStatsSchema } from "@emprops/contracts";
import { latestCacheStats } from "../db/queries/cache-stats.js";
import { parseShortText } from "../domain/validate.js";
import type { AppContext } from "../context.js";

export function getCacheStats(ctx: AppContext): Partial<ServiceImpl<typeof LoraAdminService>> {
  return {
    async getCacheStats(req) {
      const machineId = parseShortText(req.machineId, "machine_id", 128);
      const rows = await latestCacheStats(ctx.db, machineId || undefined);
      return create(GetCacheStatsResponseSchema, {
        machines: rows.map((r) =>
          fromJson(MachineCacheStatsSchema, r.stats as JsonValue, { ignoreUnknownFields: true }),
        ),
      });
    },
  };
}
