import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { ErrorReason, type LoraService, UpdateLoraResponseSchema } from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";
import { userOf } from "../domain/caller.js";
import { writeAudit } from "../domain/audit.js";
import { mergeMetadata, toLora } from "../domain/lora-message.js";
import { findOwnLora, workflowsUsing } from "../domain/lora-query.js";
import { parseDescription, parseLoraId, parseLoraName, parseTags, parseTriggerWords } from "../domain/validate.js";
import type { LoraGenOutData } from "../db/schema/index.js";
import type { AppContext } from "../context.js";

const UPDATABLE = ["name", "tags", "description", "trigger_words"] as const;
type Field = (typeof UPDATABLE)[number];

export function updateLora(ctx: AppContext): Partial<ServiceImpl<typeof LoraService>> {
  return {
    async updateLora(req, hctx) {
      const userId = userOf(hctx);
      const loraId = parseLoraId(req.loraId);
      const fields = fieldsToUpdate(req.updateMask?.paths ?? [], req);
      const name = fields.has("name") ? parseLoraName(req.name) : undefined;
      const tags = fields.has("tags") ? parseTags(req.tags) : undefined;
      const description = fields.has("description") ? parseDescription(req.description, "description") : undefined;
      const triggerWords = fields.has("trigger_words")
        ? parseTriggerWords(req.triggerWords, "trigger_words")
        : undefined;

      const now = ctx.clock.now();
      const row = await ctx.db.transaction().execute(async (trx) => {
        const current = await findOwnLora(trx, userId, loraId, { forUpdate: true });
        const data: LoraGenOutData = current.gen_out_data ?? {};
        if (name) {
          const currentExtension = current.name.slice(current.name.lastIndexOf(".") + 1).toLowerCase();
          if (name.extension !== currentExtension) {
            throw invalidArgument(
              ErrorReason.INVALID_NAME,
              `the extension cannot change: the file is .${currentExtension}, so the new name must end in .${currentExtension}`,
              { field: "name", extension: currentExtension },
            );
          }
        }
        // Cleared values fall back to what the file says.
        const userMetadata = { ...(data.user_metadata ?? {}) };
        if (description !== undefined) {
          if (description) userMetadata.description = description;
          else delete userMetadata.description;
        }
        if (triggerWords !== undefined) {
          if (triggerWords.length > 0) userMetadata.trigger_words = triggerWords;
          else delete userMetadata.trigger_words;
        }
        // Rows from before this service have only lora_metadata: it is what their file said.
        const extracted = data.extracted_metadata ?? data.lora_metadata ?? {};
        const genOut: LoraGenOutData = {
          ...data,
          extracted_metadata: extracted,
          user_metadata: userMetadata,
          lora_metadata: mergeMetadata(extracted, userMetadata),
        };
        await trx
          .updateTable("flat_file")
          .set({
            ...(name ? { name: name.name } : {}),
            ...(tags ? { tags: ["lora", ...tags] } : {}),
            gen_out_data: JSON.stringify(genOut),
          })
          .where("id", "=", loraId)
          .execute();
        await writeAudit(trx, now, [
          {
            actorId: userId,
            actorRole: "user",
            action: "lora.update",
            userId,
            loraId,
            details: { fields: [...fields], ...(name ? { name: name.name } : {}) },
          },
        ]);
        return findOwnLora(trx, userId, loraId);
      });
      const workflows = await workflowsUsing(ctx.db, loraId);
      return create(UpdateLoraResponseSchema, { lora: toLora(row, { workflows, withRaw: true }) });
    },
  };
}

/** The mask's fields; with no mask, the fields the request sets (AIP-134). */
function fieldsToUpdate(
  paths: readonly string[],
  req: { name: string; tags: string[]; description: string; triggerWords: string[] },
): Set<Field> {
  if (paths.length === 0) {
    const set = new Set<Field>();
    if (req.name !== "") set.add("name");
    if (req.tags.length > 0) set.add("tags");
    if (req.description !== "") set.add("description");
    if (req.triggerWords.length > 0) set.add("trigger_words");
    if (set.size === 0) {
      throw invalidArgument(
        ErrorReason.INVALID_UPDATE_MASK,
        `nothing to update: set update_mask to some of ${UPDATABLE.join(", ")}`,
        { field: "update_mask" },
      );
    }
    return set;
  }
  const set = new Set<Field>();
  for (const path of paths) {
    const field = path === "triggerWords" ? "trigger_words" : path;
    if (!(UPDATABLE as readonly string[]).includes(field)) {
      throw invalidArgument(
        ErrorReason.INVALID_UPDATE_MASK,
        `update_mask names ${JSON.stringify(path)}, which cannot be updated; use ${UPDATABLE.join(", ")}`,
        { field: "update_mask", path },
      );
    }
    set.add(field as Field);
  }
  return set;
}
