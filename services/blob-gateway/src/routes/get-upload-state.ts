import type { ServiceImpl } from "@connectrpc/connect";
import type { BlobGatewayService } from "@emprops/contracts";
import type { AppContext } from "../context.js";
import { stagedUpload } from "../storage/blob-paths.js";
import { stagedBlocks } from "../storage/staged-blocks.js";
import { isNotFound, storageError } from "../storage/storage-errors.js";
import { inSpan } from "../telemetry.js";

/**
 * What a resumable upload has left in its staging blob: the staged
 * (uncommitted) blocks, and whether a block list was committed. A blob nobody has written
 * to yet is an empty state, not an error.
 */
export function getUploadState(ctx: AppContext): Partial<ServiceImpl<typeof BlobGatewayService>> {
  return {
    async getUploadState(req) {
      const ref = stagedUpload(req.upload);
      const blob = ctx.storage.blob(ref);
      return inSpan("blob.upload_state", { "blob.path": ref.path }, async () => {
        // A blob with only staged blocks does not exist yet for Get Properties,
        // but Get Block List answers for it.
        const [props, uncommittedBlocks] = await Promise.all([
          blob.getProperties().catch((err: unknown) => (isNotFound(err) ? undefined : Promise.reject(err))),
          stagedBlocks(blob),
        ]).catch((err: unknown) => {
          throw storageError(err, ref.path);
        });
        return {
          committed: props !== undefined,
          committedSizeBytes: BigInt(props?.contentLength ?? 0),
          uncommittedBlocks,
        };
      });
    },
  };
}
