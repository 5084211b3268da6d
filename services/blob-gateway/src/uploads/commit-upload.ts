import { type BlockBlobClient, RestError } from "@azure/storage-blob";
import { Code } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { type CommitUploadResponseSchema, ErrorReason } from "@emprops/contracts";
import { failedPrecondition, rpcError } from "@emprops/platform";
import { asRejection } from "../conversion/convert-to-safetensors.js";
import type { AppContext } from "../context.js";
import type { StagedBlobRef, UserBlobRef } from "../storage/blob-paths.js";
import { copyWithinAccount, SYNC_COPY_MAX_BYTES } from "../storage/server-copy.js";
import { stagedBlocks } from "../storage/staged-blocks.js";
import { acquireUploadLease, bareEtag, releaseUploadLease, SEALED_METADATA } from "../storage/staging.js";
import { isNotFound, storageError } from "../storage/storage-errors.js";
import { inSpan } from "../telemetry.js";
import { toBlobVerification } from "../verification/blob-verification.js";
import { verifyStoredBlob } from "../verification/verify-stored.js";
import { checkStored, deleteFinalBlobs, type StoredBlobInit, storeConverted } from "./final-blobs.js";

type CommitAnswer = MessageInitShape<typeof CommitUploadResponseSchema>;

/** A read URL's lifetime for a server-side copy's source: long enough for an asynchronous copy of 2 GiB. */
const COPY_SOURCE_TTL_SECONDS = 3600;
const ASYNC_COPY_TIMEOUT_MS = 30 * 60_000;

export interface CommitRequest {
  staged: StagedBlobRef;
  destination: UserBlobRef;
  maxSizeBytes: number;
  expectedSha256?: string;
}

/**
 * Completes an upload. The staging blob is taken under the upload's
 * infinite lease first, so from the moment it is verified no write with the
 * upload URL can change it; then verified; then copied server side to its
 * final path on the condition that its ETag is still the verified one (a
 * change that got past the lease fails the copy); the copy's size and
 * sha256 metadata are checked. A .pt is then converted from the stored
 * original into the .safetensors beside it. A file that cannot be converted
 * is REJECTED and its final blobs are deleted. Retrying after a lost answer
 * finds its own final blobs (same upload id and sha256) and reuses them.
 */
export function commitUpload(ctx: AppContext, req: CommitRequest): Promise<CommitAnswer> {
  const { staged, destination } = req;
  return inSpan(
    "blob.commit_upload",
    { "blob.path": staged.path, "blob.destination": destination.path },
    async (span) => {
      const stagingBlob = ctx.storage.blob(staged);
      const answer = await (async (): Promise<CommitAnswer> => {
        const leased = await acquireUploadLease(stagingBlob, staged);
        const props = leased
          ? await stagingBlob
              .getProperties()
              .catch((err: unknown) => (isNotFound(err) ? undefined : Promise.reject(err)))
          : undefined;
        if (!props) {
          // Blocks only, no block list yet: the client must be able to go on (Azurite leases such blobs).
          if (leased) await releaseUploadLease(stagingBlob, staged);
          ctx.metrics.commits.add(1, { outcome: "uncommitted" });
          return { committed: false, uncommittedBlocks: await stagedBlocks(stagingBlob) };
        }
        if (props.metadata?.[SEALED_METADATA] === "true") {
          throw failedPrecondition(ErrorReason.UPLOAD_STATE_CONFLICT, "The upload has already ended", {
            blob_path: staged.path,
          });
        }
        const etag = bareEtag(props.etag);
        const sizeBytes = props.contentLength ?? 0;
        span.setAttributes({ "blob.size_bytes": sizeBytes, "blob.etag": etag });
        const result = await verifyStoredBlob(ctx, "commit", stagingBlob, staged.path, {
          sizeBytes,
          etag,
          expectedExtension: staged.extension,
          maxSizeBytes: req.maxSizeBytes,
          expectedSha256: req.expectedSha256,
        });
        if (!result.ok) {
          ctx.metrics.commits.add(1, { outcome: "rejected" });
          return { committed: true, verification: toBlobVerification(result) };
        }
        const stored = await storeVerified(ctx, stagingBlob, {
          staged,
          destination,
          etag,
          sizeBytes,
          sha256: result.sha256,
        });
        if (destination.extension !== "pt") {
          ctx.metrics.commits.add(1, { outcome: "stored" });
          return { committed: true, verification: toBlobVerification(result), stored, verifiedEtag: etag };
        }
        const converted = await storeConverted(ctx, destination, stored, { upload_id: staged.uploadId });
        if (!converted.ok) {
          await deleteFinalBlobs(ctx, destination);
          ctx.metrics.commits.add(1, { outcome: "rejected" });
          return { committed: true, verification: toBlobVerification(asRejection(result, converted.refusal)) };
        }
        ctx.metrics.commits.add(1, { outcome: "stored" });
        return {
          committed: true,
          verification: toBlobVerification(result),
          stored,
          verifiedEtag: etag,
          converted: converted.stored,
        };
      })().catch((err: unknown) => {
        ctx.metrics.commits.add(1, { outcome: "failed" });
        throw storageError(err, staged.path);
      });
      span.setAttribute("blob.commit", answer.committed ? (answer.stored ? "stored" : "rejected") : "uncommitted");
      return answer;
    },
  );
}

