import type { BlobClient } from "@azure/storage-blob";

export interface OpenBlob {
  /** Size of the committed blob. */
  size: number;
  /** Its bytes in order; stopping early cancels what is still being read. */
  chunks: AsyncIterable<Buffer>;
  /** Gives up before (or while) reading: closes the download. */
  cancel(): void;
}

export interface ReadOptions {
  /** 1: one sequential download; more: that many ranged reads in flight, reassembled in order. */
  parallelism: number;
  /** Size of each ranged read. */
  rangeBytes: number;
  /** Restarts of a broken download before giving up (the SDK resumes from the last byte). */
  maxRetryRequests?: number;
}

/**
 * Opens a committed blob for one pass. Memory stays bounded: the sequential
 * read holds one socket buffer, the ranged read parallelism × rangeBytes.
 * Throws the storage error (404 included) before any byte is returned.
 */
export async function openBlob(blob: BlobClient, opts: ReadOptions): Promise<OpenBlob> {
  return opts.parallelism <= 1 ? openSequential(blob, opts) : openRanged(blob, opts);
}

async function openSequential(blob: BlobClient, opts: ReadOptions): Promise<OpenBlob> {
  const abort = new AbortController();
  const res = await blob.download(0, undefined, {
    maxRetryRequests: opts.maxRetryRequests ?? 5,
    abortSignal: abort.signal,
  });
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

async function openRanged(blob: BlobClient, opts: ReadOptions): Promise<OpenBlob> {
  const props = await blob.getProperties();
  const size = props.contentLength ?? 0;
  const etag = props.etag;
  const abort = new AbortController();
  const readRange = async (offset: number): Promise<Buffer> => {
    const count = Math.min(opts.rangeBytes, size - offset);
    const buffer = Buffer.allocUnsafe(count);
    // ifMatch: a blob replaced mid-read fails instead of mixing two versions.
    await blob.downloadToBuffer(buffer, offset, count, {
      abortSignal: abort.signal,
      conditions: etag ? { ifMatch: etag } : undefined,
      maxRetryRequestsPerBlock: opts.maxRetryRequests ?? 5,
      blockSize: count,
      concurrency: 1,
    });
    return buffer;
  };
  async function* chunks(): AsyncGenerator<Buffer> {
    const inFlight: Promise<Buffer>[] = [];
    let next = 0;
    const fill = () => {
      while (inFlight.length < opts.parallelism && next < size) {
        const p = readRange(next);
        p.catch(() => {}); // observed when its turn comes
        inFlight.push(p);
        next += opts.rangeBytes;
      }
    };
    try {
      fill();
      while (inFlight.length > 0) {
        const buffer = await (inFlight.shift() as Promise<Buffer>);
        fill();
        yield buffer;
      }
    } finally {
      abort.abort();
    }
  }
  return { size, chunks: chunks(), cancel: () => abort.abort() };
}
