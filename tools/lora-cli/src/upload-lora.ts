import { open, stat } from "node:fs/promises";
import path from "node:path";
import { Code, type Client, ConnectError } from "@connectrpc/connect";
import {
  type Lora,
  type LoraService,
  type QuotaSummary,
  type StagedBlock,
  UploadState,
  type UserLoraMetadata,
  type PlannedBlock,
  planBlocks,
  remainingBlocks,
} from "@emprops/contracts";
import pRetry, { AbortError } from "p-retry";
import { BlobRequestError, putBlock, putBlockList } from "./blob-requests.js";
import { CliError, EXIT, reasonOf } from "./errors.js";

export interface UploadProgress {
  /** Bytes of the file stored so far (staged blocks included). */
  uploadedBytes: number;
  totalBytes: number;
  blocksDone: number;
  blocksTotal: number;
}

export interface UploadSessionInfo {
  uploadId: string;
  loraId: string;
}

export interface UploadLoraOptions {
  client: Client<typeof LoraService>;
  file: string;
  /** Defaults to the file's base name. */
  name?: string;
  tags?: string[];
  metadata?: Partial<Pick<UserLoraMetadata, "baseModel" | "triggerWords" | "description">>;
  uploadSource?: string;
  /** A session started earlier for this file: it is resumed when still pending. */
  resumeUploadId?: string;
  /** Called once a new session exists, so the caller can remember it for a re-run. */
  onSession?: (session: UploadSessionInfo) => void;
  /** Called when an earlier session is picked up again. */
  onResume?: (info: { uploadId: string; stagedBlocks: number; stagedBytes: number; blocksTotal: number }) => void;
  onProgress?: (progress: UploadProgress) => void;
  /** Put Block calls in flight (default 4). */
  blocksInFlight?: number;
  /** Retries per block after the first attempt (default 4). */
  retries?: number;
  /** First retry delay in ms, doubling after each (default 500). */
  retryDelayMs?: number;
}

export interface UploadLoraResult {
  lora: Lora;
  quota?: QuotaSummary;
  uploadId: string;
  /** The session had blocks (or the commit) from an earlier run. */
  resumed: boolean;
  /** The session was completed by an earlier run: nothing was sent. */
  alreadyCompleted: boolean;
}

interface Target {
  uploadId: string;
  loraId: string;
  uploadUrl: string;
  blockSize: number;
  staged: StagedBlock[];
  committed: boolean;
  resumed: boolean;
}

/**
 * Uploads one LoRA file: a new session (or the pending one given), the
 * missing blocks straight to the signed URL, Put Block List, then
 * CompleteLoraUpload, which verifies the file and publishes it. Reads one
 * block at a time; never the whole file.
 */
export async function uploadLora(opts: UploadLoraOptions): Promise<UploadLoraResult> {
  const { client, file } = opts;
  const info = await stat(file).catch((err: NodeJS.ErrnoException) => {
    throw new CliError(`cannot read ${file}: ${err.code === "ENOENT" ? "no such file" : err.message}`, EXIT.USAGE);
  });
  if (!info.isFile()) throw new CliError(`${file} is not a file`, EXIT.USAGE);
  const size = info.size;

  let target: Target | undefined;
  if (opts.resumeUploadId) {
    const earlier = await pickUp(client, opts.resumeUploadId, size);
    if (earlier?.kind === "completed") {
      const { lora } = await client.getLora({ loraId: earlier.loraId });
      if (!lora) throw new Error("GetLora answered without a LoRA");
      return { lora, uploadId: opts.resumeUploadId, resumed: true, alreadyCompleted: true };
    }
    target = earlier?.kind === "pending" ? earlier.target : undefined;
  }
  if (!target) {
    const created = await client.createLoraUpload({
      name: opts.name ?? path.basename(file),
      sizeBytes: BigInt(size),
      tags: opts.tags ?? [],
      metadata: {
        baseModel: opts.metadata?.baseModel ?? "",
        triggerWords: opts.metadata?.triggerWords ?? [],
        description: opts.metadata?.description ?? "",
      },
      uploadSource: opts.uploadSource ?? "cli",
    });
    if (!created.upload) throw new Error("CreateLoraUpload answered without a session");
    target = {
      uploadId: created.upload.uploadId,
      loraId: created.upload.loraId,
      uploadUrl: created.uploadUrl,
      blockSize: Number(created.blockSizeBytes),
      staged: [],
      committed: false,
      resumed: false,
    };
    opts.onSession?.({ uploadId: target.uploadId, loraId: target.loraId });
  }

  const plan = planBlocks(size, target.blockSize);
  if (!target.committed) {
    const todo = remainingBlocks(plan, target.staged);
    const stagedBytes = size - todo.reduce((n, b) => n + b.size, 0);
    if (target.resumed) {
      opts.onResume?.({
        uploadId: target.uploadId,
        stagedBlocks: plan.length - todo.length,
        stagedBytes,
        blocksTotal: plan.length,
      });
    }
    await sendBlocks(client, target, file, plan, todo, stagedBytes, size, opts);
    await withRetries(
      opts,
      () => putBlockList(target.uploadUrl, plan),
      () => refreshUrl(client, target),
    );
  }
  opts.onProgress?.({ uploadedBytes: size, totalBytes: size, blocksDone: plan.length, blocksTotal: plan.length });

  const done = await client.completeLoraUpload({ uploadId: target.uploadId });
  if (!done.lora) throw new Error("CompleteLoraUpload answered without a LoRA");
  return {
    lora: done.lora,
    quota: done.quota,
    uploadId: target.uploadId,
    resumed: target.resumed,
    alreadyCompleted: false,
  };
}

