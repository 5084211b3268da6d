import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { GetUserQuotaResponseSchema, type LoraAdminService } from "@emprops/contracts";
import { quotaReport } from "../domain/quota.js";
import { parseUuid } from "../domain/validate.js";
import type { AppContext } from "../context.js";

export function getUserQuota(ctx: AppContext): Partial<ServiceImpl<typeof LoraAdminService>> {
  return {
    async getUserQuota(req) {
      const userId = parseUuid(req.userId, "user_id");
      return create(GetUserQuotaResponseSchema, await quotaReport(ctx.db, ctx.cfg.quota, userId));
    },
  };
}
