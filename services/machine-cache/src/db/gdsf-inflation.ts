import type { Db } from "./open-database.js";
import { writeTransaction } from "./write-transaction.js";

/** GDSF's inflation value in force at `atMs`: the last one raised at or before it (0 before any). */
export function inflationReader(db: Db): (atMs: number) => number {
  const stmt = db.prepare<[number], { value: number }>(
    "SELECT value FROM lora_gdsf_inflation WHERE at_ms <= ? ORDER BY at_ms DESC LIMIT 1",
  );
  return (atMs) => stmt.get(atMs)?.value ?? 0;
}

/**
 * Raises the inflation value from `atMs` on, and forgets the values no row
 * can still need: those before `oldestUseMs` except the last of them.
 */
export function raiseInflation(db: Db, atMs: number, value: number, oldestUseMs: number): Promise<void> {
  return writeTransaction(db, () => {
    db.prepare(
      `INSERT INTO lora_gdsf_inflation (at_ms, value) VALUES (?, ?)
       ON CONFLICT(at_ms) DO UPDATE SET value = max(value, excluded.value)`,
    ).run(atMs, value);
    db.prepare(
      `DELETE FROM lora_gdsf_inflation
       WHERE at_ms < (SELECT max(at_ms) FROM lora_gdsf_inflation WHERE at_ms <= ?)`,
    ).run(oldestUseMs);
  });
}
