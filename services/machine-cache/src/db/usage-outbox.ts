import type { Db } from "./open-database.js";
import { prepared } from "./prepared.js";

export interface UsageRow {
  id: number;
  lora_id: string;
  user_id: string;
  job_id: string;
  workflow_id: string;
  workflow_name: string;
  used_at_ms: number;
  batch_id: string | null;
}

export type NewUsage = Omit<UsageRow, "id" | "batch_id">;

/** Adds usage rows; inside writeTransaction. */
export function addUsages(db: Db, usages: NewUsage[]): void {
  if (usages.length === 0) return;
  const insert = prepared(
    db,
    `INSERT INTO lora_usage_outbox (lora_id, user_id, job_id, workflow_id, workflow_name, used_at_ms)
     VALUES (@lora_id, @user_id, @job_id, @workflow_id, @workflow_name, @used_at_ms)`,
  );
  for (const u of usages) insert.run(u);
}

/** Gives up to `limit` unassigned rows a batch id; a failed publish later resends the same id. */
export function assignBatch(db: Db, batchId: string, limit: number): number {
  return prepared(
    db,
    `UPDATE lora_usage_outbox SET batch_id = ?
       WHERE id IN (SELECT id FROM lora_usage_outbox WHERE batch_id IS NULL ORDER BY id LIMIT ?)`,
  ).run(batchId, limit).changes;
}

/** Batch ids waiting to be published, oldest first. */
export function pendingBatchIds(db: Db): string[] {
  return prepared<[], { batch_id: string }>(
    db,
    `SELECT batch_id FROM lora_usage_outbox WHERE batch_id IS NOT NULL GROUP BY batch_id ORDER BY MIN(id)`,
  )
    .all()
    .map((r) => r.batch_id);
}

export function batchRows(db: Db, batchId: string): UsageRow[] {
  return prepared<[string], UsageRow>(db, "SELECT * FROM lora_usage_outbox WHERE batch_id = ? ORDER BY id").all(
    batchId,
  );
}

export function deleteBatch(db: Db, batchId: string): void {
  prepared(db, "DELETE FROM lora_usage_outbox WHERE batch_id = ?").run(batchId);
}

export function unbatchedCount(db: Db): number {
  return (
    prepared<[], { n: number }>(db, "SELECT COUNT(*) AS n FROM lora_usage_outbox WHERE batch_id IS NULL").get()?.n ?? 0
  );
}
