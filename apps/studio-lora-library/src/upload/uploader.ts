import { Code, ConnectError } from "@connectrpc/connect";
import {
  type Lora,
  type QuotaSummary,
  type StagedBlock,
  UploadState,
  type PlannedBlock,
  planBlocks,
  remainingBlocks,
} from "@emprops/contracts";
import pRetry, { AbortError } from "p-retry";
import type { LoraClient } from "../api.js";
import { type ShownError, showError } from "../errors.js";
import { BlobRequestError, putBlock, putBlockList } from "./blob-requests.js";
import { fileFingerprint, resumeStore } from "./resume-store.js";

export type UploadPhase = "preparing" | "uploading" | "verifying" | "done" | "paused" | "failed" | "cancelled";

/** What an upload row shows. */
export interface UploadSnapshot {
  fileName: string;
  size: number;
  phase: UploadPhase;
  /** Bytes stored in Blob Storage, including the block being sent. */
  uploadedBytes: number;
  /** Bytes an earlier attempt had already stored when this one resumed. */
  resumedBytes: number;
  error?: ShownError;
  lora?: Lora;
  quota?: QuotaSummary;
}

interface Target {
  uploadId: string;
  uploadUrl: string;
  blockSize: number;
  staged: StagedBlock[];
  committed: boolean;
}

export interface UploadOptions {
  userId: string;
  tags: string[];
  /** Put Block requests in flight (default 3). */
  blocksInFlight?: number;
  /** Retries per request before the upload pauses (default 3). */
  retries?: number;
}

/**
 * One LoRA upload from the browser: CreateLoraUpload, Put Block of each
 * slice straight to the signed URL (a few in flight, byte-level progress),
 * Put Block List, CompleteLoraUpload. A network failure pauses it; resume()
 * asks GetLoraUpload for the staged blocks and a fresh URL and sends only
 * what is missing. Dropping the same file again later resumes it too.
 */
export class LoraUpload {
  snapshot: UploadSnapshot;
  private readonly listeners = new Set<(s: UploadSnapshot) => void>();
  private readonly key: string;
  private target: Target | undefined;
  private controller = new AbortController();

  constructor(
    private readonly client: LoraClient,
    readonly file: File,
    private readonly opts: UploadOptions,
  ) {
    this.key = fileFingerprint(opts.userId, file);
    this.snapshot = { fileName: file.name, size: file.size, phase: "preparing", uploadedBytes: 0, resumedBytes: 0 };
  }

  onChange(listener: (s: UploadSnapshot) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private set(change: Partial<UploadSnapshot>): void {
    this.snapshot = { ...this.snapshot, ...change };
    for (const l of this.listeners) l(this.snapshot);
  }

  /** Starts, or picks up an unfinished upload of the same file. */
  async start(): Promise<void> {
    await this.guard(async () => {
      const earlier = resumeStore.get(this.key);
      if (earlier && (await this.pickUp(earlier))) return this.run();
      const created = await this.client.createLoraUpload({
        name: this.file.name,
        sizeBytes: BigInt(this.file.size),
        tags: this.opts.tags,
        uploadSource: "emprops_studio",
      });
      if (!created.upload) throw new Error("CreateLoraUpload answered without a session");
      resumeStore.set(this.key, created.upload.uploadId);
      this.target = {
        uploadId: created.upload.uploadId,
        uploadUrl: created.uploadUrl,
        blockSize: Number(created.blockSizeBytes),
        staged: [],
        committed: false,
      };
      await this.run();
    });
  }

  /** After a pause: what was staged and a fresh URL, then the rest. */
  async resume(): Promise<void> {
    const uploadId = this.target?.uploadId;
    if (!uploadId || this.snapshot.phase !== "paused") return;
    this.controller = new AbortController();
    this.set({ phase: "preparing", error: undefined });
    await this.guard(async () => {
      if (await this.pickUp(uploadId)) await this.run();
    });
  }

  /** Stops sending and gives the reservation back. */
  async cancel(): Promise<void> {
    this.controller.abort();
    const uploadId = this.target?.uploadId;
    resumeStore.delete(this.key);
    this.set({ phase: "cancelled" });
    if (uploadId) await this.client.abortLoraUpload({ uploadId }).catch(() => undefined);
  }

  /** True when the session is pending and this.target is set; completed sessions finish here. */
  private async pickUp(uploadId: string): Promise<boolean> {
    let res;
    try {
      res = await this.client.getLoraUpload({ uploadId });
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.NotFound) {
        resumeStore.delete(this.key);
        return false;
      }
      throw err;
    }
    const session = res.upload;
    if (session?.state === UploadState.COMPLETED) {
      const { lora } = await this.client.getLora({ loraId: session.loraId });
      resumeStore.delete(this.key);
      this.set({ phase: "done", uploadedBytes: this.file.size, lora });
      return false;
    }
    if (session?.state !== UploadState.PENDING || Number(session.declaredSizeBytes) !== this.file.size) {
      resumeStore.delete(this.key);
      return false;
    }
    this.target = {
      uploadId,
      uploadUrl: res.uploadUrl,
      blockSize: Number(res.blockSizeBytes),
      staged: res.stagedBlocks,
      committed: res.committed,
    };
    return true;
  }