interface Verified {
  staged: StagedBlobRef;
  destination: UserBlobRef;
  /** ETag of the staging blob whose bytes were verified. */
  etag: string;
  sizeBytes: number;
  sha256: string;
}

/**
 * Copies the verified staging blob to its final path (create-only, source
 * pinned to the verified ETag, metadata: sha256, verified ETag, upload id)
 * and checks what storage now holds there.
 */
async function storeVerified(ctx: AppContext, stagingBlob: BlockBlobClient, v: Verified): Promise<StoredBlobInit> {
  const target = ctx.storage.blob(v.destination);
  const metadata = { sha256: v.sha256, verified_etag: v.etag, upload_id: v.staged.uploadId };
  await inSpan("blob.copy", { "blob.path": v.destination.path, "blob.size_bytes": v.sizeBytes }, async () => {
    const source = await ctx.storage.signedUrl(v.staged, "read", COPY_SOURCE_TTL_SECONDS);
    try {
      await copyWithinAccount(target, {
        sourceUrl: source.url,
        sourceEtag: v.etag,
        sourceSize: v.sizeBytes,
        metadata,
        timeoutMs: ASYNC_COPY_TIMEOUT_MS,
      });
      ctx.metrics.serverCopies.add(1, { mode: v.sizeBytes <= SYNC_COPY_MAX_BYTES ? "sync" : "async" });
    } catch (err) {
      if (!(err instanceof RestError && (err.statusCode === 409 || err.statusCode === 412))) throw err;
      // The destination exists (a retried completion) or the source is no longer the verified version.
      const existing = await target
        .getProperties()
        .catch((e: unknown) => (isNotFound(e) ? undefined : Promise.reject(e)));
      if (!existing) throw changedSinceVerified(v.staged);
      if (existing.metadata?.upload_id !== v.staged.uploadId || existing.metadata?.sha256 !== v.sha256) {
        throw rpcError(
          Code.AlreadyExists,
          ErrorReason.UPLOAD_STATE_CONFLICT,
          `a blob already exists at ${v.destination.path}`,
          {
            blob_path: v.destination.path,
          },
        );
      }
    }
  });
  return checkStored(ctx, target, v.destination, { sizeBytes: v.sizeBytes, sha256: v.sha256 });
}

function changedSinceVerified(staged: StagedBlobRef) {
  return rpcError(
    Code.Aborted,
    ErrorReason.UPLOAD_STATE_CONFLICT,
    "The uploaded blob changed while the upload was being completed; nothing was stored",
    { blob_path: staged.path },
  );
}
