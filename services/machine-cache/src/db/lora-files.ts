import type { Db } from "./open-database.js";
import { prepared } from "./prepared.js";

export type LoraSourceName = "user" | "shared";

/** What a cached file is: the reference it answers, whose it is and its checksum. */
export interface LoraFileRow {
  /** Absolute path, the same key as models.path. */
  path: string;
  source: LoraSourceName;
  /** flat_file id for user LoRAs, file name for shared ones. */
  identifier: string;
  /** Owner for user LoRAs, "" for shared ones. */
  user_id: string;
  file_name: string;
  sha256: string;
  size_bytes: number;
  /** When the registry last confirmed the LoRA exists (epoch ms). */
  validated_at_ms: number;
  /**
   * The file itself (device:inode): hard links of one file share it, so its
   * bytes are on disk once. "" until known (rows from before links): a content of its own.
   */
  content_id: string;
}

const COLUMNS = "path, source, identifier, user_id, file_name, sha256, size_bytes, validated_at_ms, content_id";

/** A file's content_id: what hard links of one file have in common. */
export function contentIdOf(stat: { dev: number; ino: number }): string {
  return `${stat.dev}:${stat.ino}`;
}

export function findLoraFile(
  db: Db,
  key: { source: LoraSourceName; userId: string; identifier: string },
): LoraFileRow | undefined {
  return prepared<[string, string, string], LoraFileRow>(
    db,
    `SELECT ${COLUMNS} FROM lora_files WHERE source = ? AND user_id = ? AND identifier = ?`,
  ).get(key.source, key.userId, key.identifier);
}

export function findLoraFileByPath(db: Db, path: string): LoraFileRow | undefined {
  return prepared<[string], LoraFileRow>(db, `SELECT ${COLUMNS} FROM lora_files WHERE path = ?`).get(path);
}

/** Every cached copy of a user LoRA id (of any owner, or of one). */
export function findUserLoraFiles(db: Db, loraId: string, userId?: string): LoraFileRow[] {
  return userId
    ? prepared<[string, string], LoraFileRow>(
        db,
        `SELECT ${COLUMNS} FROM lora_files WHERE source = 'user' AND identifier = ? AND user_id = ?`,
      ).all(loraId, userId)
    : prepared<[string], LoraFileRow>(
        db,
        `SELECT ${COLUMNS} FROM lora_files WHERE source = 'user' AND identifier = ?`,
      ).all(loraId);
}

export function loraFilesOfUser(db: Db, userId: string): LoraFileRow[] {
  return prepared<[string], LoraFileRow>(
    db,
    `SELECT ${COLUMNS} FROM lora_files WHERE source = 'user' AND user_id = ?`,
  ).all(userId);
}

export function allLoraFiles(db: Db): LoraFileRow[] {
  return prepared<[], LoraFileRow>(db, `SELECT ${COLUMNS} FROM lora_files`).all();
}

export function upsertLoraFile(db: Db, row: Omit<LoraFileRow, "content_id"> & { content_id?: string }): void {
  prepared(
    db,
    `INSERT INTO lora_files (${COLUMNS})
     VALUES (@path, @source, @identifier, @user_id, @file_name, @sha256, @size_bytes, @validated_at_ms, @content_id)
     ON CONFLICT(path) DO UPDATE SET source = excluded.source, identifier = excluded.identifier,
       user_id = excluded.user_id, file_name = excluded.file_name, sha256 = excluded.sha256,
       size_bytes = excluded.size_bytes, validated_at_ms = excluded.validated_at_ms, content_id = excluded.content_id`,
  ).run({ ...row, content_id: row.content_id ?? "" });
}

/** Cached files with this content (sha256 and size), any reference's: where a new reference may link to. */
export function loraFilesWithContent(db: Db, sha256: string, sizeBytes: number): LoraFileRow[] {
  return prepared<[string, number], LoraFileRow>(
    db,
    `SELECT ${COLUMNS} FROM lora_files WHERE sha256 = ? AND size_bytes = ? ORDER BY validated_at_ms DESC`,
  ).all(sha256, sizeBytes);
}

/** How many paths still hold this file (its hard links with rows); 0 for "" (a content of its own). */
export function referencesOfContent(db: Db, contentId: string): number {
  if (!contentId) return 0;
  const row = prepared<[string], { n: number }>(db, "SELECT COUNT(*) AS n FROM lora_files WHERE content_id = ?").get(
    contentId,
  );
  return row?.n ?? 0;
}

export function setContentId(db: Db, path: string, contentId: string): void {
  prepared(db, "UPDATE lora_files SET content_id = ? WHERE path = ?").run(contentId, path);
}

/** Inside writeTransaction, with moveModel. */
export function moveLoraFile(db: Db, from: string, to: string): void {
  db.prepare("DELETE FROM lora_files WHERE path = ?").run(to);
  db.prepare("UPDATE lora_files SET path = ? WHERE path = ?").run(to, from);
}

export function deleteLoraFile(db: Db, path: string): void {
  prepared(db, "DELETE FROM lora_files WHERE path = ?").run(path);
}

export function markValidated(db: Db, path: string, atMs: number): void {
  prepared(db, "UPDATE lora_files SET validated_at_ms = ? WHERE path = ?").run(atMs, path);
}

/** Every cached file with this content (lower-case hex sha256), whatever it answers. */
export function loraFilesWithSha256(db: Db, sha256: string): LoraFileRow[] {
  return prepared<[string], LoraFileRow>(db, `SELECT ${COLUMNS} FROM lora_files WHERE sha256 = ?`).all(sha256);
}
