import type { BlobClient } from "@azure/storage-blob";

export interface OpenBlob {
  /** Size of the committed blob. */
  size: number;
  /** Its bytes in order; stopping early closes the download. */
  chunks: AsyncIterable<Buffer>;
  /** Gives up before (or while) reading: closes the download. */
  cancel(): void;
}

/**
 * Opens a committed blob for one sequential pass. Memory stays at one socket
 * buffer; a broken connection is resumed from the last byte received (up to
 * maxRetryRequests times), pinned to the blob's ETag so a blob replaced
 * mid-read fails instead of mixing two versions. Throws the storage error
 * (404 included) before any byte is returned.
 *
 * Parallel ranged reads were measured against this (bench/verify-throughput.ts)
 * and were slower, so there is one stream.
 */
export async function openBlob(blob: BlobClient, maxRetryRequests = 5): Promise<OpenBlob> {
  const abort = new AbortController();
  const res = await blob.download(0, undefined, { maxRetryRequests, abortSignal: abort.signal });
  const body = res.readableStreamBody;
  if (!body) throw new Error("blob download returned no body");
  async function* chunks(): AsyncGenerator<Buffer> {
    try {
      for await (const chunk of body as AsyncIterable<Buffer | string>) {
        yield typeof chunk === "string" ? Buffer.from(chunk) : chunk;
      }
    } finally {
      abort.abort();
    }
  }
  return {
    size: res.contentLength ?? 0,
    chunks: chunks(),
    cancel: () => {
      abort.abort();
      (body as NodeJS.ReadableStream & { destroy?(): void }).destroy?.();
    },
  };
}
