import type { ServiceImpl } from "@connectrpc/connect";
import type { BlobGatewayService } from "@emprops/contracts";
import type { AppContext } from "../context.js";
import { stagedUpload } from "../storage/blob-paths.js";
import { sealStaged } from "../storage/staging.js";
import { storageError } from "../storage/storage-errors.js";
import { inSpan } from "../telemetry.js";

/** Discards an upload's staging blob and keeps the path leased and empty, so the old URL writes nothing. */
export function sealUpload(ctx: AppContext): Partial<ServiceImpl<typeof BlobGatewayService>> {
  return {
    async sealUpload(req) {
      const staged = stagedUpload(req.upload);
      await inSpan("blob.seal_upload", { "blob.path": staged.path }, () =>
        sealStaged(ctx.storage.blob(staged), staged).catch((err: unknown) =>
          Promise.reject(storageError(err, staged.path)),
        ),
      );
      ctx.logger.debug({ blob_path: staged.path }, "upload sealed");
      return {};
    },
  };
}
