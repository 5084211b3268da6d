import type { BlobClient } from "@azure/storage-blob";
import type { VerificationResult, VerifierOptions } from "@emprops/lora-formats";
import type { AppContext } from "../context.js";
import { openBlob } from "../storage/blob-reader.js";
import { storageError } from "../storage/storage-errors.js";
import { inSpan } from "../telemetry.js";
import {
  recordVerification,
  StorageReadError,
  tooLarge,
  verifyChunks,
  type VerificationSource,
} from "./verify-chunks.js";

export interface StoredBlobCheck extends VerifierOptions {
  /** The blob's size as its properties gave it: larger than maxSizeBytes is refused without reading. */
  sizeBytes: number;
  /** The version to read (412, a storage error, when the blob is no longer that version). */
  etag: string;
}

/**
 * Verifies one version of a committed blob in one streaming pass (format,
 * safetensors header or pickle scan, sha256, size, metadata), in a
 * `blob.verify` span, counted by source. A rejection is a result; a storage
 * failure is an RPC error.
 */
export function verifyStoredBlob(
  ctx: AppContext,
  source: VerificationSource,
  blob: BlobClient,
  path: string,
  check: StoredBlobCheck,
): Promise<VerificationResult> {
  return inSpan("blob.verify", { "blob.path": path, "blob.size_bytes": check.sizeBytes }, async (span) => {
    let result: VerificationResult;
    if (check.sizeBytes > check.maxSizeBytes) {
      result = tooLarge(check.sizeBytes, check.maxSizeBytes);
    } else {
      const opened = await openBlob(blob, ctx.cfg.verifyRead, { etag: check.etag }).catch((err: unknown) =>
        Promise.reject(storageError(err, path)),
      );
      result = await verifyChunks(opened.chunks, check).catch((err: unknown) =>
        Promise.reject(err instanceof StorageReadError ? storageError(err.cause, path) : err),
      );
    }
    span.setAttributes({ "blob.verification": result.ok ? "safe" : (result.reason ?? "rejected") });
    recordVerification(ctx, source, path, result);
    return result;
  });
}
