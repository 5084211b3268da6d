import { type Kysely, sql } from "kysely";
import type { Database } from "../schema/index.js";

/** Keeps a machine's report unless a newer one is already stored. */
export async function storeCacheStats(
  db: Kysely<Database>,
  report: { machineId: string; reportTime: Date; statsJson: string; receivedAt: Date },
): Promise<void> {
  await db
    .insertInto("machine_cache_stats")
    .values({
      machine_id: report.machineId,
      report_time: report.reportTime,
      stats: report.statsJson,
      received_at: report.receivedAt,
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
}

/** The latest report of every machine (or of one), by machine id. */
export function latestCacheStats(db: Kysely<Database>, machineId?: string) {
  let q = db.selectFrom("machine_cache_stats").select(["stats"]).orderBy("machine_id");
  if (machineId) q = q.where("machine_id", "=", machineId);
  return q.execute();
}
