import type { ServiceImpl } from "@connectrpc/connect";
import { type BlobGatewayService, ErrorReason } from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";
import type { AppContext } from "../context.js";
import { stagedUpload, userBlob } from "../storage/blob-paths.js";
import { commitUpload as commit } from "../uploads/commit-upload.js";
import { optionalBytes, optionalSha256 } from "./request-fields.js";

/** Verifies an upload's staging blob under its lease and stores it at its final path (converted too, for a .pt). */
export function commitUpload(ctx: AppContext): Partial<ServiceImpl<typeof BlobGatewayService>> {
  return {
    async commitUpload(req) {
      const staged = stagedUpload(req.upload);
      const destination = userBlob(req.destination, "destination");
      if (destination.userId !== staged.userId || destination.extension !== staged.extension) {
        throw invalidArgument(ErrorReason.INVALID_REQUEST, "destination must have the upload's user and extension", {
          field: "destination",
        });
      }
      const requestedMax = optionalBytes(req.maxSizeBytes, "max_size_bytes");
      return commit(ctx, {
        staged,
        destination,
        // The caller may lower the limit, never raise it.
        maxSizeBytes: Math.min(requestedMax ?? ctx.cfg.maxLoraSizeBytes, ctx.cfg.maxLoraSizeBytes),
        expectedSha256: optionalSha256(req.expectedSha256),
      });
    },
  };
}
