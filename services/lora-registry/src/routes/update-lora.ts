import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { type LoraService, UpdateLoraResponseSchema } from "@emprops/contracts";
import { userOf } from "../domain/caller.js";
import { toLora } from "../domain/lora-message.js";
import { editLora, workflowRefs } from "../domain/loras.js";
import {
  parseDescription,
  parseLoraId,
  parseLoraName,
  parseLoraUpdateMask,
  parseTags,
  parseTriggerWords,
} from "../domain/validate.js";
import type { AppContext } from "../context.js";

export function updateLora(ctx: AppContext): Partial<ServiceImpl<typeof LoraService>> {
  return {
    async updateLora(req, hctx) {
      const userId = userOf(hctx);
      const loraId = parseLoraId(req.loraId);
      const fields = parseLoraUpdateMask(req.updateMask?.paths ?? [], req);
      const row = await editLora(ctx, userId, loraId, {
        fields: [...fields],
        name: fields.has("name") ? parseLoraName(req.name) : undefined,
        tags: fields.has("tags") ? parseTags(req.tags) : undefined,
        description: fields.has("description") ? parseDescription(req.description, "description") : undefined,
        triggerWords: fields.has("trigger_words") ? parseTriggerWords(req.triggerWords, "trigger_words") : undefined,
      });
      const workflows = await workflowRefs(ctx.db, loraId);
      return create(UpdateLoraResponseSchema, { lora: toLora(row, { workflows, withRaw: true }) });
    },
  };
}
