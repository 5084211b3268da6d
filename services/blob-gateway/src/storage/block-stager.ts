import { randomBytes } from "node:crypto";
import type { BlobRequestConditions, BlockBlobClient } from "@azure/storage-blob";

export interface BlockStagerOptions {
  /** Bytes per staged block (the last one may be smaller). */
  blockSize: number;
  /** Put Block calls in flight at once. */
  inFlight: number;
  /** Runs once before the first block is written; throwing stops the upload. */
  beforeFirstBlock?: () => Promise<void>;
}

/**
 * Turns a stream of chunks into staged blocks as they arrive. Memory is
 * bounded by about (inFlight + 1) × blockSize: write() waits while that many
 * blocks are on their way. Nothing is visible until commit().
 */
export class BlockStager {
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly ids: string[] = [];
  private failure: { err: unknown } | undefined;
  // Block ids of one blob must all have the same length; a random prefix keeps
  // this upload's blocks apart from any other staged on the same path.
  private readonly prefix = randomBytes(6).toString("hex");

  constructor(
    private readonly blob: BlockBlobClient,
    private readonly opts: BlockStagerOptions,
  ) {}

  /** Number of blocks staged or being staged. */
  get blockCount(): number {
    return this.ids.length;
  }

  async write(chunk: Uint8Array): Promise<void> {
    this.throwIfFailed();
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    while (this.pendingBytes >= this.opts.blockSize) await this.stage(this.take(this.opts.blockSize));
  }

  /** Stages the rest, waits for every block, then commits the block list (with its metadata). */
  async commit(conditions?: BlobRequestConditions, metadata?: Record<string, string>): Promise<void> {
    if (this.pendingBytes > 0) await this.stage(this.take(this.pendingBytes));
    await Promise.all(this.inFlight);
    this.throwIfFailed();
    await this.blob.commitBlockList(this.ids, { conditions, metadata });
  }

  /** Waits for blocks still in flight; they stay uncommitted (storage discards them after 7 days). */
  async abandon(): Promise<void> {
    this.pending = [];
    this.pendingBytes = 0;
    await Promise.allSettled(this.inFlight);
  }

  private take(n: number): Buffer {
    const all = Buffer.concat(this.pending, this.pendingBytes);
    const block = all.subarray(0, n);
    const rest = all.subarray(n);
    this.pending = rest.length > 0 ? [rest] : [];
    this.pendingBytes = rest.length;
    return block;
  }

  private async stage(block: Buffer): Promise<void> {
    if (this.ids.length === 0) await this.opts.beforeFirstBlock?.();
    while (this.inFlight.size >= this.opts.inFlight) await Promise.race(this.inFlight);
    this.throwIfFailed();
    const id = Buffer.from(`${this.prefix}-${String(this.ids.length).padStart(6, "0")}`).toString("base64");
    this.ids.push(id);
    const staged: Promise<void> = this.blob.stageBlock(id, block, block.length).then(
      () => {
        this.inFlight.delete(staged);
      },
      (err: unknown) => {
        this.failure ??= { err };
        this.inFlight.delete(staged);
      },
    );
    this.inFlight.add(staged);
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure.err;
  }
}
