import type { Logger } from "@emprops/platform";
import { Cron } from "croner";
import type { SpaceManager } from "../cache/space-manager.js";

/** Runs the age policy on a cron schedule (daily at 03:00 by default); overlapping runs are skipped. */
export function startAgeEvictionJob(deps: { pattern: string; space: SpaceManager; logger: Logger }): { stop(): void } {
  const { pattern, space, logger } = deps;
  const job = new Cron(
    pattern,
    { protect: true, catch: (err) => logger.error({ err }, "age eviction failed") },
    async () => {
      const evicted = await space.runAgePolicy();
      logger.info(
        { evicted: evicted.length, freed_bytes: evicted.reduce((s, e) => s + e.sizeBytes, 0) },
        "age eviction ran",
      );
    },
  );
  return { stop: () => job.stop() };
}
