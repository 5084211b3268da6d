import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { GetQuotaResponseSchema, type LoraService } from "@emprops/contracts";
import { userOf } from "../domain/caller.js";
import { quotaReport } from "../domain/quota.js";
import type { AppContext } from "../context.js";

export function getQuota(ctx: AppContext): Partial<ServiceImpl<typeof LoraService>> {
  return {
    async getQuota(_req, hctx) {
      return create(GetQuotaResponseSchema, await quotaReport(ctx.db, ctx.cfg.quota, userOf(hctx)));
    },
  };
}
