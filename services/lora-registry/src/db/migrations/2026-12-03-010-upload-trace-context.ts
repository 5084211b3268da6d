import { type Kysely, sql } from "kysely";

/**
 * The trace context of the request that began an upload session (W3C
 * traceparent/tracestate), so completing it and reaping it join the
 * upload's trace.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql`ALTER TABLE lora_upload ADD COLUMN IF NOT EXISTS trace_context jsonb`.execute(db);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`ALTER TABLE lora_upload DROP COLUMN IF EXISTS trace_context`.execute(db);
}
