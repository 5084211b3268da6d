import { Cron } from "croner";
import { expiredSessions } from "../db/queries/upload-sessions.js";
import { forgetUsageBatches } from "../db/queries/usage.js";
import { endSession, joinUploadTrace } from "../domain/upload-session.js";
import type { AppContext } from "../context.js";
import { withSpan } from "../telemetry.js";

const BATCH = 100;

/**
 * Ends every pending session past its expiry, each in the trace its upload
 * began in: returns the reservation and seals the staging blob (what was
 * uploaded is discarded; should storage not answer, the consistency sweep
 * in storage-sweep.ts seals it later and deletes it once the session's URLs
 * have expired). Also forgets applied usage batch ids older than their retention.
 */
export async function reapOnce(ctx: AppContext): Promise<number> {
  return withSpan("reap_uploads", {}, async () => {
    const now = ctx.clock.now();
    let reaped = 0;
    const expired = await expiredSessions(ctx.db, now, BATCH);
    for (const s of expired) {
      const ended = await joinUploadTrace(s, "expire_upload", () =>
        endSession(ctx, s, {
          state: "expired",
          blobMayExist: true,
          audit: {
            actorId: "system",
            actorRole: "system",
            action: "lora.upload.expire",
            details: { upload_id: s.id, expire_time: s.expires_at.toISOString() },
          },
        }),
      );
      if (ended) {
        reaped++;
        ctx.metrics.uploads.add(1, { outcome: "expired" });
      }
    }
    const cutoff = new Date(now.getTime() - ctx.cfg.usageBatchRetentionDays * 86_400_000);
    await forgetUsageBatches(ctx.db, cutoff);
    if (reaped > 0) ctx.logger.info({ reaped }, "expired upload sessions reaped");
    return reaped;
  });
}

/** Runs reapOnce on UPLOAD_REAPER_CRON; a run never overlaps the previous one. */
export function startUploadReaper(ctx: AppContext): { stop(): Promise<void> } {
  let running: Promise<unknown> = Promise.resolve();
  const job = new Cron(ctx.cfg.upload.reaperCron, { protect: true }, async () => {
    running = reapOnce(ctx).catch((err: unknown) => ctx.logger.error({ err }, "upload reaper run failed"));
    await running;
  });
  return {
    stop: async () => {
      job.stop();
      await running;
    },
  };
}
