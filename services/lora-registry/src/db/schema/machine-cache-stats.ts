import type { ColumnType } from "kysely";

/** The latest MachineCacheStats of each machine (protobuf JSON). */
export interface MachineCacheStatsTable {
  machine_id: string;
  report_time: Date;
  stats: ColumnType<Record<string, unknown>, string, string>;
  received_at: Date;
}
