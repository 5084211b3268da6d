import type { BlockBlobClient } from "@azure/storage-blob";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { ErrorReason, type StoredBlobSchema } from "@emprops/contracts";
import { rpcError } from "@emprops/platform";
import { blobSource, type ConversionRefusal, convertToSafetensors } from "../conversion/convert-to-safetensors.js";
import type { AppContext } from "../context.js";
import { convertedBlob, type UserBlobRef } from "../storage/blob-paths.js";
import { bareEtag } from "../storage/staging.js";
import { isNotFound } from "../storage/storage-errors.js";

export type StoredBlobInit = MessageInitShape<typeof StoredBlobSchema>;

/** What storage holds at a final path must be what was verified: its size and the sha256 it was written with. */
export async function checkStored(
  ctx: AppContext,
  blob: BlockBlobClient,
  ref: UserBlobRef,
  expect: { sizeBytes: number; sha256: string },
): Promise<StoredBlobInit> {
  const props = await blob.getProperties();
  if (props.contentLength !== expect.sizeBytes || props.metadata?.sha256 !== expect.sha256) {
    await blob.deleteIfExists();
    throw rpcError(
      Code.Internal,
      ErrorReason.CHECKSUM_MISMATCH,
      `the blob written at ${ref.path} has ${props.contentLength} bytes and sha256 ${props.metadata?.sha256 ?? "(none)"}; expected ${expect.sizeBytes} and ${expect.sha256}`,
      { blob_path: ref.path },
    );
  }
  ctx.logger.debug({ blob_path: ref.path, etag: props.etag }, "blob stored");
  return {
    blobPath: ref.path,
    blobUrl: blob.url,
    etag: bareEtag(props.etag),
    sizeBytes: BigInt(expect.sizeBytes),
    sha256: expect.sha256,
  };
}

export type Converted = { ok: true; stored: StoredBlobInit } | { ok: false; refusal: ConversionRefusal };

/**
 * Converts the stored .pt (reads pinned to its ETag) into the .safetensors
 * beside it, created with `tag` and the source's sha256 in its metadata;
 * a conversion an earlier attempt of the same upload (same tag) made is reused.
 */
export async function storeConverted(
  ctx: AppContext,
  original: UserBlobRef,
  stored: StoredBlobInit,
  tag: { upload_id?: string },
): Promise<Converted> {
  const ref = convertedBlob(original);
  const target = ctx.storage.blob(ref);
  const sourceSha256 = stored.sha256 as string;
  const existing = await target.getProperties().catch((e: unknown) => (isNotFound(e) ? undefined : Promise.reject(e)));
  if (
    tag.upload_id &&
    existing?.metadata?.upload_id === tag.upload_id &&
    existing.metadata.source_sha256 === sourceSha256
  ) {
    const sha256 = existing.metadata.sha256 ?? "";
    return {
      ok: true,
      stored: await checkStored(ctx, target, ref, { sizeBytes: existing.contentLength ?? 0, sha256 }),
    };
  }
  const source = blobSource(ctx.storage.blob(original), Number(stored.sizeBytes), stored.etag as string);
  const outcome = await convertToSafetensors(ctx, source, target, { source_sha256: sourceSha256, ...tag });
  if (!outcome.ok) return outcome;
  return { ok: true, stored: await checkStored(ctx, target, ref, outcome) };
}

/** Removes what a commit stored at the final paths (the original and, for a .pt, its conversion). */
export async function deleteFinalBlobs(ctx: AppContext, destination: UserBlobRef): Promise<void> {
  const refs = destination.extension === "pt" ? [destination, convertedBlob(destination)] : [destination];
  await Promise.all(refs.map((ref) => ctx.storage.blob(ref).deleteIfExists()));
}
