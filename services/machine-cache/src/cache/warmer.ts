import { detachedFromCaller } from "@emprops/platform";
import type { Db } from "../db/open-database.js";
import { cachedCopy } from "./cached-copy.js";
import type { LoraFetcher } from "./fetch-lora.js";
import type { LoraCache } from "./lora-cache.js";
import { type LoraKey, keyString } from "./lora-key.js";
import { type ResolveDeps, resolveOne } from "./resolve.js";

/** A LoRA to prefetch and the user on whose behalf it is resolved. */
export interface WarmItem {
  key: LoraKey;
  userId: string;
}

/**
 * Prefetches LoRAs one at a time whenever no EnsureLoras is running. Each is
 * resolved just before its download (read URLs live minutes), and may only
 * make room within warming's eviction budget; one that does not fit is
 * skipped, never forced.
 */
export class Warmer {
  private readonly queue: WarmItem[] = [];
  private readonly queued = new Set<string>();
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly deps: ResolveDeps & {
      db: Db;
      /** Warming waits until no EnsureLoras is in progress. */
      cache: Pick<LoraCache, "whenIdle">;
      fetcher: LoraFetcher;
    },
  ) {}

  /** Queues what is not queued yet; returns how many were added. */
  enqueue(items: WarmItem[]): number {
    let added = 0;
    for (const item of items) {
      const id = keyString(item.key);
      if (this.queued.has(id)) continue;
      this.queued.add(id);
      this.queue.push(item);
      added++;
    }
    // The queue outlives the WarmLoras call that filled it: its registry calls must not inherit that call's deadline.
    this.running ??= detachedFromCaller(() => this.drain()).finally(() => (this.running = undefined));
    return added;
  }

  /** Resolves once the queue is empty (tests and shutdown). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.queue.length = 0;
    await this.idle();
  }

  private async drain(): Promise<void> {
    while (!this.stopped) {
      await this.deps.cache.whenIdle();
      const item = this.queue.shift();
      if (!item) return;
      try {
        await this.warm(item);
      } catch (err) {
        this.deps.logger.warn({ err, ref: item.key }, "warming a LoRA failed");
      } finally {
        this.queued.delete(keyString(item.key));
      }
    }
  }

  private async warm({ key, userId }: WarmItem): Promise<void> {
    const { db, fetcher, logger } = this.deps;
    if (cachedCopy(db, key)) return;
    const who = { jobId: "cache-warming", userId };
    const resolution = await resolveOne(this.deps, who, key);
    if (resolution.case !== "lora") {
      logger.info({ ref: key, error: resolution.value }, "LoRA to warm did not resolve; skipped");
      return;
    }
    const got = await fetcher.fetch(key, resolution.value, { ...who, forWarm: true });
    logger.info({ ref: key, path: got.path, bytes: got.bytesDownloaded }, "warmed LoRA");
  }
}
