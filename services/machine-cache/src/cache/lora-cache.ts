import type { EnsuredLora } from "@emprops/contracts";
import { type EnsureDeps, type EnsureInput, ensureBatch } from "./ensure.js";

export type { EnsureInput } from "./ensure.js";

/**
 * The node's LoRA cache: answers hits from SQLite and disk, resolves the
 * rest through the registry (its access check keyed by the job's user), and
 * fetches each missing file once however many callers wait for it
 * (ensure.ts, resolve.ts, fetch-lora.ts). It also knows when no request is
 * in progress, which is when warming runs.
 */
export class LoraCache {
  private activeBatches = 0;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly deps: EnsureDeps) {}

  /** Makes every referenced LoRA present; each reference succeeds or fails on its own. */
  async ensure(input: EnsureInput): Promise<EnsuredLora[]> {
    this.activeBatches++;
    try {
      return await ensureBatch(this.deps, input);
    } finally {
      this.activeBatches--;
      if (this.activeBatches === 0) for (const wake of this.idleWaiters.splice(0)) wake();
    }
  }

  /** Resolves when no EnsureLoras is in progress. */
  whenIdle(): Promise<void> {
    if (this.activeBatches === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Cancels downloads in flight (their partial files stay for a resume) and waits for them. */
  stop(): Promise<void> {
    return this.deps.fetcher.stop();
  }
}
