import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { GetLoraDownloadUrlResponseSchema, type LoraService } from "@emprops/contracts";
import { userOf } from "../domain/caller.js";
import { ownerDownload } from "../domain/downloads.js";
import { parseLoraId } from "../domain/validate.js";
import type { AppContext } from "../context.js";

export function getLoraDownloadUrl(ctx: AppContext): Partial<ServiceImpl<typeof LoraService>> {
  return {
    async getLoraDownloadUrl(req, hctx) {
      const download = await ownerDownload(ctx, userOf(hctx), parseLoraId(req.loraId));
      return create(GetLoraDownloadUrlResponseSchema, download);
    },
  };
}
