import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  type BlobVerification,
  CompleteLoraUploadResponseSchema,
  ErrorReason,
  type LoraService,
  reasonName,
  ValidationStatus,
} from "@emprops/contracts";
import { failedPrecondition, invalidArgument } from "@emprops/platform";
import { userOf } from "../domain/caller.js";
import { GATEWAY_TIMEOUT_MS, VERIFY_TIMEOUT_MS, userLoraBlob, viaGateway } from "../domain/blob.js";
import { writeAudit } from "../domain/audit.js";
import { formatName, fromMetadataMessage, mergeMetadata, toLora } from "../domain/lora-message.js";
import { quotaSummary, readLedger, settleReservation } from "../domain/quota.js";
import { endSession, findSession, notPending, type SessionRow } from "../domain/uploads.js";
import { parseUuid } from "../domain/validate.js";
import type { LoraGenOutData } from "../db/schema/index.js";
import type { AppContext } from "../context.js";
import { withSpan } from "../telemetry.js";

interface Rejection {
  reason: ErrorReason;
  message: string;
  metadata: Record<string, string | number>;
}

export function completeLoraUpload(ctx: AppContext): Partial<ServiceImpl<typeof LoraService>> {
  return {
    async completeLoraUpload(req, hctx) {
      const userId = userOf(hctx);
      const uploadId = parseUuid(req.uploadId, "upload_id");
      const session = await findSession(ctx.db, userId, uploadId);
      if (session.state !== "pending" || session.expires_at <= ctx.clock.now())
        throw notPending(session, ctx.clock.now());

      const declared = Number(session.declared_size_bytes);
      const blob = userLoraBlob(userId, session.lora_id, session.extension);
      const state = await viaGateway(ctx.logger, "GetUploadState", () =>
        ctx.blobGateway.getUploadState({ blob }, { timeoutMs: GATEWAY_TIMEOUT_MS }),
      );
      if (!state.committed) {
        throw failedPrecondition(
          ErrorReason.UPLOAD_INCOMPLETE,
          "The block list has not been committed yet: upload every block, then Put Block List",
          { upload_id: uploadId, staged_blocks: state.uncommittedBlocks.length },
        );
      }

      let rejection: Rejection | undefined;
      let verification: BlobVerification | undefined;
      if (Number(state.committedSizeBytes) > declared) {
        // Larger than reserved: refuse without streaming it through verification.
        rejection = tooLarge(Number(state.committedSizeBytes), declared);
      } else {
        verification = await withSpan("verify_blob", { "lora.id": session.lora_id, "lora.size_bytes": declared }, () =>
          viaGateway(ctx.logger, "VerifyBlob", () =>
            ctx.blobGateway.verifyBlob(
              {
                blob,
                maxSizeBytes: BigInt(ctx.cfg.quota.maxLoraBytes),
                expectedSha256: session.expected_sha256 ?? "",
              },
              { timeoutMs: VERIFY_TIMEOUT_MS },
            ),
          ),
        ).then((r) => r.verification);
        if (!verification) throw new Error("VerifyBlob answered without a verification");
        if (verification.status !== ValidationStatus.SAFE) {
          rejection = {
            reason:
              verification.reason === ErrorReason.UNSPECIFIED ? ErrorReason.INVALID_FILE_FORMAT : verification.reason,
            message: verification.message || "The file is not a valid LoRA",
            metadata: {
              detected_format: verification.detectedType,
              ...(verification.unsafeGlobals.length > 0
                ? { unsafe_globals: verification.unsafeGlobals.join(",") }
                : {}),
              size_bytes: Number(verification.sizeBytes),
            },
          };
        } else if (Number(verification.sizeBytes) > declared) {
          rejection = tooLarge(Number(verification.sizeBytes), declared);
        }
      }

      if (rejection) await reject(ctx, session, rejection);
      return publish(ctx, session, verification as BlobVerification);
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
  const result = await ctx.db.transaction().execute(async (trx) => {
    const done = await trx
      .updateTable("lora_upload")
      .set({ state: "completed", finished_at: now })
      .where("id", "=", s.id)
      .where("state", "=", "pending")
      .returning("id")
      .executeTakeFirst();
    if (!done) return undefined;
    await settleReservation(trx, s.user_id, Number(s.declared_size_bytes), now, size);
    const current = await trx
      .selectFrom("flat_file")
      .select("gen_out_data")
      .where("id", "=", s.lora_id)
      .executeTakeFirstOrThrow();
    const before: LoraGenOutData = current.gen_out_data ?? {};
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
    const row = await trx
      .updateTable("flat_file")
      .set({ hidden: false, gen_out_data: JSON.stringify(genOut) })
      .where("id", "=", s.lora_id)
      .returning(["id", "user_id", "name", "url", "created_at", "tags", "gen_out_data"])
      .executeTakeFirstOrThrow();
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
  if (!result) throw notPending(await findSession(ctx.db, s.user_id, s.id), now);
  ctx.metrics.uploads.add(1, { outcome: "completed" });
  ctx.logger.info({ user_id: s.user_id, lora_id: s.lora_id, upload_id: s.id, size_bytes: size }, "upload completed");
  const ledger = await readLedger(ctx.db, ctx.cfg.quota, s.user_id);
  return create(CompleteLoraUploadResponseSchema, {
    lora: toLora(result, { withRaw: true }),
    quota: quotaSummary(ledger, ctx.cfg.quota),
  });
}
