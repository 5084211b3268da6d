import { type Kysely, sql } from "kysely";

/** Usage folded from machine reports, the workflows using each LoRA, applied batch ids. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    CREATE TABLE lora_usage (
      lora_id      bigint PRIMARY KEY REFERENCES flat_file (id) ON DELETE CASCADE,
      user_id      uuid NOT NULL,
      usage_count  bigint NOT NULL,
      last_used_at timestamptz NOT NULL
    )`.execute(db);
  await sql`CREATE INDEX lora_usage_popular_idx ON lora_usage (usage_count DESC, lora_id)`.execute(db);
  await sql`CREATE INDEX lora_usage_user_popular_idx ON lora_usage (user_id, usage_count DESC, lora_id)`.execute(db);
  await sql`
    CREATE TABLE lora_workflow_usage (
      lora_id       bigint NOT NULL REFERENCES flat_file (id) ON DELETE CASCADE,
      workflow_id   text NOT NULL,
      workflow_name text NOT NULL DEFAULT '',
      use_count     bigint NOT NULL,
      last_used_at  timestamptz NOT NULL,
      PRIMARY KEY (lora_id, workflow_id)
    )`.execute(db);
  await sql`
    CREATE TABLE lora_usage_batch (
      batch_id   text PRIMARY KEY,
      machine_id text NOT NULL,
      applied_at timestamptz NOT NULL
    )`.execute(db);
  await sql`CREATE INDEX lora_usage_batch_applied_idx ON lora_usage_batch (applied_at)`.execute(db);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TABLE IF EXISTS lora_usage_batch`.execute(db);
  await sql`DROP TABLE IF EXISTS lora_workflow_usage`.execute(db);
  await sql`DROP TABLE IF EXISTS lora_usage`.execute(db);
}
