import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { cacheV1, type MachineCacheService } from "@emprops/contracts";
import type { AppContext } from "../context.js";
import { cacheStats } from "../reporting/cache-stats.js";

/** GetCacheStats: this machine's cache statistics. */
export function getCacheStats(ctx: AppContext): Partial<ServiceImpl<typeof MachineCacheService>> {
  return {
    async getCacheStats() {
      const stats = await cacheStats({
        db: ctx.db,
        loraDir: ctx.cfg.loraDir,
        userLoraDir: ctx.cfg.userLoraDir,
        machineId: ctx.cfg.machineId,
        clock: ctx.clock,
      });
      return create(cacheV1.GetCacheStatsResponseSchema, { stats });
    },
  };
}
