import type { PlannedBlock } from "@emprops/contracts";
import pRetry from "p-retry";
import { type BlobPut, type PutBody, putBlockRequest, type PutTransport } from "./blob-put.js";
import { BlobRequestError } from "./blob-request-error.js";
import type { UploadTarget } from "./upload-session.js";

/** The bytes to upload, read one block at a time. A Blob (a browser File) is one as it is. */
export interface UploadSource {
  readonly size: number;
  /** Bytes [start, end): a Blob slice, or bytes read from disk. */
  slice(start: number, end: number): PutBody | Promise<PutBody>;
}

export interface UploadProgress {
  /** Bytes of the file stored so far: staged blocks, plus what the transport reports of blocks on the way. */
  uploadedBytes: number;
  totalBytes: number;
  blocksDone: number;
  blocksTotal: number;
}

export interface RetryPolicy {
  /** Retries per request after the first attempt. */
  retries: number;
  /** First retry delay in ms; doubles after each, with jitter. */
  retryDelayMs: number;
}

/**
 * One storage request with retries (exponential backoff with jitter, by
 * p-retry). A 403 gets one fresh signed URL, then the request is tried again;
 * other 4xx answers are final, as is an abort.
 */
export async function withRetries(
  send: () => Promise<void>,
  refreshUrl: () => Promise<void>,
  policy: RetryPolicy,
  signal: AbortSignal,
): Promise<void> {
  let refreshedOnAttempt = 0;
  try {
    await pRetry(send, {
      retries: policy.retries,
      minTimeout: policy.retryDelayMs,
      factor: 2,
      randomize: true,
      signal,
      onFailedAttempt: async ({ error, attemptNumber }) => {
        if (error instanceof BlobRequestError && error.urlRefused && refreshedOnAttempt === 0) {
          refreshedOnAttempt = attemptNumber;
          await refreshUrl();
        }
      },
      shouldRetry: ({ error, attemptNumber }) =>
        error instanceof BlobRequestError &&
        (error.transient || (error.urlRefused && refreshedOnAttempt === attemptNumber)),
    });
  } catch (err) {
    // The abort itself, not p-retry's wrapping of it (to p-retry a DOMException of another realm is no Error).
    if (signal.aborted) throw signal.reason;
    throw err;
  }
}

export interface SendBlocksOptions {
  target: UploadTarget;
  source: UploadSource;
  plan: PlannedBlock[];
  /** The blocks not yet staged. */
  todo: PlannedBlock[];
  blocksInFlight: number;
  put: PutTransport;
  policy: RetryPolicy;
  refreshUrl: () => Promise<void>;
  signal: AbortSignal;
  onProgress?: (progress: UploadProgress) => void;
}

/**
 * Put Block of every missing block, a few in flight, reporting progress as
 * bytes and blocks land. The first block to give up stops the others from
 * starting new blocks; those in flight finish, so what they stored counts on
 * resume. Reads one block at a time, never the whole file.
 */
export async function sendBlocks(opts: SendBlocksOptions): Promise<void> {
  const { target, source, plan, todo, signal } = opts;
  let stored = source.size - todo.reduce((n, b) => n + b.size, 0);
  let blocksDone = plan.length - todo.length;
  const onTheWay = new Map<number, number>();
  const report = () => {
    let sending = 0;
    for (const n of onTheWay.values()) sending += n;
    opts.onProgress?.({
      uploadedBytes: stored + sending,
      totalBytes: source.size,
      blocksDone,
      blocksTotal: plan.length,
    });
  };
  report();
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && !signal.aborted && next < todo.length) {
      const block = todo[next++]!;
      const body = await source.slice(block.offset, block.offset + block.size);
      await withRetries(
        () => {
          onTheWay.set(block.index, 0);
          const put: BlobPut = {
            ...putBlockRequest(target.uploadUrl, block, body),
            signal,
            onProgress: (loaded) => {
              onTheWay.set(block.index, loaded);
              report();
            },
          };
          return opts.put(put);
        },
        opts.refreshUrl,
        opts.policy,
        signal,
      );
      onTheWay.delete(block.index);
      stored += block.size;
      blocksDone++;
      report();
    }
  };
  const outcomes = await Promise.allSettled(
    Array.from({ length: Math.min(opts.blocksInFlight, todo.length) }, () =>
      worker().catch((err: unknown) => {
        failed = true;
        throw err;
      }),
    ),
  );
  const rejected = outcomes.find((o): o is PromiseRejectedResult => o.status === "rejected");
  if (rejected) throw rejected.reason;
}
