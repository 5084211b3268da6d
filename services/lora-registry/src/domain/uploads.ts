import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ErrorReason, type UploadSession, UploadSessionSchema, UploadState } from "@emprops/contracts";
import { failedPrecondition, notFound } from "@emprops/platform";
import { type Kysely, sql } from "kysely";
import type { Database, LoraUploadTable, UploadSessionState } from "../db/schema/index.js";
import type { AppContext } from "../context.js";
import { type AuditEntry, writeAudit } from "./audit.js";
import { blobPathOf, GATEWAY_TIMEOUT_MS, userLoraBlob, viaGateway } from "./blob.js";
import { enqueueLoraDeleted } from "./outbox.js";
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

/** Why an upload's blob is deleted, as LoraDeleted.reason. */
const DELETION_REASONS = {
  aborted: "upload_aborted",
  expired: "upload_expired",
  failed: "upload_rejected",
} as const;

export interface SessionEnd {
  state: "aborted" | "expired" | "failed";
  audit: Omit<AuditEntry, "userId" | "loraId">;
  failure?: { reason: string; message: string };
  /** False only when no upload URL was ever handed out. */
  blobMayExist: boolean;
}

/**
 * Ends a pending session without publishing it (aborted, expired, failed):
 * returns its reservation, marks the hidden row, writes the audit row and,
 * if anything may have been uploaded, a LoraDeleted event to the outbox (the
 * gateway's consumer deletes the blob even if the direct deletion below
 * fails). The state guard makes it happen once however many callers race —
 * a CompleteLoraUpload verifying at the same time then fails instead of
 * publishing; false when someone else ended the session first.
 */
export async function endSession(ctx: AppContext, s: SessionRow, end: SessionEnd): Promise<boolean> {
  const now = ctx.clock.now();
  const ended = await ctx.db.transaction().execute(async (trx) => {
    const row = await trx
      .updateTable("lora_upload")
      .set({
        state: end.state,
        finished_at: now,
        failure_reason: end.failure?.reason ?? null,
        failure_message: end.failure?.message ?? null,
      })
      .where("id", "=", s.id)
      .where("state", "=", "pending")
      .returning("id")
      .executeTakeFirst();
    if (!row) return false;
    await settleReservation(trx, s.user_id, Number(s.declared_size_bytes), now);
    const status = end.state === "failed" ? "rejected" : end.state;
    await sql`
      UPDATE flat_file
      SET hidden = true,
          gen_out_data = coalesce(gen_out_data, '{}'::jsonb) || jsonb_build_object('validation_status', ${status}::text)
      WHERE id = ${s.lora_id}`.execute(trx);
    if (end.blobMayExist) {
      await enqueueLoraDeleted(trx, ctx.names, ctx.newId, now, DELETION_REASONS[end.state], [
        { loraId: s.lora_id, userId: s.user_id, ...blobPathOf(uploadRow(s)) },
      ]);
    }
    await writeAudit(trx, now, [{ ...end.audit, userId: s.user_id, loraId: s.lora_id }]);
    return true;
  });
  if (ended && end.blobMayExist) {
    ctx.outboxWritten.notify();
    // At once if storage answers; otherwise the deletion event does it.
    try {
      await viaGateway(ctx.logger, "DeleteBlob", () =>
        ctx.blobGateway.deleteBlob(
          { blob: userLoraBlob(s.user_id, s.lora_id, s.extension) },
          { timeoutMs: GATEWAY_TIMEOUT_MS },
        ),
      );
    } catch {
      ctx.logger.warn({ upload_id: s.id, lora_id: s.lora_id }, "blob of an ended upload left to its deletion event");
    }
  }
  return ended;
}

function uploadRow(s: SessionRow) {
  return {
    id: s.lora_id,
    user_id: s.user_id,
    name: `.${s.extension}`,
    gen_out_data: { extension: s.extension, ...(s.blob_path ? { blob_path: s.blob_path } : {}) },
  };
}
