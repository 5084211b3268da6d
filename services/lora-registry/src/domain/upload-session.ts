import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ErrorReason, type UploadSession, UploadSessionSchema, UploadState } from "@emprops/contracts";
import { failedPrecondition, notFound, withTraceContext } from "@emprops/platform";
import { trace } from "@opentelemetry/api";
import type { Kysely } from "kysely";
import type { UploadConfig } from "../config.js";
import { type AuditEntry, writeAudit } from "../db/queries/audit.js";
import { markUploadEnded } from "../db/queries/loras.js";
import { settleReservation } from "../db/queries/quota.js";
import * as sessions from "../db/queries/upload-sessions.js";
import type { SessionRow } from "../db/queries/upload-sessions.js";
import type { Database, UploadSessionState } from "../db/schema/index.js";
import type { AppContext } from "../context.js";
import { withSpan } from "../telemetry.js";
import { blobPathOf, stagedUpload, viaGateway } from "./blob.js";
import { enqueueLoraDeleted } from "./outbox.js";

const STATES: Record<UploadSessionState, UploadState> = {
  pending: UploadState.PENDING,
  completed: UploadState.COMPLETED,
  aborted: UploadState.ABORTED,
  expired: UploadState.EXPIRED,
  failed: UploadState.FAILED,
};

/**
 * Seconds an upload URL handed out now may live: UPLOAD_URL_TTL_SECONDS,
 * never past the session's expiry (UPLOAD_SESSION_TTL_SECONDS after it began).
 */
export function uploadUrlTtl(cfg: UploadConfig, now: Date, expiresAt: Date): number {
  const left = Math.floor((expiresAt.getTime() - now.getTime()) / 1000);
  return Math.max(1, Math.min(cfg.urlTtlSeconds, left));
}

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
  const row = await sessions.findSession(db, userId, uploadId);
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
 * if anything may have been uploaded, seals the staging blob (what was
 * uploaded is discarded and the old URL can write nothing more) and writes
 * a LoraDeleted event to the outbox, whose consumer removes anything a
 * completion racing with this one stored at the final path. Should the
 * gateway not answer, the consistency sweep (jobs/storage-sweep.ts) seals
 * the staging blob later; it deletes every ended session's staging blob once
 * the session's URLs have expired. The state guard makes it happen once however many callers
 * race — a CompleteLoraUpload verifying at the same time then fails instead
 * of publishing; false when someone else ended the session first.
 */
export async function endSession(ctx: AppContext, s: SessionRow, end: SessionEnd): Promise<boolean> {
  const now = ctx.clock.now();
  const ended = await ctx.db.transaction().execute(async (trx) => {
    const finished = await sessions.finishPendingSession(trx, s.id, {
      state: end.state,
      finished_at: now,
      failure_reason: end.failure?.reason ?? null,
      failure_message: end.failure?.message ?? null,
    });
    if (!finished) return false;
    await settleReservation(trx, s.user_id, Number(s.declared_size_bytes), now);
    await markUploadEnded(trx, s.lora_id, end.state === "failed" ? "rejected" : end.state);
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
    await sealStaging(ctx, [s]);
  }
  return ended;
}

/**
 * Seals the staging blobs of ended sessions (at once when the gateway
 * answers; otherwise the consistency sweep does it), so a write with an old
 * upload URL stores nothing.
 */
export async function sealStaging(
  ctx: AppContext,
  ended: Pick<SessionRow, "id" | "user_id" | "extension">[],
): Promise<void> {
  await Promise.all(
    ended.map(async (s) => {
      try {
        await viaGateway(ctx.logger, "SealUpload", () => ctx.blobGateway.sealUpload({ upload: stagedUpload(s) }));
      } catch {
        ctx.logger.warn({ upload_id: s.id }, "staging blob of an ended upload left to the consistency sweep");
      }
    }),
  );
}

/** The LoRA's final blob as blobPathOf reads a row (the session's own blob_path is its staging blob). */
function uploadRow(s: SessionRow) {
  return {
    id: s.lora_id,
    user_id: s.user_id,
    name: `.${s.extension}`,
    gen_out_data: { extension: s.extension },
  };
}

/**
 * Runs fn in a span of the upload's trace (the one its CreateLoraUpload
 * ran in), linked to the current request's span when that is another
 * trace: a client that sends no traceparent still finds the whole upload
 * in one trace.
 */
export function joinUploadTrace<T>(s: SessionRow, name: string, fn: () => Promise<T>): Promise<T> {
  const current = trace.getActiveSpan()?.spanContext();
  const carrier = s.trace_context;
  if (!carrier || (current && carrier.traceparent?.split("-")[1] === current.traceId)) {
    return withSpan(name, { "lora.upload_id": s.id }, fn);
  }
  const links = current ? [{ context: current }] : [];
  return withTraceContext(carrier, () => withSpan(name, { "lora.upload_id": s.id }, fn, links));
}
