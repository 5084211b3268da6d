import {
  type BlobVerification,
  type CommitUploadResponse,
  ErrorReason,
  reasonName,
  type StoredBlob,
  ValidationStatus,
} from "@emprops/contracts";
import { failedPrecondition, invalidArgument } from "@emprops/platform";
import { writeAudit } from "../db/queries/audit.js";
import { genOutDataOf, type LoraRow, updateLoraRow } from "../db/queries/loras.js";
import { settleReservation } from "../db/queries/quota.js";
import { finishPendingSession, type SessionRow } from "../db/queries/upload-sessions.js";
import type { ConvertedBlob, LoraGenOutData } from "../db/schema/index.js";
import type { AppContext } from "../context.js";
import { withSpan } from "../telemetry.js";
import { stagedUpload, userLoraBlob, viaGateway } from "./blob.js";
import { formatName, fromMetadataMessage, mergeMetadata } from "./lora-message.js";
import { type Ledger, readLedger } from "./quota.js";
import { endSession, findSession, joinUploadTrace, notPending, sealStaging } from "./upload-session.js";

interface Rejection {
  reason: ErrorReason;
  message: string;
  metadata: Record<string, string | number>;
}

/**
 * Completes an upload with ONE gateway call: CommitUpload leases the
 * staging blob (no write with the upload URL lands from then on), verifies
 * it, refusing a blob larger than the reservation from its size alone, and
 * copies it server side to its final path (a .pt is also converted to the
 * safetensors machines receive); it answers UPLOAD_INCOMPLETE when no block
 * list was committed. Valid: the row becomes visible with the stored blobs'
 * facts and the reservation becomes usage; the staging blob is then sealed.
 * Rejected: the session ends FAILED and the call fails with the reason.
 * Runs in the trace the upload began in.
 */
export async function completeUpload(
  ctx: AppContext,
  userId: string,
  uploadId: string,
): Promise<{ lora: LoraRow; ledger: Ledger }> {
  const session = await findSession(ctx.db, userId, uploadId);
  if (session.state !== "pending" || session.expires_at <= ctx.clock.now()) throw notPending(session, ctx.clock.now());
  return joinUploadTrace(session, "complete_upload", () => complete(ctx, session));
}

async function complete(ctx: AppContext, session: SessionRow): Promise<{ lora: LoraRow; ledger: Ledger }> {
  const declared = Number(session.declared_size_bytes);
  let answer: CommitUploadResponse;
  try {
    answer = await withSpan("verify_blob", { "lora.id": session.lora_id, "lora.size_bytes": declared }, () =>
      viaGateway(ctx.logger, "CommitUpload", () =>
        ctx.blobGateway.commitUpload(
          {
            upload: stagedUpload(session),
            destination: userLoraBlob(session.user_id, session.lora_id, session.extension),
            // Larger than reserved is refused from the size alone, without streaming it.
            maxSizeBytes: BigInt(declared),
            expectedSha256: session.expected_sha256 ?? "",
          },
          { timeoutMs: ctx.cfg.blobVerifyTimeoutMs },
        ),
      ),
    );
  } catch (err) {
    // Ended meanwhile (aborted, reaped, or a concurrent completion sealed it): say that rather than the storage error.
    const current = await findSession(ctx.db, session.user_id, session.id);
    if (current.state !== "pending") throw notPending(current, ctx.clock.now());
    throw err;
  }
  if (!answer.committed) {
    throw failedPrecondition(
      ErrorReason.UPLOAD_INCOMPLETE,
      "The block list has not been committed yet: upload every block, then Put Block List",
      { upload_id: session.id, staged_blocks: answer.uncommittedBlocks.length },
    );
  }
  const verification = answer.verification;
  if (!verification) throw new Error("CommitUpload answered without a verification");
  const rejection = rejectionOf(verification, declared);
  if (rejection) await reject(ctx, session, rejection);
  if (!answer.stored) throw new Error("CommitUpload accepted the file without storing it");
  return publish(ctx, session, verification, answer);
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

/**
 * Makes the row visible with its verified facts (the stored blob's path and
 * ETag, the verified ETag, the converted copy of a .pt) and turns the
 * reservation into usage; then seals the staging blob.
 */
async function publish(ctx: AppContext, s: SessionRow, v: BlobVerification, answer: CommitUploadResponse) {
  const now = ctx.clock.now();
  const size = Number(v.sizeBytes);
  const stored = answer.stored as StoredBlob;
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
      blob_path: stored.blobPath,
      blob_etag: stored.etag,
      verified_etag: answer.verifiedEtag,
      ...(answer.converted ? { converted: convertedOf(answer.converted) } : {}),
    };
    const row = await updateLoraRow(trx, s.lora_id, { genOut, url: stored.blobUrl, visible: true });
    await writeAudit(trx, now, [
      {
        actorId: s.user_id,
        actorRole: "user",
        action: "lora.upload.complete",
        userId: s.user_id,
        loraId: s.lora_id,
        details: {
          upload_id: s.id,
          size_bytes: size,
          sha256: v.sha256,
          format: genOut.format,
          ...(genOut.converted ? { converted_sha256: genOut.converted.sha256 } : {}),
        },
      },
    ]);
    return row;
  });
  if (!lora) throw notPending(await findSession(ctx.db, s.user_id, s.id), now);
  await sealStaging(ctx, [s]);
  ctx.metrics.uploads.add(1, { outcome: "completed" });
  ctx.logger.info({ user_id: s.user_id, lora_id: s.lora_id, upload_id: s.id, size_bytes: size }, "upload completed");
  return { lora, ledger: await readLedger(ctx.db, ctx.cfg.quota, s.user_id) };
}

function convertedOf(b: StoredBlob): ConvertedBlob {
  return { blob_path: b.blobPath, size_bytes: Number(b.sizeBytes), sha256: b.sha256, etag: b.etag };
}
