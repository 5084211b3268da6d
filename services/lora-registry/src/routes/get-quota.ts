import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { GetQuotaResponseSchema, type LoraService } from "@emprops/contracts";
import { userOf } from "../domain/caller.js";
import { loraSizes } from "../domain/lora-query.js";
import { toLoraSize } from "../domain/lora-sizes.js";
import { quotaSummary, readLedger } from "../domain/quota.js";
import type { AppContext } from "../context.js";

export function getQuota(ctx: AppContext): Partial<ServiceImpl<typeof LoraService>> {
  return {
    async getQuota(_req, hctx) {
      const userId = userOf(hctx);
      const [ledger, sizes] = await Promise.all([readLedger(ctx.db, ctx.cfg.quota, userId), loraSizes(ctx.db, userId)]);
      return create(GetQuotaResponseSchema, {
        quota: quotaSummary(ledger, ctx.cfg.quota),
        loras: sizes.map(toLoraSize),
      });
    },
  };
}
