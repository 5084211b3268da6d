import { type Kysely, sql } from "kysely";
import type { Database, LoraGenOutData, UploadSessionState } from "../schema/index.js";
import { isLora, isVisibleLora } from "./loras.js";

/**
 * Key of the session-level advisory lock only one sweep at a time holds,
 * across every replica on the database (an arbitrary constant: "LoRAsweep"
 * in ASCII, cut to 63 bits).
 */
const SWEEP_LOCK_KEY = 0x4c6f526173776565n;

/**
 * Runs fn while holding the sweep's advisory lock on one pooled connection;
 * undefined, without running fn, when another session holds it. The lock
 * goes with the connection should the process die.
 */
export async function withSweepLock<T>(db: Kysely<Database>, fn: () => Promise<T>): Promise<T | undefined> {
  return db.connection().execute(async (conn) => {
    const { rows } = await sql<{ locked: boolean }>`SELECT pg_try_advisory_lock(${SWEEP_LOCK_KEY}) AS locked`.execute(
      conn,
    );
    if (!rows[0]?.locked) return undefined;
    try {
      return await fn();
    } finally {
      await sql`SELECT pg_advisory_unlock(${SWEEP_LOCK_KEY})`.execute(conn);
    }
  });
}

/** The advisory lock's key, for tests and operators (pg_locks shows it as classid/objid). */
export const sweepLockKey = SWEEP_LOCK_KEY;

/** The next users (in uuid order, which is their blob prefixes' name order) that have visible LoRAs. */
export async function usersWithVisibleLoras(db: Kysely<Database>, after: string | undefined, limit: number) {
  let q = db.selectFrom("flat_file as f").select("f.user_id").distinct().where(isVisibleLora);
  if (after) q = q.where("f.user_id", ">", after);
  const rows = await q.orderBy("f.user_id").limit(limit).execute();
  return rows.map((r) => r.user_id);
}

/** A LoRA row as the sweep reads it: visible, or hidden with an upload that may still store its blobs. */
export interface SweptLoraRow {
  id: string;
  user_id: string;
  name: string;
  hidden: boolean | null;
  gen_out_data: LoraGenOutData | null;
  /** A pending upload session: its CommitUpload may be writing the final blobs right now. */
  upload_pending: boolean;
}

const uploadPending = sql<boolean>`EXISTS (
  SELECT 1 FROM lora_upload u WHERE u.lora_id = f.id AND u.state = 'pending')`;

/**
 * Every LoRA row of the user that is visible or has a pending upload: two
 * index reads (the visible-LoRA partial index led by user_id, and the
 * user's pending sessions), not a scan of the user's hidden history.
 */
export function liveLoraRowsOfUser(db: Kysely<Database>, userId: string): Promise<SweptLoraRow[]> {
  const visible = db
    .selectFrom("flat_file as f")
    .select(["f.id", "f.user_id", "f.name", "f.hidden", "f.gen_out_data", uploadPending.as("upload_pending")])
    .where("f.user_id", "=", userId)
    .where(isVisibleLora);
  const uploading = db
    .selectFrom("lora_upload as u")
    .innerJoin("flat_file as f", "f.id", "u.lora_id")
    .select(["f.id", "f.user_id", "f.name", "f.hidden", "f.gen_out_data", sql<boolean>`true`.as("upload_pending")])
    .where("u.user_id", "=", userId)
    .where("u.state", "=", "pending")
    .where("f.hidden", "=", true);
  return visible.unionAll(uploading).execute();
}

/** Those of the ids that are LoRA rows visible or with a pending upload, read now. */
export function liveLoraRowsByIds(db: Kysely<Database>, ids: string[]): Promise<SweptLoraRow[]> {
  if (ids.length === 0) return Promise.resolve([]);
  return db
    .selectFrom("flat_file as f")
    .select(["f.id", "f.user_id", "f.name", "f.hidden", "f.gen_out_data", uploadPending.as("upload_pending")])
    .where("f.id", "in", ids)
    .where(isLora)
    .where((eb) => eb.or([eb("f.hidden", "is not", true), uploadPending]))
    .execute();
}

/** The upload sessions of these ids, whatever their state. */
export function sessionsByIds(
  db: Kysely<Database>,
  uploadIds: string[],
): Promise<{ id: string; user_id: string; state: UploadSessionState; expires_at: Date }[]> {
  if (uploadIds.length === 0) return Promise.resolve([]);
  return db
    .selectFrom("lora_upload")
    .select(["id", "user_id", "state", "expires_at"])
    .where("id", "in", uploadIds)
    .execute();
}

/** How many reports are kept. */
const KEPT_REPORTS = 50;

export async function saveSweepReport(
  db: Kysely<Database>,
  r: { runId: string; startedAt: Date; finishedAt: Date; report: Record<string, unknown> },
): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await trx
      .insertInto("storage_sweep_report")
      .values({ run_id: r.runId, started_at: r.startedAt, finished_at: r.finishedAt, report: JSON.stringify(r.report) })
      .execute();
    await sql`DELETE FROM storage_sweep_report WHERE run_id NOT IN (
      SELECT run_id FROM storage_sweep_report ORDER BY finished_at DESC LIMIT ${KEPT_REPORTS})`.execute(trx);
  });
}

/** The latest finished report, if any. */
export async function latestSweepReport(
  db: Kysely<Database>,
): Promise<{ finished_at: Date; report: Record<string, unknown> } | undefined> {
  return db
    .selectFrom("storage_sweep_report")
    .select(["finished_at", "report"])
    .orderBy("finished_at", "desc")
    .limit(1)
    .executeTakeFirst();
}
