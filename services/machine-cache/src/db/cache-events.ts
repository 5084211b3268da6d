import type { Db } from "./open-database.js";
import { prepared } from "./prepared.js";

export type CacheEventKind = "hit" | "miss" | "download" | "eviction";

export interface CacheEvent {
  kind: CacheEventKind;
  atMs: number;
  bytes?: number;
  /** For evictions: lru, gdsf, age, invalidation, admin, reconcile; room made for warming is lru-warm or gdsf-warm. */
  reason?: string;
  path?: string;
}

export function recordEvent(db: Db, e: CacheEvent): void {
  prepared(db, "INSERT INTO lora_cache_events (at_ms, kind, bytes, reason, path) VALUES (?, ?, ?, ?, ?)").run(
    e.atMs,
    e.kind,
    e.bytes ?? 0,
    e.reason ?? "",
    e.path ?? "",
  );
}

export interface EventTotals {
  hits: number;
  misses: number;
  evictions: number;
  bytesDownloaded: number;
}

export function eventTotalsSince(db: Db, sinceMs: number): EventTotals {
  const rows = prepared<[number], { kind: string; n: number; bytes: number | null }>(
    db,
    "SELECT kind, COUNT(*) AS n, SUM(bytes) AS bytes FROM lora_cache_events WHERE at_ms >= ? GROUP BY kind",
  ).all(sinceMs);
  const of = (kind: string) => rows.find((r) => r.kind === kind);
  return {
    hits: of("hit")?.n ?? 0,
    misses: of("miss")?.n ?? 0,
    evictions: of("eviction")?.n ?? 0,
    bytesDownloaded: of("download")?.bytes ?? 0,
  };
}

/** Bytes evicted with the given reason since a time. */
export function evictedBytesSince(db: Db, reason: string, sinceMs: number): number {
  const row = prepared<[string, number], { bytes: number | null }>(
    db,
    "SELECT SUM(bytes) AS bytes FROM lora_cache_events WHERE kind = 'eviction' AND reason = ? AND at_ms >= ?",
  ).get(reason, sinceMs);
  return row?.bytes ?? 0;
}

export function pruneEvents(db: Db, beforeMs: number): number {
  return prepared(db, "DELETE FROM lora_cache_events WHERE at_ms < ?").run(beforeMs).changes;
}
