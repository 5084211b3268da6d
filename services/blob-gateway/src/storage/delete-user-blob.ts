import type { AppContext } from "../context.js";
import { inSpan } from "../telemetry.js";
import type { PreviewBlobRef, UserBlobRef } from "./blob-paths.js";
import { storageError } from "./storage-errors.js";

/**
 * Deletes a user LoRA blob with its snapshots. Idempotent: true when
 * something was deleted, false when it was already gone.
 */
export function deleteUserBlob(ctx: AppContext, ref: UserBlobRef, source: "rpc" | "event"): Promise<boolean> {
  return deleteOne(ctx, ref, source);
}

/** Deletes a LoRA's preview image; idempotent like deleteUserBlob. */
export function deletePreviewBlob(ctx: AppContext, ref: PreviewBlobRef, source: "rpc" | "event"): Promise<boolean> {
  return deleteOne(ctx, ref, source);
}

async function deleteOne(
  ctx: AppContext,
  ref: UserBlobRef | PreviewBlobRef,
  source: "rpc" | "event",
): Promise<boolean> {
  return inSpan("blob.delete", { "blob.path": ref.path, "blob.delete_source": source }, async (span) => {
    try {
      const res = await ctx.storage.blob(ref).deleteIfExists({ deleteSnapshots: "include" });
      const result = res.succeeded ? "deleted" : "absent";
      span.setAttribute("blob.delete_result", result);
      ctx.metrics.deletions.add(1, { source, result });
      ctx.logger.info({ blob_path: ref.path, source, result }, "blob deletion");
      return res.succeeded;
    } catch (err) {
      ctx.metrics.deletions.add(1, { source, result: "failed" });
      throw storageError(err, ref.path);
    }
  });
}
