import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { DeleteLoraPreviewResponseSchema, type LoraService } from "@emprops/contracts";
import { userOf } from "../domain/caller.js";
import { toLora } from "../domain/lora-message.js";
import { removePreview } from "../domain/previews.js";
import { parseLoraId } from "../domain/validate.js";
import type { AppContext } from "../context.js";

export function deleteLoraPreview(ctx: AppContext): Partial<ServiceImpl<typeof LoraService>> {
  return {
    async deleteLoraPreview(req, hctx) {
      const row = await removePreview(ctx, userOf(hctx), parseLoraId(req.loraId));
      return create(DeleteLoraPreviewResponseSchema, { lora: toLora(row) });
    },
  };
}