type Earlier = { kind: "pending"; target: Target } | { kind: "completed"; loraId: string };

/** An earlier session of this file: pending (resume it), completed, or gone (undefined: start over). */
async function pickUp(
  client: Client<typeof LoraService>,
  uploadId: string,
  size: number,
): Promise<Earlier | undefined> {
  let res;
  try {
    res = await client.getLoraUpload({ uploadId });
  } catch (err) {
    // Another registry or user, or reaped long ago: a new session it is.
    if (err instanceof ConnectError && (err.code === Code.NotFound || reasonOf(err) === "INVALID_ID")) return undefined;
    throw err;
  }
  const session = res.upload;
  if (!session) return undefined;
  if (session.state === UploadState.COMPLETED) return { kind: "completed", loraId: session.loraId };
  if (session.state !== UploadState.PENDING || Number(session.declaredSizeBytes) !== size || !res.uploadUrl) {
    if (session.state === UploadState.PENDING) await client.abortLoraUpload({ uploadId }).catch(() => undefined);
    return undefined;
  }
  return {
    kind: "pending",
    target: {
      uploadId,
      loraId: session.loraId,
      uploadUrl: res.uploadUrl,
      blockSize: Number(res.blockSizeBytes),
      staged: res.stagedBlocks,
      committed: res.committed,
      resumed: true,
    },
  };
}

async function refreshUrl(client: Client<typeof LoraService>, target: Target): Promise<void> {
  const res = await client.getLoraUpload({ uploadId: target.uploadId });
  if (!res.uploadUrl) throw new CliError("the upload session is no longer pending", EXIT.UPLOAD_STATE);
  target.uploadUrl = res.uploadUrl;
}

/** Sends the blocks with a few in flight, reporting progress as each one lands. */
async function sendBlocks(
  client: Client<typeof LoraService>,
  target: Target,
  file: string,
  plan: PlannedBlock[],
  todo: PlannedBlock[],
  stagedBytes: number,
  size: number,
  opts: UploadLoraOptions,
): Promise<void> {
  const handle = await open(file, "r");
  let uploaded = stagedBytes;
  let blocksDone = plan.length - todo.length;
  opts.onProgress?.({ uploadedBytes: uploaded, totalBytes: size, blocksDone, blocksTotal: plan.length });
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < todo.length) {
      const block = todo[next++]!;
      const data = Buffer.allocUnsafe(block.size);
      const { bytesRead } = await handle.read(data, 0, block.size, block.offset);
      if (bytesRead !== block.size) throw new CliError(`${file} changed while it was being uploaded`, EXIT.USAGE);
      await withRetries(
        opts,
        () => putBlock(target.uploadUrl, block, data),
        () => refreshUrl(client, target),
      );
      uploaded += block.size;
      blocksDone++;
      opts.onProgress?.({ uploadedBytes: uploaded, totalBytes: size, blocksDone, blocksTotal: plan.length });
    }
  };
  try {
    const workers = Array.from({ length: Math.min(opts.blocksInFlight ?? 4, todo.length) }, () =>
      worker().catch((err: unknown) => {
        failed = true;
        throw err;
      }),
    );
    const outcomes = await Promise.allSettled(workers);
    const rejected = outcomes.find((o): o is PromiseRejectedResult => o.status === "rejected");
    if (rejected) throw rejected.reason;
  } finally {
    await handle.close();
  }
}

/**
 * A storage request with retries (exponential backoff with jitter). A 403
 * gets one fresh signed URL; other 4xx answers are final. When the retries
 * run out the upload is interrupted, and a re-run resumes it.
 */
async function withRetries(opts: UploadLoraOptions, send: () => Promise<void>, refresh: () => Promise<void>) {
  let refreshed = false;
  try {
    await pRetry(
      async () => {
        try {
          await send();
        } catch (err) {
          if (err instanceof BlobRequestError && err.urlRefused && !refreshed) {
            refreshed = true;
            await refresh().catch((e: unknown) => {
              throw new AbortError(e instanceof Error ? e : String(e));
            });
            throw err;
          }
          if (err instanceof BlobRequestError && !err.transient) throw new AbortError(err);
          throw err;
        }
      },
      {
        retries: opts.retries ?? 4,
        minTimeout: opts.retryDelayMs ?? 500,
        factor: 2,
        randomize: true,
      },
    );
  } catch (err) {
    if (err instanceof CliError || err instanceof ConnectError) throw err;
    const cause =
      err instanceof Error
        ? err.cause instanceof Error
          ? `${err.message}: ${err.cause.message}`
          : err.message
        : String(err);
    throw new CliError(
      `upload interrupted: ${cause}. Run the same command again to resume where it stopped.`,
      EXIT.UNAVAILABLE,
    );
  }
}
