import type { Db } from "./open-database.js";
import { prepared } from "./prepared.js";

export function addTombstone(db: Db, userId: string, loraId: string, atMs: number): void {
  prepared(db, "INSERT OR IGNORE INTO lora_tombstones (user_id, lora_id, deleted_at_ms) VALUES (?, ?, ?)").run(
    userId,
    loraId,
    atMs,
  );
}

export function isTombstoned(db: Db, userId: string, loraId: string): boolean {
  return !!prepared(db, "SELECT 1 FROM lora_tombstones WHERE user_id = ? AND lora_id = ?").get(userId, loraId);
}

export function pruneTombstones(db: Db, beforeMs: number): number {
  return prepared(db, "DELETE FROM lora_tombstones WHERE deleted_at_ms < ?").run(beforeMs).changes;
}
