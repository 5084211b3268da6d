import type { Client } from "@connectrpc/connect";
import { type Lora, type LoraService, planBlocks, type QuotaSummary, remainingBlocks } from "@emprops/contracts";
import { fetchPut, putBlockListRequest, type PutTransport } from "./blob-put.js";
import { checkFileHead } from "./head-check.js";
import { type RetryPolicy, sendBlocks, type UploadProgress, type UploadSource, withRetries } from "./send-blocks.js";
import { inTrace, newTraceId } from "./trace-context.js";
import { createSession, type NewUpload, pickUpSession, refreshUploadUrl, type UploadTarget } from "./upload-session.js";

export interface UploadSession {
  uploadId: string;
  loraId: string;
  /** Picked up from an earlier attempt rather than created now. */
  resumed: boolean;
  /** The W3C trace id every registry call of this upload carries (`traceparent`). */
  traceId: string;
}

export interface ResumeInfo {
  uploadId: string;
  stagedBlocks: number;
  stagedBytes: number;
  blocksTotal: number;
}

export interface UploadLoraOptions {
  client: Client<typeof LoraService>;
  /**
   * The file. Read only block by block (`slice`), so the same source can
   * serve a look at the file's first bytes before the upload starts.
   */
  source: UploadSource;
  /** CreateLoraUpload's fields when a new session is needed (name, tags, metadata, upload source). */
  create: NewUpload;
  /** A session started earlier for this file: resumed when still pending, its LoRA returned when completed. */
  resumeUploadId?: string;
  /** Put Block requests in flight (default 4). */
  blocksInFlight?: number;
  /** Retries per storage request after the first attempt (default 4). */
  retries?: number;
  /** First retry delay in ms, doubling after each (default 500). */
  retryDelayMs?: number;
  /** Stops sending: requests in flight are aborted and the upload rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * Sends each PUT (default: fetch). Every storage request goes through it,
   * so a caller can report byte-level progress (XMLHttpRequest) or add headers.
   */
  put?: PutTransport;
  /** The session is known: created, or an earlier one picked up. */
  onSession?: (session: UploadSession) => void;
  /** An earlier session's blocks are kept; only the rest is sent. */
  onResume?: (info: ResumeInfo) => void;
  onProgress?: (progress: UploadProgress) => void;
  /** The blocks are committed; CompleteLoraUpload (the registry's verification) is next. */
  onVerify?: () => void;
}

export interface UploadLoraResult {
  lora: Lora;
  quota?: QuotaSummary;
  uploadId: string;
  /** The session had blocks (or the commit) from an earlier attempt. */
  resumed: boolean;
  /** The session was completed by an earlier attempt: nothing was sent. */
  alreadyCompleted: boolean;
  /** The trace of this upload's registry calls. */
  traceId: string;
}

/**
 * Uploads one LoRA file: a new session (or the pending one given), the
 * missing blocks straight to the signed URL (Put Block), Put Block List, then
 * CompleteLoraUpload, which verifies the file and publishes it. After a
 * failure a call with `resumeUploadId` sends only what storage does not hold
 * yet: the registry reports the staged blocks, since a write-only URL cannot
 * read them. Before any of that, the file's first bytes are judged with the
 * verifier's rules: a file they show to be wrong is refused here
 * (HeadRefusedError) and nothing is sent; otherwise they go with
 * CreateLoraUpload, so the registry refuses a wrong file before any block.
 */
export async function uploadLora(opts: UploadLoraOptions): Promise<UploadLoraResult> {
  const { source } = opts;
  // One trace for the whole upload: every registry call carries its traceparent.
  const traceId = newTraceId();
  const client = inTrace(opts.client, traceId);
  const size = source.size;
  const signal = opts.signal ?? new AbortController().signal;
  const policy: RetryPolicy = { retries: opts.retries ?? 4, retryDelayMs: opts.retryDelayMs ?? 500 };
  const put = opts.put ?? fetchPut;
  const head = await checkFileHead(source, opts.create.name ?? "");

  let target: UploadTarget | undefined;
  if (opts.resumeUploadId) {
    const earlier = await pickUpSession(client, opts.resumeUploadId, size);
    if (earlier?.kind === "completed") {
      opts.onSession?.({ uploadId: opts.resumeUploadId, loraId: earlier.loraId, resumed: true, traceId });
      const { lora } = await client.getLora({ loraId: earlier.loraId });
      if (!lora) throw new Error("GetLora answered without a LoRA");
      return { lora, uploadId: opts.resumeUploadId, resumed: true, alreadyCompleted: true, traceId };
    }
    target = earlier?.target;
  }
  target ??= await createSession(client, size, { ...opts.create, head });
  const session = target;
  opts.onSession?.({ uploadId: session.uploadId, loraId: session.loraId, resumed: session.resumed, traceId });
  signal.throwIfAborted();

  const plan = planBlocks(size, session.blockSize);
  const refreshUrl = () => refreshUploadUrl(client, session);
  if (!session.committed) {
    const todo = remainingBlocks(plan, session.staged);
    if (session.resumed) {
      opts.onResume?.({
        uploadId: session.uploadId,
        stagedBlocks: plan.length - todo.length,
        stagedBytes: size - todo.reduce((n, b) => n + b.size, 0),
        blocksTotal: plan.length,
      });
    }
    await sendBlocks({
      target: session,
      source,
      plan,
      todo,
      blocksInFlight: opts.blocksInFlight ?? 4,
      put,
      policy,
      refreshUrl,
      signal,
      onProgress: opts.onProgress,
    });
    signal.throwIfAborted();
    await withRetries(
      () => put({ ...putBlockListRequest(session.uploadUrl, plan), signal }),
      refreshUrl,
      policy,
      signal,
    );
  }
  opts.onProgress?.({ uploadedBytes: size, totalBytes: size, blocksDone: plan.length, blocksTotal: plan.length });
  signal.throwIfAborted();
  opts.onVerify?.();

  const done = await client.completeLoraUpload({ uploadId: session.uploadId });
  if (!done.lora) throw new Error("CompleteLoraUpload answered without a LoRA");
  return {
    lora: done.lora,
    quota: done.quota,
    uploadId: session.uploadId,
    resumed: session.resumed,
    alreadyCompleted: false,
    traceId,
  };
}
