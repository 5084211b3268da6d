import type { ServiceImpl } from "@connectrpc/connect";
import type { BlobGatewayService } from "@emprops/contracts";
import type { VerificationResult } from "@emprops/lora-formats";
import type { AppContext } from "../context.js";
import { userBlob } from "../storage/blob-paths.js";
import { openBlob } from "../storage/blob-reader.js";
import { stagedBlocks } from "../storage/staged-blocks.js";
import { isNotFound, storageError } from "../storage/storage-errors.js";
import { inSpan } from "../telemetry.js";
import { toBlobVerification } from "../verification/blob-verification.js";
import { recordVerification, StorageReadError, tooLarge, verifyChunks } from "../verification/verify-chunks.js";
import { optionalBytes, optionalSha256 } from "./request-fields.js";

/**
 * One streaming pass over the committed blob (ranged reads in flight, in
 * byte order; see openBlob): format, strict safetensors
 * header or pickle scan, sha256, size, metadata. A rejected file is a normal
 * answer (status REJECTED with its reason); a missing blob is NOT_FOUND, or
 * with report_uncommitted the answer committed = false and the staged blocks.
 */
export function verifyBlob(ctx: AppContext): Partial<ServiceImpl<typeof BlobGatewayService>> {
  return {
    async verifyBlob(req) {
      const ref = userBlob(req.blob);
      const requestedMax = optionalBytes(req.maxSizeBytes, "max_size_bytes");
      // The caller may lower the limit, never raise it.
      const maxSizeBytes = Math.min(requestedMax ?? ctx.cfg.maxLoraSizeBytes, ctx.cfg.maxLoraSizeBytes);
      const expectedSizeBytes = optionalBytes(req.expectedSizeBytes, "expected_size_bytes");
      const expectedSha256 = optionalSha256(req.expectedSha256);

      return inSpan("blob.verify", { "blob.path": ref.path }, async (span) => {
        const blob = ctx.storage.blob(ref);
        const opened = await openBlob(blob, ctx.cfg.verifyRead).catch((err: unknown) =>
          req.reportUncommitted && isNotFound(err) ? undefined : Promise.reject(storageError(err, ref.path)),
        );
        if (!opened) {
          const uncommittedBlocks = await stagedBlocks(blob).catch((err: unknown) => {
            throw storageError(err, ref.path);
          });
          span.setAttribute("blob.verification", "uncommitted");
          return { committed: false, uncommittedBlocks };
        }
        span.setAttribute("blob.size_bytes", opened.size);
        let result: VerificationResult;
        if (opened.size > maxSizeBytes) {
          opened.cancel();
          result = tooLarge(opened.size, maxSizeBytes);
        } else {
          result = await verifyChunks(opened.chunks, {
            expectedExtension: ref.extension,
            maxSizeBytes,
            expectedSizeBytes,
            expectedSha256,
          }).catch((err: unknown) =>
            Promise.reject(err instanceof StorageReadError ? storageError(err.cause, ref.path) : err),
          );
        }
        span.setAttributes({ "blob.verification": result.ok ? "safe" : (result.reason ?? "rejected") });
        recordVerification(ctx, "verify", ref.path, result);
        return { verification: toBlobVerification(result), committed: true };
      });
    },
  };
}
