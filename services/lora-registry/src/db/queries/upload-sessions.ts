import type { Insertable, Kysely, Selectable, Updateable } from "kysely";
import type { Database, LoraUploadTable } from "../schema/index.js";

/** An upload session as read from lora_upload. */
export type SessionRow = Selectable<LoraUploadTable>;

/** The user's own session, if any. */
export function findSession(db: Kysely<Database>, userId: string, uploadId: string): Promise<SessionRow | undefined> {
  return db
    .selectFrom("lora_upload")
    .selectAll()
    .where("id", "=", uploadId)
    .where("user_id", "=", userId)
    .executeTakeFirst();
}

export function insertSession(db: Kysely<Database>, session: Insertable<LoraUploadTable>): Promise<SessionRow> {
  return db.insertInto("lora_upload").values(session).returningAll().executeTakeFirstOrThrow();
}

export async function setSessionBlobPath(db: Kysely<Database>, uploadId: string, blobPath: string): Promise<void> {
  await db.updateTable("lora_upload").set({ blob_path: blobPath }).where("id", "=", uploadId).execute();
}

/**
 * Moves a session out of pending: the state guard lets exactly one of
 * racing callers (complete, abort, reaper) do it. False when it was no
 * longer pending.
 */
export async function finishPendingSession(
  db: Kysely<Database>,
  uploadId: string,
  change: Updateable<LoraUploadTable> & { state: Exclude<LoraUploadTable["state"], "pending">; finished_at: Date },
): Promise<boolean> {
  const row = await db
    .updateTable("lora_upload")
    .set(change)
    .where("id", "=", uploadId)
    .where("state", "=", "pending")
    .returning("id")
    .executeTakeFirst();
  return row !== undefined;
}

/** Pending sessions past their expiry, oldest first. */
export function expiredSessions(db: Kysely<Database>, now: Date, limit: number): Promise<SessionRow[]> {
  return db
    .selectFrom("lora_upload")
    .selectAll()
    .where("state", "=", "pending")
    .where("expires_at", "<=", now)
    .orderBy("expires_at")
    .limit(limit)
    .execute();
}

/** Aborts every pending session of the user (account deletion); what they had reserved. */
export function abortPendingSessionsOfUser(
  db: Kysely<Database>,
  userId: string,
  now: Date,
  failure: { reason: string; message: string },
): Promise<Pick<SessionRow, "id" | "user_id" | "extension" | "lora_id" | "declared_size_bytes">[]> {
  return db
    .updateTable("lora_upload")
    .set({ state: "aborted", finished_at: now, failure_reason: failure.reason, failure_message: failure.message })
    .where("user_id", "=", userId)
    .where("state", "=", "pending")
    .returning(["id", "user_id", "extension", "lora_id", "declared_size_bytes"])
    .execute();
}
