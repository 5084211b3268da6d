import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { DeleteUserLorasResponseSchema, type LoraAdminService } from "@emprops/contracts";
import { sql } from "kysely";
import { actorOf } from "../domain/caller.js";
import { type AuditEntry, writeAudit } from "../domain/audit.js";
import { blobPathOf } from "../domain/blob.js";
import { sizeOf } from "../domain/lora-message.js";
import { type DeletedLora, enqueueLoraDeleted } from "../domain/outbox.js";
import { ensureLedger } from "../domain/quota.js";
import { parseShortText, parseUuid } from "../domain/validate.js";
import type { LoraGenOutData } from "../db/schema/index.js";
import type { AppContext } from "../context.js";
import { withSpan } from "../telemetry.js";

interface HiddenRow {
  id: string;
  user_id: string;
  name: string;
  gen_out_data: LoraGenOutData | null;
}

export function deleteUserLoras(ctx: AppContext): Partial<ServiceImpl<typeof LoraAdminService>> {
  return {
    async deleteUserLoras(req, hctx) {
      const userId = parseUuid(req.userId, "user_id");
      const reason = parseShortText(req.reason, "reason", 200).trim();
      const actor = actorOf(hctx);
      const now = ctx.clock.now();
      const eventReason = reason === "account_deletion" ? "account_deletion" : "admin";

      const result = await withSpan("delete_user_loras", { "lora.user_id": userId }, () =>
        ctx.db.transaction().execute(async (trx) => {
          await ensureLedger(trx, userId, now);
          // The ledger lock holds back this user's reservations until the account is emptied.
          await trx.selectFrom("lora_quota").select("user_id").where("user_id", "=", userId).forUpdate().execute();
          // Sessions first: an upload completing concurrently either finished (its row is hidden below) or finds its session aborted.
          const sessions = await trx
            .updateTable("lora_upload")
            .set({ state: "aborted", finished_at: now, failure_reason: "ACCOUNT_DELETED", failure_message: reason })
            .where("user_id", "=", userId)
            .where("state", "=", "pending")
            .returning(["lora_id", "declared_size_bytes"])
            .execute();
          const pendingIds = sessions.map((s) => s.lora_id);
          const pending =
            pendingIds.length === 0
              ? []
              : (
                  await sql<HiddenRow>`
                    UPDATE flat_file
                    SET gen_out_data = coalesce(gen_out_data, '{}'::jsonb)
                          || jsonb_build_object('validation_status', 'aborted', 'deleted_at', ${now.toISOString()}::text)
                    WHERE id = ANY (${pendingIds}::bigint[])
                    RETURNING id, user_id, name, gen_out_data`.execute(trx)
                ).rows;
          const visible = (
            await sql<HiddenRow>`
              UPDATE flat_file
              SET hidden = true,
                  gen_out_data = coalesce(gen_out_data, '{}'::jsonb) || jsonb_build_object('deleted_at', ${now.toISOString()}::text)
              WHERE user_id = ${userId} AND 'lora' = ANY (tags) AND hidden IS NOT TRUE
              RETURNING id, user_id, name, gen_out_data`.execute(trx)
          ).rows;

          const usedBytes = visible.reduce((n, r) => n + sizeOf(r.gen_out_data), 0);
          const reservedBytes = sessions.reduce((n, s) => n + Number(s.declared_size_bytes), 0);
          await sql`
            UPDATE lora_quota
            SET used_bytes = greatest(used_bytes - ${usedBytes}, 0),
                used_count = greatest(used_count - ${visible.length}, 0),
                reserved_bytes = greatest(reserved_bytes - ${reservedBytes}, 0),
                reserved_count = greatest(reserved_count - ${sessions.length}, 0),
                updated_at = ${now}
            WHERE user_id = ${userId}`.execute(trx);

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
          return { count: all.length, releasedBytes: usedBytes + reservedBytes };
        }),
      );
      if (result.count > 0) ctx.outboxWritten.notify();
      ctx.metrics.deletions.add(result.count, { reason: eventReason });
      ctx.logger.info({ user_id: userId, deleted: result.count, reason }, "all LoRAs of a user deleted");
      return create(DeleteUserLorasResponseSchema, {
        deletedCount: result.count,
        releasedBytes: BigInt(result.releasedBytes),
      });
    },
  };
}
