import { RestError } from "@azure/storage-blob";
import type { ServiceImpl } from "@connectrpc/connect";
import { type BlobGatewayService, ErrorReason } from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";
import type { AppContext } from "../context.js";
import { parseUserContainerPath } from "../storage/blob-paths.js";
import { quotedEtag } from "../storage/staging.js";
import { storageError } from "../storage/storage-errors.js";
import { inSpan } from "../telemetry.js";

/**
 * Deletes exactly the listed blob, on the condition that its ETag is still
 * the listed one (If-Match): a blob rewritten since it was listed — a new
 * upload's copy, a new preview — stays. A staging blob is deleted under its
 * upload's lease (the lease id is the upload id), or plainly when none is held.
 */
export function deleteListedBlob(ctx: AppContext): Partial<ServiceImpl<typeof BlobGatewayService>> {
  return {
    async deleteListedBlob(req) {
      const ref = parseUserContainerPath(req.blobPath);
      if (!ref) {
        throw invalidArgument(
          ErrorReason.INVALID_REQUEST,
          "blob_path must be a LoRA, converted copy, preview or staging blob path as ListBlobs lists it",
          { field: "blob_path" },
        );
      }
      if (!req.etag) throw invalidArgument(ErrorReason.INVALID_REQUEST, "etag is required", { field: "etag" });
      return inSpan("blob.delete_listed", { "blob.path": ref.path }, async (span) => {
        const blob = ctx.storage.blob(ref);
        const ifMatch = quotedEtag(req.etag);
        let result: "deleted" | "absent" | "changed";
        try {
          const leaseId = ref.kind === "staged" ? ref.uploadId : undefined;
          result = await deleteIfUnchanged(() =>
            blob.deleteIfExists({ deleteSnapshots: "include", conditions: { ifMatch, leaseId } }),
          ).catch(async (err: unknown) => {
            // The upload's lease is not the one held (none is): a plain conditional delete.
            if (leaseId && isLeaseMismatch(err)) {
              return deleteIfUnchanged(() =>
                blob.deleteIfExists({ deleteSnapshots: "include", conditions: { ifMatch } }),
              );
            }
            throw err;
          });
        } catch (err) {
          ctx.metrics.deletions.add(1, { source: "sweep", result: "failed" });
          throw storageError(err, ref.path);
        }
        span.setAttribute("blob.delete_result", result);
        ctx.metrics.deletions.add(1, { source: "sweep", result });
        ctx.logger.info({ blob_path: ref.path, source: "sweep", result }, "blob deletion");
        return { deleted: result === "deleted" };
      });
    },
  };
}

async function deleteIfUnchanged(
  del: () => Promise<{ succeeded: boolean }>,
): Promise<"deleted" | "absent" | "changed"> {
  try {
    return (await del()).succeeded ? "deleted" : "absent";
  } catch (err) {
    if (err instanceof RestError && err.statusCode === 412 && err.code === "ConditionNotMet") return "changed";
    throw err;
  }
}

/** 412 because of the lease: none held (LeaseNotPresentWithBlobOperation) or another id. */
function isLeaseMismatch(err: unknown): boolean {
  return err instanceof RestError && err.statusCode === 412 && String(err.code ?? "").startsWith("Lease");
}
