import { type BlobLeaseClient, type BlockBlobClient, RestError } from "@azure/storage-blob";
import type { StagedBlobRef } from "./blob-paths.js";
import { isNotFound } from "./storage-errors.js";

/** Metadata of a sealed staging blob: an empty placeholder under the upload's lease. */
export const SEALED_METADATA = "sealed";

/**
 * The lease an upload's staging blob is held under: an infinite lease whose
 * id is the upload id, so every gateway replica (and a retried call) holds
 * the same lease, and no write without it — none of the old upload URL's
 * Put Block, Put Block List or Put Blob — is accepted (412 LeaseIdMissing).
 */
export function uploadLease(blob: BlockBlobClient, ref: StagedBlobRef): BlobLeaseClient {
  return blob.getBlobLeaseClient(ref.uploadId);
}

/**
 * Takes the upload's infinite lease on its staging blob; false when there is
 * no blob to lease (nothing uploaded, or only uncommitted blocks: Blob
 * Storage leases only committed blobs, Azurite also staged ones).
 * Re-acquiring a lease held under the same id succeeds.
 */
export async function acquireUploadLease(blob: BlockBlobClient, ref: StagedBlobRef): Promise<boolean> {
  try {
    await uploadLease(blob, ref).acquireLease(-1);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

/** Gives the lease back, so the client can go on staging blocks (the blob had no block list yet). */
export async function releaseUploadLease(blob: BlockBlobClient, ref: StagedBlobRef): Promise<void> {
  await uploadLease(blob, ref)
    .releaseLease()
    .catch((err: unknown) => (isNotFound(err) ? undefined : Promise.reject(err)));
}

/**
 * Seals the staging blob: whatever was uploaded (committed or only staged
 * blocks) is replaced by an empty blob under the upload's infinite lease.
 * Put Block List of an empty list discards every uncommitted block, and
 * with the lease held no later write can store anything there. Idempotent.
 */
export async function sealStaged(blob: BlockBlobClient, ref: StagedBlobRef): Promise<void> {
  // Nothing to lease yet: create the placeholder; a client committing at the same moment is overwritten below.
  while (!(await acquireUploadLease(blob, ref))) {
    await blob.upload(Buffer.alloc(0), 0, { conditions: { ifNoneMatch: "*" } }).catch((err: unknown) => {
      if (err instanceof RestError && (err.statusCode === 409 || err.statusCode === 412)) return;
      throw err;
    });
  }
  await blob.commitBlockList([], {
    conditions: { leaseId: ref.uploadId },
    metadata: { [SEALED_METADATA]: "true", upload_id: ref.uploadId },
  });
}

/** Deletes a staging blob, sealed or not (its lease, when held, is the upload's). Idempotent. */
export async function deleteStaged(blob: BlockBlobClient, ref: StagedBlobRef): Promise<boolean> {
  try {
    const res = await blob.deleteIfExists({ conditions: { leaseId: ref.uploadId } });
    return res.succeeded;
  } catch (err) {
    // Not leased (a blob the lease never reached): a plain delete.
    if (err instanceof RestError && err.statusCode === 412) {
      return (await blob.deleteIfExists()).succeeded;
    }
    throw err;
  }
}

/** ETags compared and recorded without their quotes (listings give them bare, properties quoted). */
export function bareEtag(etag: string | undefined): string {
  return (etag ?? "").replace(/^"|"$/g, "");
}

/** The ETag as a request condition wants it. */
export function quotedEtag(etag: string): string {
  return `"${bareEtag(etag)}"`;
}
