import type { ColumnType, Generated } from "kysely";

/** The audit log: uploads, resolutions (downloads), deletions, quota changes. */
export interface LoraAuditEventTable {
  id: Generated<string>;
  event_time: Date;
  actor_id: string;
  actor_role: "user" | "admin" | "machine" | "system";
  action: string;
  user_id: string | null;
  lora_id: string | null;
  details: ColumnType<Record<string, unknown>, string, string>;
}
