import type { Db } from "./open-database.js";
import { prepared } from "./prepared.js";

/** A row of the node package's models table. */
export interface ModelRow {
  id: number;
  /** Absolute path: the key the node package uses. */
  path: string;
  model_type: string;
  filename: string;
  size_bytes: number;
  last_used: string;
  use_count: number | null;
  download_date: string;
  protected: number | null;
  is_ignore: number | null;
}

/** model_type of a user's own LoRA. */
export const USER_LORA = "user_lora";
/**
 * model_type of a shared LoRA: what the node package's update_model_usage
 * derives from a path under models/loras/.
 */
export const SHARED_LORA = "loras";

const COLUMNS = "id, path, model_type, filename, size_bytes, last_used, use_count, download_date, protected, is_ignore";

export function getModel(db: Db, path: string): ModelRow | undefined {
  return prepared<[string], ModelRow>(db, `SELECT ${COLUMNS} FROM models WHERE path = ?`).get(path);
}

/**
 * Registers a freshly downloaded file. An existing row for the path keeps its
 * protected and is_ignore flags, as the node package's register_model does.
 */
export function registerModel(
  db: Db,
  row: { path: string; modelType: string; filename: string; sizeBytes: number; now: string; useCount: number },
): void {
  prepared(
    db,
    `INSERT INTO models (path, model_type, filename, size_bytes, last_used, use_count, download_date, protected, is_ignore)
     VALUES (@path, @modelType, @filename, @sizeBytes, @now, @useCount, @now, 0, 0)
     ON CONFLICT(path) DO UPDATE SET model_type = excluded.model_type, filename = excluded.filename,
       size_bytes = excluded.size_bytes, last_used = excluded.last_used, download_date = excluded.download_date,
       use_count = IFNULL(models.use_count, 0) + excluded.use_count`,
  ).run(row);
}

/** A use: last_used and use_count, as the node package's update_model_usage. */
export function touchModel(db: Db, path: string, now: string): void {
  prepared(db, "UPDATE models SET last_used = ?, use_count = IFNULL(use_count, 0) + 1 WHERE path = ?").run(now, path);
}

/** The row of a file that moved keeps everything but its path (and base name); inside writeTransaction. */
export function moveModel(db: Db, from: string, to: string): void {
  db.prepare("DELETE FROM models WHERE path = ?").run(to);
  db.prepare("UPDATE models SET path = ?, filename = ? WHERE path = ?").run(to, to.split("/").pop() ?? to, from);
}

export function deleteModel(db: Db, path: string): void {
  prepared(db, "DELETE FROM models WHERE path = ?").run(path);
}

/** User LoRAs that eviction may remove: neither protected nor ignored (NULL counts as 0, as in the node package). */
export function evictableUserLoras(db: Db): ModelRow[] {
  return prepared<[string], ModelRow>(
    db,
    `SELECT ${COLUMNS} FROM models
       WHERE model_type = ? AND IFNULL(protected, 0) = 0 AND IFNULL(is_ignore, 0) = 0`,
  ).all(USER_LORA);
}

/**
 * Every models row with the content it holds: its lora_files content_id (hard
 * links of one file share it), or its own path when that is unknown.
 */
const KEYED = `keyed AS (
  SELECT m.id, m.path, m.model_type, m.filename, m.size_bytes, m.last_used, m.use_count, m.download_date,
         m.protected, m.is_ignore, COALESCE(NULLIF(f.content_id, ''), m.path) AS content
    FROM models m LEFT JOIN lora_files f ON f.path = m.path)`;

/**
 * Bytes of user LoRAs against lora_cache_max_gb: each content once, however
 * many users' paths link to it. A content also held under a shared path costs
 * the budget nothing (evicting the user paths would free no byte).
 */
export function userLoraBytes(db: Db): number {
  const row = prepared<[string], { total: number | null }>(
    db,
    `WITH ${KEYED}
     SELECT SUM(size) AS total FROM (
       SELECT MAX(size_bytes) AS size FROM keyed GROUP BY content HAVING MIN(model_type = ?) = 1)`,
  ).get(USER_LORA);
  return row?.total ?? 0;
}

/** A models row and the content it holds (see KEYED). */
export interface KeyedModelRow extends ModelRow {
  content: string;
}

/**
 * The rows of every content that eviction may free: all its paths are user
 * LoRAs, neither protected nor ignored. A content with any other path (a
 * shared LoRA, a protected copy) stays whatever happens to its user paths.
 */
export function evictableUserContents(db: Db): KeyedModelRow[] {
  return prepared<[string], KeyedModelRow>(
    db,
    `WITH ${KEYED},
       evictable AS (
         SELECT content FROM keyed GROUP BY content
         HAVING MIN(model_type = ? AND IFNULL(protected, 0) = 0 AND IFNULL(is_ignore, 0) = 0) = 1)
     SELECT keyed.* FROM keyed JOIN evictable USING (content)`,
  ).all(USER_LORA);
}

/** Each content's bytes once, of the rows given (by path): hard links of one file count as one. */
export function contentBytes(db: Db, paths: Iterable<string>): number {
  const wanted = new Set(paths);
  const contents = new Map<string, number>();
  for (const row of prepared<[], { path: string; content: string; size_bytes: number }>(
    db,
    `WITH ${KEYED} SELECT path, content, size_bytes FROM keyed`,
  ).iterate()) {
    if (wanted.has(row.path)) contents.set(row.content, Math.max(contents.get(row.content) ?? 0, row.size_bytes ?? 0));
  }
  return [...contents.values()].reduce((s, b) => s + b, 0);
}

/** Rows whose path lies under dir (absolute, without trailing separator). */
export function modelsUnder(db: Db, dir: string): ModelRow[] {
  const prefix = dir.endsWith("/") ? dir : `${dir}/`;
  return prepared<[{ p: string }], ModelRow>(
    db,
    `SELECT ${COLUMNS} FROM models WHERE substr(path, 1, length(@p)) = @p`,
  ).all({ p: prefix });
}

export function modelsPage(db: Db, opts: { afterId: number; modelType: string; limit: number }): ModelRow[] {
  return opts.modelType
    ? prepared<[number, string, number], ModelRow>(
        db,
        `SELECT ${COLUMNS} FROM models WHERE id > ? AND model_type = ? ORDER BY id LIMIT ?`,
      ).all(opts.afterId, opts.modelType, opts.limit)
    : prepared<[number, number], ModelRow>(db, `SELECT ${COLUMNS} FROM models WHERE id > ? ORDER BY id LIMIT ?`).all(
        opts.afterId,
        opts.limit,
      );
}
