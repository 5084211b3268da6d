import type { Client } from "@connectrpc/connect";
import type { LoraResolverService } from "@emprops/contracts";
import type { Logger } from "@emprops/platform";
import { type LoraCache } from "./lora-cache.js";
import { type LoraKey, keyString, referenceOf } from "./lora-key.js";

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
    private readonly deps: {
      cache: LoraCache;
      resolver: Client<typeof LoraResolverService>;
      machineId: string;
      logger: Logger;
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
    this.running ??= this.drain().finally(() => (this.running = undefined));
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
    const { cache, resolver, machineId, logger } = this.deps;
    if (await cache.cachedCopy(key)) return;
    const answer = await resolver.resolveLoras({
      userId,
      jobId: "cache-warming",
      machineId,
      refs: [referenceOf(key)],
    });
    const outcome = answer.results[0]?.outcome;
    if (outcome?.case !== "lora") {
      logger.info({ ref: key, error: outcome?.value }, "LoRA to warm did not resolve; skipped");
      return;
    }
    const got = await cache.fetch(key, outcome.value, { jobId: "cache-warming", userId, forWarm: true });
    logger.info({ ref: key, path: got.path, bytes: got.bytesDownloaded }, "warmed LoRA");
  }
}
