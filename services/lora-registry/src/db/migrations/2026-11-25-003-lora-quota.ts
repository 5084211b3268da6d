import { type Kysely, sql } from "kysely";

/** The per-user quota ledger; limits are null unless an admin overrides them. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    CREATE TABLE lora_quota (
      user_id        uuid PRIMARY KEY,
      max_bytes      bigint CHECK (max_bytes >= 0),
      max_count      integer CHECK (max_count >= 0),
      used_bytes     bigint NOT NULL DEFAULT 0 CHECK (used_bytes >= 0),
      used_count     integer NOT NULL DEFAULT 0 CHECK (used_count >= 0),
      reserved_bytes bigint NOT NULL DEFAULT 0 CHECK (reserved_bytes >= 0),
      reserved_count integer NOT NULL DEFAULT 0 CHECK (reserved_count >= 0),
      updated_at     timestamptz NOT NULL DEFAULT now()
    )`.execute(db);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TABLE IF EXISTS lora_quota`.execute(db);
}
