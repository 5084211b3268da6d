import type { Kysely } from "kysely";
import type { Database, LoraAuditEventTable } from "../db/schema/index.js";

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
