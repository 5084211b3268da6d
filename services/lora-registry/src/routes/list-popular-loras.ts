import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  ErrorReason,
  ListPopularLorasResponseSchema,
  type LoraResolverService,
  PopularLoraSchema,
} from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";
import { sql } from "kysely";
import { parseOptionalUuid, parsePageSize } from "../domain/validate.js";
import type { AppContext } from "../context.js";

export function listPopularLoras(ctx: AppContext): Partial<ServiceImpl<typeof LoraResolverService>> {
  return {
    async listPopularLoras(req) {
      const userId = parseOptionalUuid(req.userId, "user_id");
      const limit = parsePageSize(req.pageSize, 20, 100);
      const t = req.usedSince;
      if (t && (t.nanos < 0 || t.nanos > 999_999_999 || t.seconds < -62135596800n || t.seconds > 253402300799n)) {
        throw invalidArgument(ErrorReason.INVALID_TIME_RANGE, "used_since is not a valid timestamp", {
          field: "used_since",
        });
      }
      let q = ctx.db
        .selectFrom("lora_usage as u")
        .innerJoin("flat_file as f", "f.id", "u.lora_id")
        .select([
          "u.user_id",
          "u.lora_id",
          "u.usage_count",
          sql<string>`lora_size_bytes(f.gen_out_data)`.as("size_bytes"),
        ])
        .where(sql<boolean>`'lora' = ANY (f.tags) AND f.hidden IS NOT TRUE`)
        .orderBy("u.usage_count", "desc")
        .orderBy("u.lora_id")
        .limit(limit);
      if (userId) q = q.where("u.user_id", "=", userId);
      if (t) q = q.where("u.last_used_at", ">=", timestampDate(t));
      const rows = await q.execute();
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
