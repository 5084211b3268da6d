import { type Kysely, sql } from "kysely";

/**
 * Reports of the storage consistency sweep (protobuf JSON of
 * StorageConsistencyReport), so any replica answers with the latest one and
 * exports its counts; only the most recent few are kept.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    CREATE TABLE IF NOT EXISTS storage_sweep_report (
      run_id      uuid PRIMARY KEY,
      started_at  timestamptz NOT NULL,
      finished_at timestamptz NOT NULL,
      report      jsonb NOT NULL
    )`.execute(db);
  await sql`CREATE INDEX IF NOT EXISTS storage_sweep_report_finished_idx ON storage_sweep_report (finished_at DESC)`.execute(
    db,
  );
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TABLE IF EXISTS storage_sweep_report`.execute(db);
}
