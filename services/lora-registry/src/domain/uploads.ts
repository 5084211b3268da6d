import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ErrorReason, type UploadSession, UploadSessionSchema, UploadState } from "@emprops/contracts";
import { failedPrecondition, notFound } from "@emprops/platform";
import { type Kysely, sql } from "kysely";
import type { Database, LoraUploadTable, UploadSessionState } from "../db/schema/index.js";
import { type AuditEntry, writeAudit } from "./audit.js";
import { settleReservation } from "./quota.js";

export type SessionRow = Omit<LoraUploadTable, "declared_size_bytes"> & { declared_size_bytes: string };

const STATES: Record<UploadSessionState, UploadState> = {
  pending: UploadState.PENDING,
  completed: UploadState.COMPLETED,
  aborted: UploadState.ABORTED,
  expired: UploadState.EXPIRED,
  failed: UploadState.FAILED,
};

/** Past its expiry a pending session is expired, whether or not the reaper has been yet. */
export function effectiveState(s: SessionRow, now: Date): UploadSessionState {
  return s.state === "pending" && s.expires_at.getTime() <= now.getTime() ? "expired" : s.state;
}

export function toUploadSession(s: SessionRow, now: Date): UploadSession {
  return create(UploadSessionSchema, {
    uploadId: s.id,
    loraId: s.lora_id,
    state: STATES[effectiveState(s, now)],
    declaredSizeBytes: BigInt(s.declared_size_bytes),
    createTime: timestampFromDate(s.created_at),
    expireTime: timestampFromDate(s.expires_at),
    failureReason: s.failure_reason ?? "",
    failureMessage: s.failure_message ?? "",
  });
}

/** The caller's own session; UPLOAD_NOT_FOUND for a missing one and for someone else's alike. */
export async function findSession(db: Kysely<Database>, userId: string, uploadId: string): Promise<SessionRow> {
  const row = await db
    .selectFrom("lora_upload")
    .selectAll()
    .where("id", "=", uploadId)
    .where("user_id", "=", userId)
    .executeTakeFirst();
  if (!row) {
    throw notFound(ErrorReason.UPLOAD_NOT_FOUND, `Upload ${uploadId} not found or access denied`, {
      upload_id: uploadId,
    });
  }
  return row;
}

/** FAILED_PRECONDITION for a session that is no longer pending. */
export function notPending(s: SessionRow, now: Date) {
  const state = effectiveState(s, now);
  if (state === "expired") {
    return failedPrecondition(ErrorReason.UPLOAD_EXPIRED, `Upload ${s.id} expired before it was completed`, {
      upload_id: s.id,
      expire_time: s.expires_at.toISOString(),
    });
  }
  return failedPrecondition(ErrorReason.UPLOAD_STATE_CONFLICT, `Upload ${s.id} is already ${state}`, {
    upload_id: s.id,
    state,
  });
}

/**
 * Ends a pending session without publishing it (aborted, expired, failed):
 * returns its reservation, marks the hidden row, writes the audit row. The
 * state guard makes it happen once however many callers race; false when
 * someone else ended it first.
 */
export async function endSession(
  db: Kysely<Database>,
  s: SessionRow,
  state: "aborted" | "expired" | "failed",
  now: Date,
  audit: Omit<AuditEntry, "userId" | "loraId">,
  failure?: { reason: string; message: string },
): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    const ended = await trx
      .updateTable("lora_upload")
      .set({
        state,
        finished_at: now,
        failure_reason: failure?.reason ?? null,
        failure_message: failure?.message ?? null,
      })
      .where("id", "=", s.id)
      .where("state", "=", "pending")
      .returning("id")
      .executeTakeFirst();
    if (!ended) return false;
    await settleReservation(trx, s.user_id, Number(s.declared_size_bytes), now);
    const status = state === "failed" ? "rejected" : state;
    await sql`
      UPDATE flat_file
      SET hidden = true,
          gen_out_data = coalesce(gen_out_data, '{}'::jsonb) || jsonb_build_object('validation_status', ${status}::text)
      WHERE id = ${s.lora_id}`.execute(trx);
    await writeAudit(trx, now, [{ ...audit, userId: s.user_id, loraId: s.lora_id }]);
    return true;
  });
}
