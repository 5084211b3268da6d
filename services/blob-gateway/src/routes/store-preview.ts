import type { ServiceImpl } from "@connectrpc/connect";
import type { BlobGatewayService } from "@emprops/contracts";
import type { AppContext } from "../context.js";
import { checkPreviewImage } from "../preview/preview-image.js";
import { previewBlob } from "../storage/blob-paths.js";
import { storageError } from "../storage/storage-errors.js";
import { inSpan } from "../telemetry.js";

/** A preview image checked, re-encoded and stored next to its LoRA (replacing an earlier one). */
export function storePreview(ctx: AppContext): Partial<ServiceImpl<typeof BlobGatewayService>> {
  return {
    async storePreview(req) {
      const ref = previewBlob(req.blob);
      return inSpan("blob.store_preview", { "blob.path": ref.path, "image.size_bytes": req.image.length }, async () => {
        const checked = await checkPreviewImage(req.image);
        try {
          await ctx.storage.blob(ref).uploadData(checked.webp, {
            blobHTTPHeaders: { blobContentType: "image/webp", blobCacheControl: "private, max-age=3600" },
          });
        } catch (err) {
          throw storageError(err, ref.path);
        }
        ctx.logger.info(
          { blob_path: ref.path, source_format: checked.sourceFormat, size_bytes: checked.webp.length },
          "preview stored",
        );
        return {
          width: checked.width,
          height: checked.height,
          sizeBytes: BigInt(checked.webp.length),
          sha256: checked.sha256,
          sourceFormat: checked.sourceFormat,
          sourceWidth: checked.sourceWidth,
          sourceHeight: checked.sourceHeight,
          blobPath: ref.path,
        };
      });
    },
  };
}
