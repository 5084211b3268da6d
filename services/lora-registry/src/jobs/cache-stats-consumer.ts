import { fromBinary, toJsonString } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { MachineCacheStatsReportedSchema, MachineCacheStatsSchema } from "@emprops/contracts";
import type { Consumer } from "@emprops/platform";
import { storeCacheStats } from "../db/queries/cache-stats.js";
import type { AppContext } from "../context.js";

/** Keeps the latest MachineCacheStats of each machine; an older report never replaces a newer one. */
export function startCacheStatsConsumer(ctx: AppContext): Promise<Consumer> {
  return ctx.bus.consume({
    durable: ctx.names.durables.registryCacheStats,
    filterSubjects: [ctx.names.cacheStatsAll],
    handler: async (msg) => {
      let stats;
      try {
        stats = fromBinary(MachineCacheStatsReportedSchema, msg.data).stats;
      } catch (err) {
        ctx.logger.error({ err, subject: msg.subject }, "malformed MachineCacheStatsReported dropped");
        return;
      }
      if (!stats || !stats.machineId || stats.machineId.length > 128) {
        ctx.logger.error({ subject: msg.subject }, "MachineCacheStatsReported without a machine_id dropped");
        return;
      }
      const now = ctx.clock.now();
      const reportTime = stats.reportTime ? timestampDate(stats.reportTime) : now;
      await storeCacheStats(ctx.db, {
        machineId: stats.machineId,
        reportTime,
        statsJson: toJsonString(MachineCacheStatsSchema, stats),
        receivedAt: now,
      });
    },
  });
}
