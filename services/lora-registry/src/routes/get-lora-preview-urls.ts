import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { ErrorReason, GetLoraPreviewUrlsResponseSchema, type LoraService } from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";
import { userOf } from "../domain/caller.js";
import { MAX_PREVIEW_URLS, previewUrls } from "../domain/previews.js";
import { parseLoraId } from "../domain/validate.js";
import type { AppContext } from "../context.js";

export function getLoraPreviewUrls(ctx: AppContext): Partial<ServiceImpl<typeof LoraService>> {
  return {
    async getLoraPreviewUrls(req, hctx) {
      if (req.loraIds.length > MAX_PREVIEW_URLS) {
        throw invalidArgument(ErrorReason.INVALID_REQUEST, `at most ${MAX_PREVIEW_URLS} lora_ids per call`, {
          field: "lora_ids",
          max_ids: MAX_PREVIEW_URLS,
        });
      }
      const ids = req.loraIds.map((id, i) => parseLoraId(id, `lora_ids[${i}]`));
      return create(GetLoraPreviewUrlsResponseSchema, { previews: await previewUrls(ctx, userOf(hctx), ids) });
    },
  };
}
