import fs from "node:fs/promises";
import { type Clock, type Logger, tracer } from "@emprops/platform";
import { recordEvent } from "../db/cache-events.js";
import { deleteLoraFile, findLoraFileByPath, referencesOfContent } from "../db/lora-files.js";
import { deleteModel } from "../db/models.js";
import type { Db } from "../db/open-database.js";
import type { EvictionPolicy } from "../db/settings.js";
import { writeTransaction } from "../db/write-transaction.js";
import type { HoldingsRecorder } from "../reporting/holdings-publisher.js";
import type { Metrics } from "../telemetry.js";
import { PARTIAL_SUFFIX, relativeToLoraDir, SIDECAR_SUFFIX } from "./cache-layout.js";

/** Room made for a download is labelled by the policy that chose the victims. */
export type EvictionReason = EvictionPolicy | "age" | "invalidation" | "admin" | "reconcile";

/** The event reason of room made for warming, which has its own budget. */
export function warmEvictionReason(reason: EvictionReason): string {
  return `${reason}-warm`;
}

export interface Evicted {
  /** Absolute path. */
  path: string;
  /** Relative to models/loras. */
  relativePath: string;
  sizeBytes: number;
  /** The file's bytes when this path was its last reference, else 0 (other paths still link to it). */
  freedBytes: number;
  reason: EvictionReason;
}

/**
 * Removes cached files: the path (and any partial download of it), then its
 * rows. Other paths linked to the same file keep it: its bytes are freed
 * (and counted so) only with its last reference. Each eviction is logged
 * with its reason and counted for the 24-hour statistics. Emptied user directories are left for start-up reconciliation,
 * so a download starting in one never loses its directory.
 */
export class Evictor {
  constructor(
    private readonly deps: {
      db: Db;
      loraDir: string;
      clock: Clock;
      logger: Logger;
      metrics: Metrics;
      /** Told of every eviction (absent in the policy replay, which has no index). */
      holdings?: HoldingsRecorder;
    },
  ) {}

  async evict(
    row: { path: string; size_bytes: number },
    reason: EvictionReason,
    detail: Record<string, unknown> = {},
  ): Promise<Evicted> {
    const { db, loraDir, clock, logger, metrics } = this.deps;
    return tracer().startActiveSpan("machine-cache.evict", async (span) => {
      try {
        span.setAttributes({ "lora.path": row.path, "eviction.reason": reason });
        const contentId = findLoraFileByPath(db, row.path)?.content_id ?? "";
        await Promise.all(
          [row.path, row.path + PARTIAL_SUFFIX, row.path + SIDECAR_SUFFIX].map((p) => fs.rm(p, { force: true })),
        );
        const eventReason = detail.for_warm ? warmEvictionReason(reason) : reason;
        const freedBytes = await writeTransaction(db, () => {
          deleteModel(db, row.path);
          deleteLoraFile(db, row.path);
          const freed = referencesOfContent(db, contentId) === 0 ? row.size_bytes : 0;
          recordEvent(db, {
            kind: "eviction",
            atMs: clock.now().getTime(),
            bytes: freed,
            reason: eventReason,
            path: row.path,
          });
          return freed;
        });
        this.deps.holdings?.released(row.path);
        const relativePath = relativeToLoraDir(loraDir, row.path) ?? row.path;
        metrics.evictions.add(1, { reason });
        metrics.evictedBytes.add(freedBytes, { reason });
        logger.info(
          { path: relativePath, size_bytes: row.size_bytes, freed_bytes: freedBytes, reason, ...detail },
          "evicted LoRA",
        );
        return { path: row.path, relativePath, sizeBytes: row.size_bytes, freedBytes, reason };
      } finally {
        span.end();
      }
    });
  }
}
