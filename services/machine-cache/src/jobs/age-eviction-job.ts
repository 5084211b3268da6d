import { type Logger, tracer } from "@emprops/platform";
import { Cron } from "croner";
import type { SpaceManager } from "../cache/space-manager.js";

/** Runs the age policy on a cron schedule (daily at 03:00 by default); overlapping runs are skipped. */
export function startAgeEvictionJob(deps: { pattern: string; space: SpaceManager; logger: Logger }): { stop(): void } {
  const { pattern, space, logger } = deps;
  const job = new Cron(pattern, { protect: true, catch: (err) => logger.error({ err }, "age eviction failed") }, () =>
    tracer().startActiveSpan("machine-cache.age_eviction", async (span) => {
      try {
        const evicted = await space.runAgePolicy();
        const freed = evicted.reduce((s, e) => s + e.freedBytes, 0);
        span.setAttributes({ "eviction.count": evicted.length, "eviction.freed_bytes": freed });
        logger.info({ evicted: evicted.length, freed_bytes: freed }, "age eviction ran");
      } finally {
        span.end();
      }
    }),
  );
  return { stop: () => job.stop() };
}
