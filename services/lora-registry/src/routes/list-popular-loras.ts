import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { ListPopularLorasResponseSchema, type LoraResolverService, PopularLoraSchema } from "@emprops/contracts";
import { popularLoras } from "../db/queries/usage.js";
import { parsePageSize, parseTimestamp } from "../domain/listing-params.js";
import { parseOptionalUuid } from "../domain/validate.js";
import type { AppContext } from "../context.js";

export function listPopularLoras(ctx: AppContext): Partial<ServiceImpl<typeof LoraResolverService>> {
  return {
    async listPopularLoras(req) {
      const userId = parseOptionalUuid(req.userId, "user_id");
      const limit = parsePageSize(req.pageSize, 20, 100);
      const usedSince = req.usedSince ? parseTimestamp(req.usedSince, "used_since") : undefined;
      const rows = await popularLoras(ctx.db, { userId, usedSince, limit });
      return create(ListPopularLorasResponseSchema, {
        loras: rows.map((r) =>
          create(PopularLoraSchema, {
            userId: r.user_id,
            loraId: r.lora_id,
            usageCount: BigInt(r.usage_count),
            sizeBytes: BigInt(r.size_bytes),
          }),
        ),
      });
    },
  };
}
