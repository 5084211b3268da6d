import { type Kysely, sql } from "kysely";

/**
 * The trace context of the transaction that wrote an outbox row (W3C
 * traceparent/tracestate), so the relay publishes the event in the trace of
 * the request that caused it.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql`ALTER TABLE lora_outbox ADD COLUMN IF NOT EXISTS trace_context jsonb`.execute(db);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`ALTER TABLE lora_outbox DROP COLUMN IF EXISTS trace_context`.execute(db);
}
