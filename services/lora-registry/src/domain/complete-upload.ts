import { type BlobVerification, ErrorReason, reasonName, ValidationStatus } from "@emprops/contracts";
import { failedPrecondition, invalidArgument } from "@emprops/platform";
import { writeAudit } from "../db/queries/audit.js";
import { genOutDataOf, type LoraRow, updateLoraRow } from "../db/queries/loras.js";
import { settleReservation } from "../db/queries/quota.js";
import { finishPendingSession, type SessionRow } from "../db/queries/upload-sessions.js";
import type { LoraGenOutData } from "../db/schema/index.js";
import type { AppContext } from "../context.js";
import { withSpan } from "../telemetry.js";
import { userLoraBlob, viaGateway } from "./blob.js";
import { formatName, fromMetadataMessage, mergeMetadata } from "./lora-message.js";
import { type Ledger, readLedger } from "./quota.js";
import { endSession, findSession, notPending } from "./upload-session.js";

interface Rejection {
  reason: ErrorReason;
  message: string;
  metadata: Record<string, string | number>;
}

/**
 * Completes an upload with ONE gateway call: VerifyBlob answers whether a
 * block list was committed (UPLOAD_INCOMPLETE otherwise) and, if so,
 * verifies it, refusing a blob larger than the reservation from its size
 * alone. Valid: the row becomes visible and the reservation becomes usage.
 * Rejected: the session ends FAILED and the call fails with the reason.
 */
export async function completeUpload(
  ctx: AppContext,
  userId: string,
  uploadId: string,
): Promise<{ lora: LoraRow; ledger: Ledger }> {
  const session = await findSession(ctx.db, userId, uploadId);
  if (session.state !== "pending" || session.expires_at <= ctx.clock.now()) throw notPending(session, ctx.clock.now());
  const declared = Number(session.declared_size_bytes);
  const answer = await withSpan("verify_blob", { "lora.id": session.lora_id, "lora.size_bytes": declared }, () =>
    viaGateway(ctx.logger, "VerifyBlob", () =>
      ctx.blobGateway.verifyBlob(
        {
          blob: userLoraBlob(userId, session.lora_id, session.extension),
          // Larger than reserved is refused from the size alone, without streaming it.
          maxSizeBytes: BigInt(declared),
          expectedSha256: session.expected_sha256 ?? "",
          reportUncommitted: true,
        },
        { timeoutMs: ctx.cfg.blobVerifyTimeoutMs },
      ),
    ),
  );
  if (!answer.committed) {
    throw failedPrecondition(
      ErrorReason.UPLOAD_INCOMPLETE,
      "The block list has not been committed yet: upload every block, then Put Block List",
      { upload_id: uploadId, staged_blocks: answer.uncommittedBlocks.length },
    );
  }
  const verification = answer.verification;
  if (!verification) throw new Error("VerifyBlob answered without a verification");
  const rejection = rejectionOf(verification, declared);
  if (rejection) await reject(ctx, session, rejection);
  return publish(ctx, session, verification);
}

/** Why a verified blob cannot become this upload's LoRA, if it cannot. */
function rejectionOf(v: BlobVerification, declared: number): Rejection | undefined {
  const size = Number(v.sizeBytes);
  if (size > declared) return tooLarge(size, declared);
  if (v.status === ValidationStatus.SAFE) return undefined;
  return {
    reason: v.reason === ErrorReason.UNSPECIFIED ? ErrorReason.INVALID_FILE_FORMAT : v.reason,
    message: v.message || "The file is not a valid LoRA",
    metadata: {
      detected_format: v.detectedType,
      ...(v.unsafeGlobals.length > 0 ? { unsafe_globals: v.unsafeGlobals.join(",") } : {}),
      size_bytes: size,
    },
  };
}

function tooLarge(actual: number, declared: number): Rejection {
  return {
    reason: ErrorReason.CHECKSUM_MISMATCH,
    message: `The uploaded file has ${actual} bytes, more than the ${declared} bytes declared and reserved`,
    metadata: { size_bytes: actual, declared_size_bytes: declared },
  };
}

/** Ends the session FAILED with the reason (blob deleted, reservation returned), then throws. */
async function reject(ctx: AppContext, s: SessionRow, r: Rejection): Promise<never> {
  const name = reasonName(r.reason);
  const ended = await endSession(ctx, s, {
    state: "failed",
    blobMayExist: true,
    audit: {
      actorId: s.user_id,
      actorRole: "user",
      action: "lora.upload.reject",
      details: { upload_id: s.id, reason: name, message: r.message, ...r.metadata },
    },
    failure: { reason: name, message: r.message },
  });
  if (!ended) throw notPending(await findSession(ctx.db, s.user_id, s.id), ctx.clock.now());
  ctx.metrics.uploads.add(1, { outcome: "rejected", reason: name });
  ctx.logger.info({ user_id: s.user_id, lora_id: s.lora_id, upload_id: s.id, reason: name }, "upload rejected");
  throw invalidArgument(r.reason, r.message, { ...r.metadata, upload_id: s.id, lora_id: s.lora_id });
}

/** Makes the row visible with its verified facts and turns the reservation into usage. */
async function publish(ctx: AppContext, s: SessionRow, v: BlobVerification) {
  const now = ctx.clock.now();
  const size = Number(v.sizeBytes);
  const lora = await ctx.db.transaction().execute(async (trx) => {
    if (!(await finishPendingSession(trx, s.id, { state: "completed", finished_at: now }))) return undefined;
    await settleReservation(trx, s.user_id, Number(s.declared_size_bytes), now, size);
    const before = await genOutDataOf(trx, s.lora_id);
    const extracted = fromMetadataMessage(v.metadata);
    const userMetadata = before.user_metadata ?? {};
    const genOut: LoraGenOutData = {
      ...before,
      size_bytes: size,
      file_hash: `sha256:${v.sha256}`,
      lora_metadata: mergeMetadata(extracted, userMetadata),
      validation_status: "safe",
      format: formatName(v.format),
      tensor_count: v.tensorCount,
      extracted_metadata: extracted,
      user_metadata: userMetadata,
    };
    const row = await updateLoraRow(trx, s.lora_id, { genOut, visible: true });
    await writeAudit(trx, now, [
      {
        actorId: s.user_id,
        actorRole: "user",
        action: "lora.upload.complete",
        userId: s.user_id,
        loraId: s.lora_id,
        details: { upload_id: s.id, size_bytes: size, sha256: v.sha256, format: genOut.format },
      },
    ]);
    return row;
  });
  if (!lora) throw notPending(await findSession(ctx.db, s.user_id, s.id), now);
  ctx.metrics.uploads.add(1, { outcome: "completed" });
  ctx.logger.info({ user_id: s.user_id, lora_id: s.lora_id, upload_id: s.id, size_bytes: size }, "upload completed");
  return { lora, ledger: await readLedger(ctx.db, ctx.cfg.quota, s.user_id) };
}
