import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Evictor } from "@emprops/machine-cache/dist/cache/evictor.js";
import { SpaceManager } from "@emprops/machine-cache/dist/cache/space-manager.js";
import { getModel, registerModel, touchModel, USER_LORA } from "@emprops/machine-cache/dist/db/models.js";
import { openDatabase } from "@emprops/machine-cache/dist/db/open-database.js";
import { toPythonIso } from "@emprops/machine-cache/dist/db/python-time.js";
import { type EvictionPolicy, seedSettings } from "@emprops/machine-cache/dist/db/settings.js";
import { createMetrics } from "@emprops/machine-cache/dist/telemetry.js";
import { createLogger, ManualClock } from "@emprops/platform";
import { Outcome, warmupJobs } from "./outcome.js";
import type { Trace } from "./trace.js";

/** Seconds between jobs on the machine's clock (only the order matters to the policies). */
const JOB_GAP_MS = 20_000;

/**
 * Replays a trace through the machine cache's own eviction code: its
 * SpaceManager (budget, candidate selection, the lora_eviction_policy
 * setting) and Evictor over a real model_cache.db in a scratch directory,
 * with the rows the service writes for a download (registerModel) and a use
 * (touchModel). Entries are size-only: no file is written, and the evictor's
 * deletes find nothing to delete. The running job's LoRAs are pinned, as a
 * batch pins them in the service.
 */
export async function replayOnMachineCache(
  trace: Trace,
  policy: EvictionPolicy,
  cacheGiB: number,
): Promise<{ outcome: Outcome; seconds: number }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cache-policy-"));
  const loraDir = path.join(dir, "models", "loras");
  await fs.mkdir(loraDir, { recursive: true });
  const db = openDatabase(path.join(dir, "model_cache.db"));
  try {
    seedSettings(db, {
      loraCacheMaxGb: cacheGiB,
      minFreeSpaceGb: 0,
      loraEvictionEnabled: true,
      loraEvictionPolicy: policy,
    });
    // Local time without daylight-saving changes over the replay: January.
    const clock = new ManualClock(new Date(2026, 0, 5, 8, 0, 0));
    const logger = createLogger("cache-policy", "silent");
    const evictor = new Evictor({ db, loraDir, clock, logger, metrics: createMetrics() });
    let pinned = new Set<string>();
    const space = new SpaceManager({
      db,
      loraDir,
      evictor,
      clock,
      logger,
      busy: (p) => pinned.has(p),
      warmMaxEvictPercent: 20,
    });
    const pathOf = (lora: number) => path.join(loraDir, "users", `u${trace.loras[lora]!.user}`, `${lora}.safetensors`);
    const outcome = new Outcome();
    const warm = warmupJobs(trace.jobs.length);
    const evictions = () =>
      (db.prepare("SELECT count(*) AS n FROM lora_cache_events WHERE kind = 'eviction'").get() as { n: number }).n;
    let evictedBefore = 0;
    const started = performance.now();
    for (const [j, job] of trace.jobs.entries()) {
      if (j === warm) evictedBefore = evictions();
      clock.advance(JOB_GAP_MS);
      pinned = new Set(job.map(pathOf));
      for (const lora of job) {
        const file = pathOf(lora);
        const sizeBytes = trace.loras[lora]!.sizeBytes;
        const now = toPythonIso(clock.now());
        const hit = getModel(db, file) !== undefined;
        if (!hit) {
          const reservation = await space.reserve({ path: file, sizeBytes, userLora: true });
          registerModel(db, {
            path: file,
            modelType: USER_LORA,
            filename: path.basename(file),
            sizeBytes,
            now,
            useCount: 0,
          });
          reservation.release();
        }
        touchModel(db, file, now);
        if (j >= warm) outcome.count(hit, sizeBytes);
      }
    }
    outcome.evictions = evictions() - evictedBefore;
    const seconds = (performance.now() - started) / 1000;
    return { outcome, seconds };
  } finally {
    db.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
}
