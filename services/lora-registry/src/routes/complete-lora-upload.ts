import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { CompleteLoraUploadResponseSchema, type LoraService } from "@emprops/contracts";
import { userOf } from "../domain/caller.js";
import { completeUpload } from "../domain/complete-upload.js";
import { toLora } from "../domain/lora-message.js";
import { adoptFileThumbnail } from "../domain/previews.js";
import { quotaSummary } from "../domain/quota.js";
import { parseUuid } from "../domain/validate.js";
import type { AppContext } from "../context.js";

export function completeLoraUpload(ctx: AppContext): Partial<ServiceImpl<typeof LoraService>> {
  return {
    async completeLoraUpload(req, hctx) {
      const userId = userOf(hctx);
      const { lora, ledger } = await completeUpload(ctx, userId, parseUuid(req.uploadId, "upload_id"));
      // A file with its own thumbnail gets it as its preview.
      const published = await adoptFileThumbnail(ctx, userId, lora);
      return create(CompleteLoraUploadResponseSchema, {
        lora: toLora(published, { withRaw: true }),
        quota: quotaSummary(ledger, ctx.cfg.quota),
      });
    },
  };
}
