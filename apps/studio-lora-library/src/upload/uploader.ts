import { Code, ConnectError } from "@connectrpc/connect";
import type { Lora, QuotaSummary } from "@emprops/contracts";
import { BlobRequestError, HeadRefusedError, uploadLora } from "@emprops/upload-client";
import type { LoraClient } from "../api.js";
import { type ShownError, showError } from "../errors.js";
import { fileFingerprint, resumeStore } from "./resume-store.js";
import { xhrPut } from "./xhr-put.js";

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

export interface UploadOptions {
  userId: string;
  tags: string[];
  /** Put Block requests in flight (default 3). */
  blocksInFlight?: number;
  /** Retries per request before the upload pauses (default 3). */
  retries?: number;
}

/**
 * One LoRA upload from the browser with the shared block-upload client:
 * CreateLoraUpload, Put Block of each slice straight to the signed URL (a few
 * in flight, byte-level progress through XMLHttpRequest), Put Block List,
 * CompleteLoraUpload. A network failure pauses it; resume() sends only what
 * storage does not hold yet. Dropping the same file again later resumes it too.
 */
export class LoraUpload {
  snapshot: UploadSnapshot;
  private readonly listeners = new Set<(s: UploadSnapshot) => void>();
  private readonly key: string;
  private uploadId: string | undefined;
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
    await this.guard(() => this.send(resumeStore.get(this.key)));
  }

  /** After a pause: what was staged and a fresh URL, then the rest. */
  async resume(): Promise<void> {
    const uploadId = this.uploadId;
    if (!uploadId || this.snapshot.phase !== "paused") return;
    this.controller = new AbortController();
    this.set({ phase: "preparing", error: undefined });
    await this.guard(() => this.send(uploadId));
  }

  /** Stops sending and gives the reservation back. */
  async cancel(): Promise<void> {
    this.controller.abort();
    const uploadId = this.uploadId;
    resumeStore.delete(this.key);
    this.set({ phase: "cancelled" });
    if (uploadId) await this.client.abortLoraUpload({ uploadId }).catch(() => undefined);
  }

  private async send(resumeUploadId: string | undefined): Promise<void> {
    const result = await uploadLora({
      client: this.client,
      source: this.file,
      create: { name: this.file.name, tags: this.opts.tags, uploadSource: "emprops_studio" },
      resumeUploadId,
      blocksInFlight: this.opts.blocksInFlight ?? 3,
      retries: this.opts.retries ?? 3,
      retryDelayMs: 400,
      signal: this.controller.signal,
      put: xhrPut,
      onSession: (s) => {
        this.uploadId = s.uploadId;
        if (!s.resumed) resumeStore.set(this.key, s.uploadId);
      },
      onResume: (r) => this.set({ resumedBytes: r.stagedBytes }),
      onProgress: (p) => this.set({ phase: "uploading", uploadedBytes: p.uploadedBytes }),
      onVerify: () => this.set({ phase: "verifying", uploadedBytes: this.file.size }),
    });
    resumeStore.delete(this.key);
    this.set({ phase: "done", uploadedBytes: this.file.size, lora: result.lora, quota: result.quota });
  }

  /** Runs a step; a network failure pauses the upload, a refusal fails it with the server's reason. */
  private async guard(step: () => Promise<void>): Promise<void> {
    try {
      await step();
    } catch (err) {
      if (this.snapshot.phase === "cancelled") return;
      const unreachable = err instanceof ConnectError && err.code === Code.Unavailable && this.uploadId;
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
      if (err instanceof HeadRefusedError)
        shown.details.push("Checked on this computer before uploading: nothing was sent.");
      // A final refusal (bad file, quota, expired) ends the session: forget it.
      if (err instanceof ConnectError && err.code !== Code.Unavailable) resumeStore.delete(this.key);
      this.set({ phase: "failed", error: shown });
    }
  }
}
