import type { ServiceImpl } from "@connectrpc/connect";
import type { LoraService } from "@emprops/contracts";
import { sql } from "kysely";
import { userOf } from "../domain/caller.js";
import { writeAudit } from "../domain/audit.js";
import { blobPathOf } from "../domain/blob.js";
import { sizeOf } from "../domain/lora-message.js";
import { loraNotFound } from "../domain/lora-query.js";
import { enqueueLoraDeleted } from "../domain/outbox.js";
import { ensureLedger, releaseUsage } from "../domain/quota.js";
import { parseLoraId } from "../domain/validate.js";
import type { LoraGenOutData } from "../db/schema/index.js";
import type { AppContext } from "../context.js";
import { withSpan } from "../telemetry.js";

export function deleteLora(ctx: AppContext): Partial<ServiceImpl<typeof LoraService>> {
  return {
    async deleteLora(req, hctx) {
      const userId = userOf(hctx);
      const loraId = parseLoraId(req.loraId);
      const now = ctx.clock.now();
      const deleted = await withSpan("delete_lora", { "lora.id": loraId }, () =>
        ctx.db.transaction().execute(async (trx) => {
          const res = await sql<{ id: string; user_id: string; name: string; gen_out_data: LoraGenOutData | null }>`
            UPDATE flat_file
            SET hidden = true,
                gen_out_data = coalesce(gen_out_data, '{}'::jsonb) || jsonb_build_object('deleted_at', ${now.toISOString()}::text)
            WHERE id = ${loraId} AND user_id = ${userId} AND 'lora' = ANY (tags) AND hidden IS NOT TRUE
            RETURNING id, user_id, name, gen_out_data`.execute(trx);
          const row = res.rows[0];
          if (!row) return undefined;
          const size = sizeOf(row.gen_out_data);
          // A ledger created now starts from the rows, which no longer count this one.
          if (!(await ensureLedger(trx, userId, now))) await releaseUsage(trx, userId, size, 1, now);
          const { blobPath, extension } = blobPathOf(row);
          const [eventId] = await enqueueLoraDeleted(trx, ctx.names, ctx.newId, now, "user", [
            { loraId, userId, blobPath, extension },
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
          return row;
        }),
      );
      if (!deleted) {
        // Deleting twice is harmless; anything else the caller cannot see is NOT_FOUND.
        const earlier = await ctx.db
          .selectFrom("flat_file")
          .select("id")
          .where("id", "=", loraId)
          .where("user_id", "=", userId)
          .where(sql<boolean>`'lora' = ANY (tags) AND hidden IS TRUE AND gen_out_data ? 'deleted_at'`)
          .executeTakeFirst();
        if (!earlier) throw loraNotFound(loraId);
        return {};
      }
      ctx.outboxWritten.notify();
      ctx.metrics.deletions.add(1, { reason: "user" });
      ctx.logger.info({ user_id: userId, lora_id: loraId }, "LoRA deleted");
      return {};
    },
  };
}
