import type { Insertable, Kysely } from "kysely";
import type { Database, LoraOutboxTable } from "../schema/index.js";

/** Adds events to the outbox, in the caller's transaction. */
export async function insertOutboxEvents(db: Kysely<Database>, rows: Insertable<LoraOutboxTable>[]): Promise<void> {
  if (rows.length === 0) return;
  await db.insertInto("lora_outbox").values(rows).execute();
}

/**
 * The oldest unsent events, locked for this transaction. SKIP LOCKED:
 * replicas relay side by side without publishing a row twice at once.
 */
export function lockUnsentEvents(db: Kysely<Database>, limit: number) {
  return db
    .selectFrom("lora_outbox")
    .select(["id", "event_id", "subject", "payload", "trace_context", "created_at"])
    .where("sent_at", "is", null)
    .orderBy("id")
    .limit(limit)
    .forUpdate()
    .skipLocked()
    .execute();
}

export async function markEventsSent(db: Kysely<Database>, ids: string[], now: Date): Promise<void> {
  if (ids.length === 0) return;
  await db.updateTable("lora_outbox").set({ sent_at: now }).where("id", "in", ids).execute();
}

export async function recordPublishFailure(db: Kysely<Database>, id: string, error: string): Promise<void> {
  await db
    .updateTable("lora_outbox")
    .set((eb) => ({ attempts: eb("attempts", "+", 1), last_error: error.slice(0, 500) }))
    .where("id", "=", id)
    .execute();
}

/** Unsent events: how many, and when the oldest was written. */
export async function outboxBacklog(db: Kysely<Database>): Promise<{ count: number; oldest: Date | null }> {
  const row = await db
    .selectFrom("lora_outbox")
    .select((eb) => [eb.fn.countAll<string>().as("n"), eb.fn.min("created_at").as("oldest")])
    .where("sent_at", "is", null)
    .executeTakeFirstOrThrow();
  return { count: Number(row.n), oldest: row.oldest ? new Date(row.oldest) : null };
}
