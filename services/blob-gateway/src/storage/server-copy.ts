import type { BlockBlobClient } from "@azure/storage-blob";
import { quotedEtag } from "./staging.js";

/** Copy Blob From URL (synchronous) takes sources up to 256 MiB on Blob Storage; larger ones are copied asynchronously. */
export const SYNC_COPY_MAX_BYTES = 256 * 1024 * 1024;

export interface ServerCopy {
  /** A read-signed URL of the source (same account). */
  sourceUrl: string;
  /** The source must still have this ETag: a source changed since it was verified is not copied. */
  sourceEtag: string;
  sourceSize: number;
  /** Metadata the destination is created with (so its ETag is final once the copy completes). */
  metadata: Record<string, string>;
  /** Give up waiting for an asynchronous copy after this long. */
  timeoutMs: number;
}

/**
 * Copies a blob within the account, server side: no byte passes through
 * the gateway. The destination must not exist yet (If-None-Match: *); the
 * source must still have the ETag given (412 ConditionNotMet otherwise).
 * Up to 256 MiB with Copy Blob From URL, larger with Copy Blob, polled until
 * it completes (fast within one account).
 */
export async function copyWithinAccount(destination: BlockBlobClient, copy: ServerCopy): Promise<void> {
  const options = {
    sourceConditions: { ifMatch: quotedEtag(copy.sourceEtag) },
    conditions: { ifNoneMatch: "*" },
    metadata: copy.metadata,
  };
  if (copy.sourceSize <= SYNC_COPY_MAX_BYTES) {
    const res = await destination.syncCopyFromURL(copy.sourceUrl, options);
    if (res.copyStatus !== "success")
      throw new Error(`Copy Blob From URL ended ${res.copyStatus ?? "without a status"}`);
    return;
  }
  const abort = AbortSignal.timeout(copy.timeoutMs);
  const poller = await destination.beginCopyFromURL(copy.sourceUrl, {
    ...options,
    intervalInMs: 500,
    abortSignal: abort,
  });
  const done = await poller.pollUntilDone();
  if (done.copyStatus !== "success") throw new Error(`Copy Blob ended ${done.copyStatus ?? "without a status"}`);
}
