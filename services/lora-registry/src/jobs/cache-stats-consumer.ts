import { fromBinary, toJsonString } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { MachineCacheStatsReportedSchema, MachineCacheStatsSchema } from "@emprops/contracts";
import type { Consumer } from "@emprops/platform";
import { sql } from "kysely";
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
      await ctx.db
        .insertInto("machine_cache_stats")
        .values({
          machine_id: stats.machineId,
          report_time: reportTime,
          stats: toJsonString(MachineCacheStatsSchema, stats),
          received_at: now,
        })
        .onConflict((oc) =>
          oc
            .column("machine_id")
            .doUpdateSet({
              report_time: sql`excluded.report_time`,
              stats: sql`excluded.stats`,
              received_at: sql`excluded.received_at`,
            })
            .where(sql<boolean>`machine_cache_stats.report_time <= excluded.report_time`),
        )
        .execute();
    },
  });
}
