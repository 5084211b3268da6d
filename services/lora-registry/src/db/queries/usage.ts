import { type Insertable, type Kysely, type Selectable, sql } from "kysely";
import type { Database, LoraUsageTable, LoraWorkflowUsageTable } from "../schema/index.js";
import { isVisibleLora } from "./loras.js";

/** Records a usage batch id; false when it was applied before (a redelivery). */
export async function recordUsageBatch(
  db: Kysely<Database>,
  batch: { batchId: string; machineId: string },
  now: Date,
): Promise<boolean> {
  const fresh = await db
    .insertInto("lora_usage_batch")
    .values({ batch_id: batch.batchId, machine_id: batch.machineId, applied_at: now })
    .onConflict((oc) => oc.column("batch_id").doNothing())
    .returning("batch_id")
    .executeTakeFirst();
  return fresh !== undefined;
}

/** Forgets applied batch ids older than the cutoff. */
export async function forgetUsageBatches(db: Kysely<Database>, before: Date): Promise<void> {
  await db.deleteFrom("lora_usage_batch").where("applied_at", "<", before).execute();
}

/** Adds uses per LoRA: counts add up, the last use is the latest. */
export async function addLoraUsage(db: Kysely<Database>, rows: Insertable<LoraUsageTable>[]): Promise<void> {
  if (rows.length === 0) return;
  await db
    .insertInto("lora_usage")
    .values(rows)
    .onConflict((oc) =>
      oc.column("lora_id").doUpdateSet({
        usage_count: sql`lora_usage.usage_count + excluded.usage_count`,
        last_used_at: sql`greatest(lora_usage.last_used_at, excluded.last_used_at)`,
      }),
    )
    .execute();
}

/** Adds uses per LoRA and workflow; a workflow keeps its last non-empty name. */
export async function addWorkflowUsage(
  db: Kysely<Database>,
  rows: Insertable<LoraWorkflowUsageTable>[],
): Promise<void> {
  if (rows.length === 0) return;
  await db
    .insertInto("lora_workflow_usage")
    .values(rows)
    .onConflict((oc) =>
      oc.columns(["lora_id", "workflow_id"]).doUpdateSet({
        use_count: sql`lora_workflow_usage.use_count + excluded.use_count`,
        last_used_at: sql`greatest(lora_workflow_usage.last_used_at, excluded.last_used_at)`,
        workflow_name: sql`CASE WHEN excluded.workflow_name <> '' THEN excluded.workflow_name
                                ELSE lora_workflow_usage.workflow_name END`,
      }),
    )
    .execute();
}

/** The workflows that used a LoRA, most recent first. */
export function workflowsUsing(
  db: Kysely<Database>,
  loraId: string,
  limit = 100,
): Promise<Selectable<LoraWorkflowUsageTable>[]> {
  return db
    .selectFrom("lora_workflow_usage")
    .selectAll()
    .where("lora_id", "=", loraId)
    .orderBy("last_used_at", "desc")
    .orderBy("workflow_id")
    .limit(limit)
    .execute();
}

/** Visible LoRAs by use, most used first (optionally one user's, used at or after a time). */
export function popularLoras(db: Kysely<Database>, q: { userId?: string; usedSince?: Date; limit: number }) {
  let query = db
    .selectFrom("lora_usage as u")
    .innerJoin("flat_file as f", "f.id", "u.lora_id")
    .select(["u.user_id", "u.lora_id", "u.usage_count", sql<string>`lora_size_bytes(f.gen_out_data)`.as("size_bytes")])
    .where(isVisibleLora)
    .orderBy("u.usage_count", "desc")
    .orderBy("u.lora_id")
    .limit(q.limit);
  if (q.userId) query = query.where("u.user_id", "=", q.userId);
  if (q.usedSince) query = query.where("u.last_used_at", ">=", q.usedSince);
  return query.execute();
}
