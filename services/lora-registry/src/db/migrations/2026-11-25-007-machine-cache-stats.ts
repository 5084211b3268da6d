import { type Kysely, sql } from "kysely";

/** The latest cache statistics each machine reported. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    CREATE TABLE machine_cache_stats (
      machine_id  text PRIMARY KEY,
      report_time timestamptz NOT NULL,
      stats       jsonb NOT NULL,
      received_at timestamptz NOT NULL
    )`.execute(db);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TABLE IF EXISTS machine_cache_stats`.execute(db);
}
