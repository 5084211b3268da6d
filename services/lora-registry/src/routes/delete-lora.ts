import type { ServiceImpl } from "@connectrpc/connect";
import type { LoraService } from "@emprops/contracts";
import { userOf } from "../domain/caller.js";
import { deleteOwnLora } from "../domain/deletions.js";
import { parseLoraId } from "../domain/validate.js";
import type { AppContext } from "../context.js";

export function deleteLora(ctx: AppContext): Partial<ServiceImpl<typeof LoraService>> {
  return {
    async deleteLora(req, hctx) {
      await deleteOwnLora(ctx, userOf(hctx), parseLoraId(req.loraId));
      return {};
    },
  };
}
