import { type Kysely, sql } from "kysely";

/** The audit log and the transactional outbox of events for JetStream. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    CREATE TABLE lora_audit_event (
      id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      event_time timestamptz NOT NULL,
      actor_id   text NOT NULL,
      actor_role text NOT NULL,
      action     text NOT NULL,
      user_id    uuid,
      lora_id    bigint,
      details    jsonb NOT NULL DEFAULT '{}'::jsonb
    )`.execute(db);
  await sql`CREATE INDEX lora_audit_event_time_idx ON lora_audit_event (event_time, id)`.execute(db);
  await sql`CREATE INDEX lora_audit_event_user_time_idx ON lora_audit_event (user_id, event_time, id)`.execute(db);
  await sql`
    CREATE TABLE lora_outbox (
      id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      event_id   uuid NOT NULL UNIQUE,
      subject    text NOT NULL,
      payload    bytea NOT NULL,
      created_at timestamptz NOT NULL,
      sent_at    timestamptz,
      attempts   integer NOT NULL DEFAULT 0,
      last_error text
    )`.execute(db);
  await sql`CREATE INDEX lora_outbox_unsent_idx ON lora_outbox (id) WHERE sent_at IS NULL`.execute(db);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TABLE IF EXISTS lora_outbox`.execute(db);
  await sql`DROP TABLE IF EXISTS lora_audit_event`.execute(db);
}