  private async run(): Promise<void> {
    const target = this.target;
    if (!target) throw new Error("no upload session");
    const plan = planBlocks(this.file.size, target.blockSize);
    if (!target.committed) {
      const todo = remainingBlocks(plan, target.staged);
      const already = this.file.size - todo.reduce((n, b) => n + b.size, 0);
      this.set({ phase: "uploading", uploadedBytes: already, resumedBytes: already });
      await this.sendBlocks(target, todo, already);
      await this.withRetries(target, () => putBlockList(target.uploadUrl, plan, this.controller.signal));
    }
    this.set({ phase: "verifying", uploadedBytes: this.file.size });
    const done = await this.client.completeLoraUpload({ uploadId: target.uploadId });
    resumeStore.delete(this.key);
    this.set({ phase: "done", lora: done.lora, quota: done.quota });
  }

  private async sendBlocks(target: Target, todo: PlannedBlock[], already: number): Promise<void> {
    let done = already;
    const inFlight = new Map<number, number>();
    const report = () => {
      let sending = 0;
      for (const n of inFlight.values()) sending += n;
      this.set({ uploadedBytes: done + sending });
    };
    let next = 0;
    const worker = async () => {
      while (next < todo.length && !this.controller.signal.aborted) {
        const block = todo[next++]!;
        const data = this.file.slice(block.offset, block.offset + block.size);
        await this.withRetries(target, () => {
          inFlight.set(block.index, 0);
          return putBlock(
            target.uploadUrl,
            block,
            data,
            (loaded) => {
              inFlight.set(block.index, loaded);
              report();
            },
            this.controller.signal,
          );
        });
        inFlight.delete(block.index);
        done += block.size;
        report();
      }
    };
    let failure: { error: unknown } | undefined;
    const workers = Array.from({ length: Math.min(this.opts.blocksInFlight ?? 3, todo.length) }, () =>
      worker().catch((error: unknown) => {
        // The first block to give up stops the others; they are resent on resume.
        failure ??= { error };
        this.controller.abort();
      }),
    );
    await Promise.all(workers);
    if (failure) throw failure.error;
  }

  /** Retries with backoff; one fresh URL on a 403; other 4xx answers are final. */
  private async withRetries(target: Target, send: () => Promise<void>): Promise<void> {
    let refreshed = false;
    await pRetry(
      async () => {
        if (this.controller.signal.aborted) throw new AbortError("cancelled");
        try {
          await send();
        } catch (err) {
          if (err instanceof BlobRequestError && err.urlRefused && !refreshed) {
            refreshed = true;
            const res = await this.client.getLoraUpload({ uploadId: target.uploadId });
            target.uploadUrl = res.uploadUrl;
            throw err;
          }
          if (!(err instanceof BlobRequestError) || !err.transient) throw new AbortError(err as Error);
          throw err;
        }
      },
      { retries: this.opts.retries ?? 3, minTimeout: 400, factor: 2, randomize: true },
    );
  }

  /** Runs a step; a network failure pauses the upload, a refusal fails it with the server's reason. */
  private async guard(step: () => Promise<void>): Promise<void> {
    try {
      await step();
    } catch (err) {
      if (this.snapshot.phase === "cancelled") return;
      const unreachable = err instanceof ConnectError && err.code === Code.Unavailable && this.target;
      if ((err instanceof BlobRequestError && err.transient) || unreachable) {
        this.set({
          phase: "paused",
          error: {
            title: "Upload paused: the connection failed",
            message: err instanceof ConnectError ? err.rawMessage : (err as Error).message,
            reason: "",
            details: ["Blocks already sent are kept. Resume sends only the rest."],
            signInAgain: false,
          },
        });
        return;
      }
      const shown = showError(err);
      // A final refusal (bad file, quota, expired) ends the session: forget it.
      if (err instanceof ConnectError && err.code !== Code.Unavailable) resumeStore.delete(this.key);
      this.set({ phase: "failed", error: shown });
    }
  }
}
