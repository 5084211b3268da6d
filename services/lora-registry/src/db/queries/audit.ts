import { type Kysely, sql } from "kysely";
import type { Database, LoraAuditEventTable } from "../schema/index.js";

export interface AuditEntry {
  actorId: string;
  actorRole: LoraAuditEventTable["actor_role"];
  action: string;
  userId?: string | null;
  loraId?: string | null;
  details?: Record<string, unknown>;
}

/** Appends to the audit log, in the caller's transaction. */
export async function writeAudit(db: Kysely<Database>, at: Date, entries: AuditEntry[]): Promise<void> {
  if (entries.length === 0) return;
  await db
    .insertInto("lora_audit_event")
    .values(
      entries.map((e) => ({
        event_time: at,
        actor_id: e.actorId,
        actor_role: e.actorRole,
        action: e.action,
        user_id: e.userId ?? null,
        lora_id: e.loraId ?? null,
        details: JSON.stringify(e.details ?? {}),
      })),
    )
    .execute();
}

export interface AuditQuery {
  userId?: string;
  action?: string;
  /** event_time ≥ start, < end. */
  start?: Date;
  end?: Date;
  /** event_time (as timestamptz text) and id of the last event of the previous page. */
  after?: { key: string; id: string };
  limit: number;
}

/** Audit events newest first, with event_time as text for a page token. */
export function listAuditEvents(db: Kysely<Database>, q: AuditQuery) {
  let query = db
    .selectFrom("lora_audit_event")
    .selectAll()
    .select(sql<string>`event_time::text`.as("time_key"))
    .orderBy("event_time", "desc")
    .orderBy("id", "desc")
    .limit(q.limit);
  if (q.userId) query = query.where("user_id", "=", q.userId);
  if (q.action) query = query.where("action", "=", q.action);
  if (q.start) query = query.where("event_time", ">=", q.start);
  if (q.end) query = query.where("event_time", "<", q.end);
  if (q.after) {
    query = query.where(sql<boolean>`(event_time, id) < (${q.after.key}::timestamptz, ${q.after.id}::bigint)`);
  }
  return query.execute();
}
