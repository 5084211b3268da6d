import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import type { BlobGatewayService } from "@emprops/contracts";
import type { AppContext } from "../context.js";
import { stagedUpload } from "../storage/blob-paths.js";
import { recommendedBlockSize } from "../storage/block-size.js";
import { inSpan } from "../telemetry.js";
import { refuseWrongHead } from "../uploads/upload-head.js";
import { declaredSize, ttlSeconds } from "./request-fields.js";

/**
 * A create+write URL for exactly the upload's staging blob,
 * staging/{user_id}/{upload_id}.{ext}: it can Put Block and Put Block List
 * on that blob and nothing else (no read, no list, no delete, no other
 * path). No URL is ever signed for writing a final path under users/.
 * Given the file's first bytes, a file they show to be wrong gets no URL.
 */
export function createUploadUrl(ctx: AppContext): Partial<ServiceImpl<typeof BlobGatewayService>> {
  return {
    async createUploadUrl(req) {
      const ref = stagedUpload(req.upload);
      const size = declaredSize(req.sizeBytes, ctx.cfg.maxLoraSizeBytes);
      const ttl = ttlSeconds(req.ttlSeconds, { ttl: ctx.cfg.uploadUrlTtlSeconds, max: ctx.cfg.uploadUrlMaxTtlSeconds });
      const head = refuseWrongHead(req.head, { extension: ref.extension, sizeBytes: size });
      const attributes = { "blob.path": ref.path, "blob.ttl_seconds": ttl, "upload.head": head?.outcome ?? "none" };
      return inSpan("blob.sign_upload_url", attributes, async () => {
        const signed = await ctx.storage.signedUrl(ref, "create-write", ttl);
        ctx.metrics.signedUrls.add(1, { access: "create-write", signer: ctx.storage.signer.kind });
        return {
          uploadUrl: signed.url,
          blobPath: ref.path,
          expireTime: timestampFromDate(signed.expiresOn),
          blockSizeBytes: BigInt(recommendedBlockSize(size, ctx.cfg.blockSizeBytes)),
        };
      });
    },
  };
}
