import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { GetUserQuotaResponseSchema, type LoraAdminService } from "@emprops/contracts";
import { loraSizes } from "../domain/lora-query.js";
import { toLoraSize } from "../domain/lora-sizes.js";
import { quotaSummary, readLedger } from "../domain/quota.js";
import { parseUuid } from "../domain/validate.js";
import type { AppContext } from "../context.js";

export function getUserQuota(ctx: AppContext): Partial<ServiceImpl<typeof LoraAdminService>> {
  return {
    async getUserQuota(req) {
      const userId = parseUuid(req.userId, "user_id");
      const [ledger, sizes] = await Promise.all([readLedger(ctx.db, ctx.cfg.quota, userId), loraSizes(ctx.db, userId)]);
      return create(GetUserQuotaResponseSchema, {
        quota: quotaSummary(ledger, ctx.cfg.quota),
        loras: sizes.map(toLoraSize),
      });
    },
  };
}
