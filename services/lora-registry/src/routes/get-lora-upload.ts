import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { GetLoraUploadResponseSchema, type LoraService } from "@emprops/contracts";
import { userOf } from "../domain/caller.js";
import { toUploadSession } from "../domain/upload-session.js";
import { uploadProgress } from "../domain/uploads.js";
import { parseUuid } from "../domain/validate.js";
import type { AppContext } from "../context.js";

export function getLoraUpload(ctx: AppContext): Partial<ServiceImpl<typeof LoraService>> {
  return {
    async getLoraUpload(req, hctx) {
      const { session, now, resume } = await uploadProgress(ctx, userOf(hctx), parseUuid(req.uploadId, "upload_id"));
      const upload = toUploadSession(session, now);
      if (!resume) {
        const completed = session.state === "completed";
        return create(GetLoraUploadResponseSchema, {
          upload,
          committed: completed,
          committedSizeBytes: completed ? BigInt(session.declared_size_bytes) : 0n,
        });
      }
      const { state, signed } = resume;
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
