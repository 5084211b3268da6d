import type { ServiceImpl } from "@connectrpc/connect";
import type { BlobGatewayService } from "@emprops/contracts";
import type { AppContext } from "../context.js";
import { deletePreviewBlob } from "../storage/delete-user-blob.js";
import { previewBlob } from "../storage/blob-paths.js";

/** Deletes a LoRA's preview; one already gone is success with deleted = false. */
export function deletePreview(ctx: AppContext): Partial<ServiceImpl<typeof BlobGatewayService>> {
  return {
    async deletePreview(req) {
      return { deleted: await deletePreviewBlob(ctx, previewBlob(req.blob), "rpc") };
    },
  };
}
