import type { ColumnType } from "kysely";

/** One finished storage consistency sweep: its StorageConsistencyReport as protobuf JSON. */
export interface StorageSweepReportTable {
  run_id: string;
  started_at: Date;
  finished_at: Date;
  report: ColumnType<Record<string, unknown>, string, string>;
}
