import { type AuditEntry, writeAudit } from "../db/queries/audit.js";
import { hideVisibleLora, hideVisibleLorasOfUser, markPendingLorasDeleted, wasDeleted } from "../db/queries/loras.js";
import { ensureLedger, lockLedger, releaseQuota } from "../db/queries/quota.js";
import { abortPendingSessionsOfUser } from "../db/queries/upload-sessions.js";
import type { AppContext } from "../context.js";
import { withSpan } from "../telemetry.js";
import { blobPathOf } from "./blob.js";
import { sizeOf } from "./lora-message.js";
import { loraNotFound } from "./loras.js";
import { type DeletedLora, enqueueLoraDeleted } from "./outbox.js";
import { sealStaging } from "./upload-session.js";

/**
 * Soft-deletes the caller's LoRA in one transaction: hidden, its bytes and
 * count returned, the audit row and a LoraDeleted event in the outbox (the
 * relay tells the gateway and the machines). Deleting twice is harmless.
 */
export async function deleteOwnLora(ctx: AppContext, userId: string, loraId: string): Promise<void> {
  const now = ctx.clock.now();
  const deleted = await withSpan("delete_lora", { "lora.id": loraId }, () =>
    ctx.db.transaction().execute(async (trx) => {
      const row = await hideVisibleLora(trx, userId, loraId, now);
      if (!row) return false;
      const size = sizeOf(row.gen_out_data);
      // A ledger created now starts from the rows, which no longer count this one.
      if (!(await ensureLedger(trx, userId, now))) {
        await releaseQuota(trx, userId, { usedBytes: size, usedCount: 1 }, now);
      }
      const [eventId] = await enqueueLoraDeleted(trx, ctx.names, ctx.newId, now, "user", [
        { loraId, userId, ...blobPathOf(row) },
      ]);
      await writeAudit(trx, now, [
        {
          actorId: userId,
          actorRole: "user",
          action: "lora.delete",
          userId,
          loraId,
          details: { name: row.name, size_bytes: size, event_id: eventId },
        },
      ]);
      return true;
    }),
  );
  if (!deleted) {
    // Deleting twice is harmless; anything else the caller cannot see is NOT_FOUND.
    if (!(await wasDeleted(ctx.db, userId, loraId))) throw loraNotFound(loraId);
    return;
  }
  ctx.outboxWritten.notify();
  ctx.metrics.deletions.add(1, { reason: "user" });
  ctx.logger.info({ user_id: userId, lora_id: loraId }, "LoRA deleted");
}

/**
 * Account deletion: in one transaction under the ledger lock, cancels the
 * pending uploads, hides every LoRA, returns the whole quota, and writes one
 * LoraDeleted event and audit row per LoRA.
 */
export async function deleteAllLorasOfUser(
  ctx: AppContext,
  job: { userId: string; reason: string; actor: string },
): Promise<{ count: number; releasedBytes: number }> {
  const { userId, reason, actor } = job;
  const now = ctx.clock.now();
  const eventReason = reason === "account_deletion" ? "account_deletion" : "admin";
  const result = await withSpan("delete_user_loras", { "lora.user_id": userId }, () =>
    ctx.db.transaction().execute(async (trx) => {
      await ensureLedger(trx, userId, now);
      // The ledger lock holds back this user's reservations until the account is emptied.
      await lockLedger(trx, userId);
      // Sessions first: an upload completing concurrently either finished (its row is hidden below) or finds its session aborted.
      const sessions = await abortPendingSessionsOfUser(trx, userId, now, {
        reason: "ACCOUNT_DELETED",
        message: reason,
      });
      const pending = await markPendingLorasDeleted(
        trx,
        sessions.map((s) => s.lora_id),
        now,
      );
      const visible = await hideVisibleLorasOfUser(trx, userId, now);
      const usedBytes = visible.reduce((n, r) => n + sizeOf(r.gen_out_data), 0);
      const reservedBytes = sessions.reduce((n, s) => n + Number(s.declared_size_bytes), 0);
      await releaseQuota(
        trx,
        userId,
        { usedBytes, usedCount: visible.length, reservedBytes, reservedCount: sessions.length },
        now,
      );

      const all = [...visible, ...pending];
      const deleted: DeletedLora[] = all.map((r) => ({ loraId: r.id, userId, ...blobPathOf(r) }));
      const eventIds = await enqueueLoraDeleted(trx, ctx.names, ctx.newId, now, eventReason, deleted);
      const audit: AuditEntry[] = all.map((r, i) => ({
        actorId: actor,
        actorRole: "admin",
        action: "lora.delete",
        userId,
        loraId: r.id,
        details: { name: r.name, reason, pending: i >= visible.length, event_id: eventIds[i] },
      }));
      audit.push({
        actorId: actor,
        actorRole: "admin",
        action: "user.loras.delete",
        userId,
        details: { reason, deleted_count: all.length, released_bytes: usedBytes + reservedBytes },
      });
      await writeAudit(trx, now, audit);
      return { count: all.length, releasedBytes: usedBytes + reservedBytes, sessions };
    }),
  );
  if (result.count > 0) ctx.outboxWritten.notify();
  await sealStaging(ctx, result.sessions);
  ctx.metrics.deletions.add(result.count, { reason: eventReason });
  ctx.logger.info({ user_id: userId, deleted: result.count, reason }, "all LoRAs of a user deleted");
  return { count: result.count, releasedBytes: result.releasedBytes };
}
