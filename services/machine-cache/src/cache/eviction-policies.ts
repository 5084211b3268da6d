import { parsePythonIso } from "../db/python-time.js";
import type { ModelRow } from "../db/models.js";

const DAY_MS = 24 * 3600 * 1000;

/** last_used as a time; a value no one can read counts as never used, so it goes first. */
export function lastUsedMs(row: ModelRow): number {
  return parsePythonIso(row.last_used)?.getTime() ?? 0;
}

/** Least recently used first; ties by id (older row first). */
export function byLeastRecentlyUsed(rows: ModelRow[]): ModelRow[] {
  return [...rows].sort((a, b) => lastUsedMs(a) - lastUsedMs(b) || a.id - b.id);
}

/**
 * The fewest least-recently-used rows whose sizes add up to `bytesNeeded`,
 * or undefined when all of them together are not enough (then nothing
 * should be evicted).
 */
export function pickLru(candidates: ModelRow[], bytesNeeded: number): ModelRow[] | undefined {
  if (bytesNeeded <= 0) return [];
  const picked: ModelRow[] = [];
  let freed = 0;
  for (const row of byLeastRecentlyUsed(candidates)) {
    picked.push(row);
    freed += row.size_bytes;
    if (freed >= bytesNeeded) return picked;
  }
  return undefined;
}

/** Rows not used for more than `maxAgeDays` before `now`. */
export function pickAged(candidates: ModelRow[], now: Date, maxAgeDays: number): ModelRow[] {
  const cutoff = now.getTime() - maxAgeDays * DAY_MS;
  return byLeastRecentlyUsed(candidates).filter((row) => lastUsedMs(row) < cutoff);
}
