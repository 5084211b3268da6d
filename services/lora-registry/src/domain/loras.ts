import { ErrorReason, type WorkflowRef } from "@emprops/contracts";
import { invalidArgument, notFound } from "@emprops/platform";
import type { Kysely } from "kysely";
import { writeAudit } from "../db/queries/audit.js";
import { findVisibleLora, type LoraRow, updateLoraRow } from "../db/queries/loras.js";
import { workflowsUsing } from "../db/queries/usage.js";
import type { Database, LoraGenOutData } from "../db/schema/index.js";
import type { AppContext } from "../context.js";
import { mergeMetadata, toWorkflowRef } from "./lora-message.js";

/** The one answer for a missing LoRA and for someone else's: the two must be indistinguishable. */
export function loraNotFound(loraId: string) {
  return notFound(ErrorReason.LORA_NOT_FOUND, `LoRA with ID ${loraId} not found or access denied`, {
    lora_id: loraId,
  });
}

/** The caller's own visible LoRA with its usage, or LORA_NOT_FOUND. */
export async function findOwnLora(
  db: Kysely<Database>,
  userId: string,
  loraId: string,
  opts: { forUpdate?: boolean } = {},
): Promise<LoraRow> {
  const row = await findVisibleLora(db, userId, loraId, opts);
  if (!row) throw loraNotFound(loraId);
  return row;
}

/** The workflows that used a LoRA, most recent first, as messages. */
export async function workflowRefs(db: Kysely<Database>, loraId: string): Promise<WorkflowRef[]> {
  return (await workflowsUsing(db, loraId)).map(toWorkflowRef);
}

/** The fields UpdateLora may change, each validated (undefined: leave as it is). */
export interface LoraEdit {
  fields: string[];
  name?: { name: string; extension: string };
  tags?: string[];
  description?: string;
  triggerWords?: string[];
}

/**
 * Applies an edit to the caller's own LoRA under its row lock. The extension
 * may not change; a cleared description or trigger-word list falls back to
 * what the file says.
 */
export function editLora(ctx: AppContext, userId: string, loraId: string, edit: LoraEdit): Promise<LoraRow> {
  const now = ctx.clock.now();
  return ctx.db.transaction().execute(async (trx) => {
    const current = await findOwnLora(trx, userId, loraId, { forUpdate: true });
    const data: LoraGenOutData = current.gen_out_data ?? {};
    if (edit.name) {
      const currentExtension = current.name.slice(current.name.lastIndexOf(".") + 1).toLowerCase();
      if (edit.name.extension !== currentExtension) {
        throw invalidArgument(
          ErrorReason.INVALID_NAME,
          `the extension cannot change: the file is .${currentExtension}, so the new name must end in .${currentExtension}`,
          {
            field: "name",
            extension: currentExtension,
          },
        );
      }
    }
    const userMetadata = { ...(data.user_metadata ?? {}) };
    if (edit.description !== undefined) {
      if (edit.description) userMetadata.description = edit.description;
      else delete userMetadata.description;
    }
    if (edit.triggerWords !== undefined) {
      if (edit.triggerWords.length > 0) userMetadata.trigger_words = edit.triggerWords;
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
    await updateLoraRow(trx, loraId, { genOut, name: edit.name?.name, tags: edit.tags });
    await writeAudit(trx, now, [
      {
        actorId: userId,
        actorRole: "user",
        action: "lora.update",
        userId,
        loraId,
        details: { fields: edit.fields, ...(edit.name ? { name: edit.name.name } : {}) },
      },
    ]);
    return findOwnLora(trx, userId, loraId);
  });
}
