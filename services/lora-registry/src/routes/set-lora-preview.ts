import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { type LoraService, SetLoraPreviewResponseSchema } from "@emprops/contracts";
import { userOf } from "../domain/caller.js";
import { toLora } from "../domain/lora-message.js";
import { setPreview } from "../domain/previews.js";
import { parseLoraId } from "../domain/validate.js";
import type { AppContext } from "../context.js";

export function setLoraPreview(ctx: AppContext): Partial<ServiceImpl<typeof LoraService>> {
  return {
    async setLoraPreview(req, hctx) {
      const row = await setPreview(ctx, userOf(hctx), parseLoraId(req.loraId), req.image, "uploaded");
      return create(SetLoraPreviewResponseSchema, { lora: toLora(row) });
    },
  };
}
