import { type Kysely, sql } from "kysely";

/** Upload sessions: one per pending flat_file row and quota reservation. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    CREATE TABLE lora_upload (
      id                  uuid PRIMARY KEY,
      user_id             uuid NOT NULL,
      lora_id             bigint NOT NULL UNIQUE REFERENCES flat_file (id) ON DELETE CASCADE,
      state               text NOT NULL
                          CHECK (state IN ('pending', 'completed', 'aborted', 'expired', 'failed')),
      declared_size_bytes bigint NOT NULL CHECK (declared_size_bytes > 0),
      extension           text NOT NULL,
      expected_sha256     text,
      blob_path           text,
      created_at          timestamptz NOT NULL,
      expires_at          timestamptz NOT NULL,
      finished_at         timestamptz,
      failure_reason      text,
      failure_message     text
    )`.execute(db);
  await sql`CREATE INDEX lora_upload_pending_expiry_idx ON lora_upload (expires_at) WHERE state = 'pending'`.execute(
    db,
  );
  await sql`CREATE INDEX lora_upload_user_pending_idx ON lora_upload (user_id) WHERE state = 'pending'`.execute(db);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TABLE IF EXISTS lora_upload`.execute(db);
}
