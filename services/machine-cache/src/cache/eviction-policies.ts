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

/**
 * A download's fixed cost (resolving, connecting, fsync, registering) as the
 * bytes that take as long to fetch: GDSF's cost of a miss is this plus the
 * file's size, so per byte small files cost a little more.
 */
export const GDSF_FIXED_COST_BYTES = 64 * 1024 * 1024;

/**
 * GDSF (Cherkasova 1998, with a download-time cost): inflation value as of
 * the row's last use + use count × cost / size. Rarely used files go first;
 * among equally used ones, large ones before small ones.
 */
export function gdsfPriority(row: ModelRow, inflationAt: (ms: number) => number): number {
  const size = Math.max(1, row.size_bytes);
  return inflationAt(lastUsedMs(row)) + ((row.use_count ?? 0) * (size + GDSF_FIXED_COST_BYTES)) / size;
}

/**
 * The lowest-priority rows whose sizes add up to `bytesNeeded`, and the new
 * inflation value (the last victim's priority); undefined when all of them
 * together are not enough.
 */
export function pickGdsf(
  candidates: ModelRow[],
  bytesNeeded: number,
  inflationAt: (ms: number) => number,
): { victims: ModelRow[]; inflation: number } | undefined {
  if (bytesNeeded <= 0) return { victims: [], inflation: 0 };
  const ranked = candidates
    .map((row) => ({ row, priority: gdsfPriority(row, inflationAt) }))
    .sort((a, b) => a.priority - b.priority || lastUsedMs(a.row) - lastUsedMs(b.row) || a.row.id - b.row.id);
  const victims: ModelRow[] = [];
  let freed = 0;
  for (const { row, priority } of ranked) {
    victims.push(row);
    freed += row.size_bytes;
    if (freed >= bytesNeeded) return { victims, inflation: priority };
  }
  return undefined;
}
