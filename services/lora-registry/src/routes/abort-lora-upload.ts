import type { ServiceImpl } from "@connectrpc/connect";
import type { LoraService } from "@emprops/contracts";
import { userOf } from "../domain/caller.js";
import { abortUpload } from "../domain/uploads.js";
import { parseUuid } from "../domain/validate.js";
import type { AppContext } from "../context.js";

export function abortLoraUpload(ctx: AppContext): Partial<ServiceImpl<typeof LoraService>> {
  return {
    async abortLoraUpload(req, hctx) {
      await abortUpload(ctx, userOf(hctx), parseUuid(req.uploadId, "upload_id"));
      return {};
    },
  };
}
