import type { AppContext } from "../context.js";
import { inSpan } from "../telemetry.js";
import { convertedBlob, type PreviewBlobRef, type UserBlobRef } from "./blob-paths.js";
import { storageError } from "./storage-errors.js";

/**
 * Deletes a user LoRA blob with its snapshots, and for a .pt the converted
 * .safetensors beside it (one LoRA, two blobs). Idempotent: true when
 * something was deleted, false when it was already gone.
 */
export function deleteUserBlob(ctx: AppContext, ref: UserBlobRef, source: "rpc" | "event"): Promise<boolean> {
  return deleteBlobs(ctx, ref, ref.extension === "pt" ? [ref, convertedBlob(ref)] : [ref], source);
}

/** Deletes a LoRA's preview image; idempotent like deleteUserBlob. */
export function deletePreviewBlob(ctx: AppContext, ref: PreviewBlobRef, source: "rpc" | "event"): Promise<boolean> {
  return deleteBlobs(ctx, ref, [ref], source);
}

async function deleteBlobs(
  ctx: AppContext,
  ref: UserBlobRef | PreviewBlobRef,
  refs: (UserBlobRef | PreviewBlobRef)[],
  source: "rpc" | "event",
): Promise<boolean> {
  return inSpan("blob.delete", { "blob.path": ref.path, "blob.delete_source": source }, async (span) => {
    try {
      const results = await Promise.all(
        refs.map((r) => ctx.storage.blob(r).deleteIfExists({ deleteSnapshots: "include" })),
      );
      const deleted = results.some((r) => r.succeeded);
      const result = deleted ? "deleted" : "absent";
      span.setAttribute("blob.delete_result", result);
      ctx.metrics.deletions.add(1, { source, result });
      ctx.logger.info({ blob_path: ref.path, source, result, blobs: refs.length }, "blob deletion");
      return deleted;
    } catch (err) {
      ctx.metrics.deletions.add(1, { source, result: "failed" });
      throw storageError(err, ref.path);
    }
  });
}
