import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { type LoraAdminService, QuotaDriftSchema, ReconcileQuotaResponseSchema } from "@emprops/contracts";
import { type Kysely, sql } from "kysely";
import { actorOf } from "../domain/caller.js";
import { writeAudit } from "../domain/audit.js";
import { parseOptionalUuid } from "../domain/validate.js";
import type { Database } from "../db/schema/index.js";
import type { AppContext } from "../context.js";
import { withSpan } from "../telemetry.js";

interface Comparison {
  user_id: string;
  ledger_used_bytes: string;
  ledger_used_count: number;
  ledger_reserved_bytes: string;
  ledger_reserved_count: number;
  actual_used_bytes: string;
  actual_used_count: string;
  actual_reserved_bytes: string;
  actual_reserved_count: string;
}

/** Ledgers beside what the rows and pending sessions say; one user, or every ledger. */
async function compare(db: Kysely<Database>, userId: string | undefined, lock: boolean): Promise<Comparison[]> {
  const res = await sql<Comparison>`
    SELECT q.user_id,
           q.used_bytes AS ledger_used_bytes, q.used_count AS ledger_used_count,
           q.reserved_bytes AS ledger_reserved_bytes, q.reserved_count AS ledger_reserved_count,
           used.bytes AS actual_used_bytes, used.count AS actual_used_count,
           pending.bytes AS actual_reserved_bytes, pending.count AS actual_reserved_count
    FROM lora_quota q
    CROSS JOIN LATERAL (
      SELECT coalesce(sum(lora_size_bytes(f.gen_out_data)), 0) AS bytes, count(*) AS count
      FROM flat_file f
      WHERE f.user_id = q.user_id AND 'lora' = ANY (f.tags) AND f.hidden IS NOT TRUE) used
    CROSS JOIN LATERAL (
      SELECT coalesce(sum(s.declared_size_bytes), 0) AS bytes, count(*) AS count
      FROM lora_upload s WHERE s.user_id = q.user_id AND s.state = 'pending') pending
    ${userId ? sql`WHERE q.user_id = ${userId}` : sql``}
    ORDER BY q.user_id
    ${lock ? sql`FOR UPDATE OF q` : sql``}`.execute(db);
  return res.rows;
}

function drifted(c: Comparison): boolean {
  return (
    Number(c.ledger_used_bytes) !== Number(c.actual_used_bytes) ||
    c.ledger_used_count !== Number(c.actual_used_count) ||
    Number(c.ledger_reserved_bytes) !== Number(c.actual_reserved_bytes) ||
    c.ledger_reserved_count !== Number(c.actual_reserved_count)
  );
}

export function reconcileQuota(ctx: AppContext): Partial<ServiceImpl<typeof LoraAdminService>> {
  return {
    async reconcileQuota(req, hctx) {
      const userId = parseOptionalUuid(req.userId, "user_id");
      const compared = await withSpan("reconcile_quota", { "lora.repair": req.repair }, () =>
        compare(ctx.db, userId, false),
      );
      const drifts = compared.filter(drifted);
      if (req.repair) {
        const now = ctx.clock.now();
        for (const d of drifts) {
          // Re-read under the ledger lock so the repair matches the rows at that moment.
          await ctx.db.transaction().execute(async (trx) => {
            const [c] = await compare(trx, d.user_id, true);
            if (!c || !drifted(c)) return;
            await trx
              .updateTable("lora_quota")
              .set({
                used_bytes: Number(c.actual_used_bytes),
                used_count: Number(c.actual_used_count),
                reserved_bytes: Number(c.actual_reserved_bytes),
                reserved_count: Number(c.actual_reserved_count),
                updated_at: now,
              })
              .where("user_id", "=", c.user_id)
              .execute();
            await writeAudit(trx, now, [
              {
                actorId: actorOf(hctx),
                actorRole: "admin",
                action: "quota.reconcile",
                userId: c.user_id,
                details: { ...c },
              },
            ]);
          });
        }
      }
      return create(ReconcileQuotaResponseSchema, {
        usersChecked: compared.length,
        repaired: req.repair && drifts.length > 0,
        drifts: drifts.map((c) =>
          create(QuotaDriftSchema, {
            userId: c.user_id,
            ledgerUsedBytes: BigInt(c.ledger_used_bytes),
            actualUsedBytes: BigInt(c.actual_used_bytes),
            ledgerUsedCount: c.ledger_used_count,
            actualUsedCount: Number(c.actual_used_count),
            ledgerReservedBytes: BigInt(c.ledger_reserved_bytes),
            actualReservedBytes: BigInt(c.actual_reserved_bytes),
            ledgerReservedCount: c.ledger_reserved_count,
            actualReservedCount: Number(c.actual_reserved_count),
          }),
        ),
      });
    },
  };
}
