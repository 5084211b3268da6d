import path from "node:path";
import { type EvictionPolicy, startEvictionReplay } from "@emprops/machine-cache/bench";
import { Outcome, warmupJobs } from "./outcome.js";
import type { Trace } from "./trace.js";

/** Seconds between jobs on the machine's clock (only the order matters to the policies). */
const JOB_GAP_MS = 20_000;

/**
 * Replays a trace through the machine cache's own eviction code (its
 * SpaceManager and Evictor over a real model_cache.db, from the package's
 * bench entry point). The running job's LoRAs are pinned, as a batch pins
 * them in the service.
 */
export async function replayOnMachineCache(
  trace: Trace,
  policy: EvictionPolicy,
  cacheGiB: number,
): Promise<{ outcome: Outcome; seconds: number }> {
  // Local time without daylight-saving changes over the replay: January.
  const replay = await startEvictionReplay({ policy, cacheGiB, start: new Date(2026, 0, 5, 8, 0, 0) });
  try {
    const pathOf = (lora: number) =>
      path.join(replay.loraDir, "users", `u${trace.loras[lora]!.user}`, `${lora}.safetensors`);
    const outcome = new Outcome();
    const warm = warmupJobs(trace.jobs.length);
    let evictedBefore = 0;
    const started = performance.now();
    for (const [j, job] of trace.jobs.entries()) {
      if (j === warm) evictedBefore = replay.evictions();
      replay.clock.advance(JOB_GAP_MS);
      replay.pin(job.map(pathOf));
      for (const lora of job) {
        const sizeBytes = trace.loras[lora]!.sizeBytes;
        const { hit } = await replay.use(pathOf(lora), sizeBytes);
        if (j >= warm) outcome.count(hit, sizeBytes);
      }
    }
    outcome.evictions = replay.evictions() - evictedBefore;
    const seconds = (performance.now() - started) / 1000;
    return { outcome, seconds };
  } finally {
    await replay.close();
  }
}
