import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { GetLoraResponseSchema, type LoraService } from "@emprops/contracts";
import { userOf } from "../domain/caller.js";
import { toLora } from "../domain/lora-message.js";
import { findOwnLora, workflowRefs } from "../domain/loras.js";
import { parseLoraId } from "../domain/validate.js";
import type { AppContext } from "../context.js";

export function getLora(ctx: AppContext): Partial<ServiceImpl<typeof LoraService>> {
  return {
    async getLora(req, hctx) {
      const userId = userOf(hctx);
      const loraId = parseLoraId(req.loraId);
      const row = await findOwnLora(ctx.db, userId, loraId);
      const workflows = await workflowRefs(ctx.db, loraId);
      return create(GetLoraResponseSchema, { lora: toLora(row, { workflows, withRaw: true }) });
    },
  };
}
