import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { type LoraAdminService, QuotaDriftSchema, ReconcileQuotaResponseSchema } from "@emprops/contracts";
import { actorOf } from "../domain/caller.js";
import { reconcileLedgers } from "../domain/quota-admin.js";
import { parseOptionalUuid } from "../domain/validate.js";
import type { AppContext } from "../context.js";

export function reconcileQuota(ctx: AppContext): Partial<ServiceImpl<typeof LoraAdminService>> {
  return {
    async reconcileQuota(req, hctx) {
      const userId = parseOptionalUuid(req.userId, "user_id");
      const { checked, drifts } = await reconcileLedgers(ctx, { userId, repair: req.repair, actor: actorOf(hctx) });
      return create(ReconcileQuotaResponseSchema, {
        usersChecked: checked,
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
