import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { DeleteUserLorasResponseSchema, type LoraAdminService } from "@emprops/contracts";
import { actorOf } from "../domain/caller.js";
import { deleteAllLorasOfUser } from "../domain/deletions.js";
import { parseShortText, parseUuid } from "../domain/validate.js";
import type { AppContext } from "../context.js";

export function deleteUserLoras(ctx: AppContext): Partial<ServiceImpl<typeof LoraAdminService>> {
  return {
    async deleteUserLoras(req, hctx) {
      const userId = parseUuid(req.userId, "user_id");
      const reason = parseShortText(req.reason, "reason", 200).trim();
      const result = await deleteAllLorasOfUser(ctx, { userId, reason, actor: actorOf(hctx) });
      return create(DeleteUserLorasResponseSchema, {
        deletedCount: result.count,
        releasedBytes: BigInt(result.releasedBytes),
      });
    },
  };
}
