import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { createLogger, ManualClock } from "@emprops/platform";
import { Evictor } from "./cache/evictor.js";
import { SpaceManager } from "./cache/space-manager.js";
import { getModel, registerModel, touchModel, USER_LORA } from "./db/models.js";
import { openDatabase } from "./db/open-database.js";
import { toPythonIso } from "./db/python-time.js";
import { EVICTION_POLICIES, type EvictionPolicy, SETTING_DEFAULTS, seedSettings } from "./db/settings.js";
import { createMetrics } from "./telemetry.js";

export { EVICTION_POLICIES, type EvictionPolicy };

/**
 * The entry point of the benchmarks (`@emprops/machine-cache/bench`): the
 * machine cache's own eviction code — SpaceManager (budget, candidates, the
 * lora_eviction_policy setting) and Evictor — over a real model_cache.db in
 * a scratch directory, with the rows the service writes for a download
 * (registerModel) and a use (touchModel). Entries are size-only: no file is
 * written, and the evictor's deletes find nothing to delete.
 */
export interface EvictionReplay {
  /** models/loras of the scratch directory: files of the replay live below it. */
  loraDir: string;
  /** The cache's clock; advance it between jobs. */
  clock: ManualClock;
  /** Pins the running job's files against eviction, as a batch pins them in the service. */
  pin(paths: Iterable<string>): void;
  /** One use of a file: a hit touches its row; a miss reserves its space (evicting by the policy) and registers it. */
  use(file: string, sizeBytes: number): Promise<{ hit: boolean }>;
  /** Evictions so far. */
  evictions(): number;
  close(): Promise<void>;
}

export async function startEvictionReplay(opts: {
  policy: EvictionPolicy;
  cacheGiB: number;
  /** The clock's start (local time). */
  start: Date;
}): Promise<EvictionReplay> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cache-policy-"));
  const loraDir = path.join(dir, "models", "loras");
  await fs.mkdir(loraDir, { recursive: true });
  const db = openDatabase(path.join(dir, "model_cache.db"));
  await seedSettings(db, {
    loraCacheMaxGb: opts.cacheGiB,
    minFreeSpaceGb: 0,
    loraEvictionEnabled: true,
    loraEvictionPolicy: opts.policy,
  });
  const clock = new ManualClock(opts.start);
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
  const countEvictions = db.prepare<[], { n: number }>(
    "SELECT count(*) AS n FROM lora_cache_events WHERE kind = 'eviction'",
  );
  return {
    loraDir,
    clock,
    pin: (paths) => {
      pinned = new Set(paths);
    },
    use: async (file, sizeBytes) => {
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
      return { hit };
    },
    evictions: () => countEvictions.get()!.n,
    close: async () => {
      db.close();
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

/** lora_cache_max_gb as the machine cache seeds it (GiB): the cache size of a node that sets nothing. */
export const DEFAULT_CACHE_GIB = Number(SETTING_DEFAULTS.lora_cache_max_gb);
