import { RestError } from "@azure/storage-blob";
import { Code, type ServiceImpl } from "@connectrpc/connect";
import { type BlobGatewayService, ErrorReason, type UploadBlobRequest } from "@emprops/contracts";
import { LoraVerifier } from "@emprops/lora-formats";
import { invalidArgument, rpcError } from "@emprops/platform";
import type { AppContext } from "../context.js";
import { userBlob, type UserBlobRef } from "../storage/blob-paths.js";
import { BlockStager } from "../storage/block-stager.js";
import { storageError } from "../storage/storage-errors.js";
import { bareEtag } from "../storage/staging.js";
import { inSpan } from "../telemetry.js";
import { deleteFinalBlobs, storeConverted } from "../uploads/final-blobs.js";
import { asRejection } from "../conversion/convert-to-safetensors.js";
import { toBlobVerification } from "../verification/blob-verification.js";
import { recordVerification } from "../verification/verify-chunks.js";
import { declaredSize, optionalSha256 } from "./request-fields.js";

/**
 * Streams a file through the gateway for callers without blob access: the
 * header first, then chunks. Blocks are staged as the bytes arrive and the
 * same bytes go through the verifier in the same pass; the block list is
 * committed only for a safe file, so a rejected file never becomes a blob.
 * The blob must not exist yet: a verified LoRA is never overwritten. A .pt
 * is then converted into the .safetensors beside it, as CommitUpload does.
 */
export function uploadBlob(ctx: AppContext): Partial<ServiceImpl<typeof BlobGatewayService>> {
  return {
    async uploadBlob(requests) {
      const messages = requests[Symbol.asyncIterator]();
      const first = await messages.next();
      if (first.done || first.value.payload.case !== "header") {
        throw invalidArgument(ErrorReason.INVALID_REQUEST, "the first message must be the header", {
          field: "header",
        });
      }
      const header = first.value.payload.value;
      const ref = userBlob(header.blob, "header.blob");
      const size = declaredSize(header.sizeBytes, ctx.cfg.maxLoraSizeBytes, "header.size_bytes");
      const expectedSha256 = optionalSha256(header.expectedSha256, "header.expected_sha256");

      return inSpan("blob.upload", { "blob.path": ref.path, "blob.size_bytes": size }, async (span) => {
        const blob = ctx.storage.blob(ref);
        // Asked now, awaited before the first block is written: a taken path fails within the first block,
        // and a file rejected before that costs no storage call at all.
        const existing = blob.exists();
        existing.catch(() => undefined); // its failure is reported where it is awaited
        const ensureNew = async () => {
          const exists = await existing.catch((err: unknown) => Promise.reject(storageError(err, ref.path)));
          if (exists) throw alreadyExists(ref);
        };

        const verifier = new LoraVerifier({
          expectedExtension: ref.extension,
          maxSizeBytes: ctx.cfg.maxLoraSizeBytes,
          expectedSizeBytes: size,
          expectedSha256,
        });
        const stager = new BlockStager(blob, {
          blockSize: ctx.cfg.blockSizeBytes,
          inFlight: ctx.cfg.uploadBlocksInFlight,
          beforeFirstBlock: ensureNew,
        });
        try {
          const received = await receive(messages, size, async (chunk) => {
            verifier.update(chunk);
            // A file already known to be rejected is never committed: stop writing it.
            if (verifier.rejection) return;
            await stager.write(chunk).catch((err: unknown) => Promise.reject(storageError(err, ref.path)));
          });
          if (received !== size) {
            throw invalidArgument(
              ErrorReason.INVALID_SIZE,
              `the stream carried ${received} bytes; the header declared ${size}`,
              { field: "header.size_bytes", size_bytes: size, received_bytes: received },
            );
          }
          const result = verifier.finish();
          recordVerification(ctx, "upload", ref.path, result);
          span.setAttributes({ "blob.verification": result.ok ? "safe" : (result.reason ?? "rejected") });
          if (!result.ok) {
            await stager.abandon();
            return { verification: toBlobVerification(result), blobUrl: "" };
          }
          await stager.commit({ ifNoneMatch: "*" }, { sha256: result.sha256 }).catch((err: unknown) => {
            // Someone committed the same path while we streamed.
            if (err instanceof RestError && (err.statusCode === 409 || err.statusCode === 412)) {
              return Promise.reject(alreadyExists(ref));
            }
            return Promise.reject(storageError(err, ref.path));
          });
          span.setAttribute("blob.block_count", stager.blockCount);
          if (ref.extension !== "pt") return { verification: toBlobVerification(result), blobUrl: blob.url };
          const props = await blob.getProperties().catch((err: unknown) => Promise.reject(storageError(err, ref.path)));
          const stored = { sizeBytes: BigInt(size), sha256: result.sha256, etag: bareEtag(props.etag) };
          const converted = await storeConverted(ctx, ref, stored, {}).catch((err: unknown) =>
            Promise.reject(storageError(err, ref.path)),
          );
          if (!converted.ok) {
            await deleteFinalBlobs(ctx, ref);
            return { verification: toBlobVerification(asRejection(result, converted.refusal)), blobUrl: "" };
          }
          return { verification: toBlobVerification(result), blobUrl: blob.url, converted: converted.stored };
        } catch (err) {
          await stager.abandon();
          throw err;
        }
      });
    },
  };
}

/** Feeds every chunk after the header to `take`, refusing more bytes than declared; returns the byte count. */
async function receive(
  messages: AsyncIterator<UploadBlobRequest>,
  declared: number,
  take: (chunk: Uint8Array) => Promise<void>,
): Promise<number> {
  let received = 0;
  for (let next = await messages.next(); !next.done; next = await messages.next()) {
    const payload = next.value.payload;
    if (payload.case !== "chunk") {
      throw invalidArgument(ErrorReason.INVALID_REQUEST, "only chunks may follow the header", { field: "chunk" });
    }
    received += payload.value.length;
    if (received > declared) {
      throw invalidArgument(ErrorReason.INVALID_SIZE, `the stream carries more than the declared ${declared} bytes`, {
        field: "header.size_bytes",
        size_bytes: declared,
      });
    }
    await take(payload.value);
  }
  return received;
}

function alreadyExists(ref: UserBlobRef) {
  return rpcError(
    Code.AlreadyExists,
    ErrorReason.UPLOAD_STATE_CONFLICT,
    `a blob already exists at ${ref.path}; delete it before uploading again`,
    { blob_path: ref.path },
  );
}
