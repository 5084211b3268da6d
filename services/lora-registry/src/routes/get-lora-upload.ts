import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { GetLoraUploadResponseSchema, type LoraService } from "@emprops/contracts";
import { userOf } from "../domain/caller.js";
import { GATEWAY_TIMEOUT_MS, userLoraBlob, viaGateway } from "../domain/blob.js";
import { effectiveState, findSession, toUploadSession } from "../domain/uploads.js";
import { parseUuid } from "../domain/validate.js";
import type { AppContext } from "../context.js";
import { withSpan } from "../telemetry.js";
import { uploadUrlTtl } from "./create-lora-upload.js";

export function getLoraUpload(ctx: AppContext): Partial<ServiceImpl<typeof LoraService>> {
  return {
    async getLoraUpload(req, hctx) {
      const userId = userOf(hctx);
      const uploadId = parseUuid(req.uploadId, "upload_id");
      const session = await findSession(ctx.db, userId, uploadId);
      const now = ctx.clock.now();
      const upload = toUploadSession(session, now);
      if (effectiveState(session, now) !== "pending") {
        return create(GetLoraUploadResponseSchema, {
          upload,
          committed: session.state === "completed",
          committedSizeBytes: session.state === "completed" ? BigInt(session.declared_size_bytes) : 0n,
        });
      }
      // Pending: what was staged (a write-only URL cannot read it) and a fresh URL to go on with.
      const blob = userLoraBlob(userId, session.lora_id, session.extension);
      const [state, signed] = await withSpan("resume_upload", { "lora.upload_id": uploadId }, () =>
        Promise.all([
          viaGateway(ctx.logger, "GetUploadState", () =>
            ctx.blobGateway.getUploadState({ blob }, { timeoutMs: GATEWAY_TIMEOUT_MS }),
          ),
          viaGateway(ctx.logger, "CreateUploadUrl", () =>
            ctx.blobGateway.createUploadUrl(
              {
                blob,
                sizeBytes: BigInt(session.declared_size_bytes),
                ttlSeconds: uploadUrlTtl(ctx, session.expires_at),
              },
              { timeoutMs: GATEWAY_TIMEOUT_MS },
            ),
          ),
        ]),
      );
      return create(GetLoraUploadResponseSchema, {
        upload,
        stagedBlocks: state.uncommittedBlocks.map((b) => ({ blockId: b.blockId, sizeBytes: b.sizeBytes })),
        committed: state.committed,
        committedSizeBytes: state.committedSizeBytes,
        uploadUrl: signed.uploadUrl,
        uploadUrlExpireTime: signed.expireTime,
        blockSizeBytes: signed.blockSizeBytes,
      });
    },
  };
}
