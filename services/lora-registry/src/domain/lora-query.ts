import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ErrorReason, type WorkflowRef, WorkflowRefSchema } from "@emprops/contracts";
import { notFound } from "@emprops/platform";
import { type Kysely, sql } from "kysely";
import type { Database } from "../db/schema/index.js";
import type { LoraRow } from "./lora-message.js";

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
  let q = db
    .selectFrom("flat_file as f")
    .leftJoin("lora_usage as u", "u.lora_id", "f.id")
    .select([
      "f.id",
      "f.user_id",
      "f.name",
      "f.url",
      "f.created_at",
      "f.tags",
      "f.gen_out_data",
      "u.usage_count",
      "u.last_used_at",
    ])
    .where("f.id", "=", loraId)
    .where("f.user_id", "=", userId)
    .where(sql<boolean>`'lora' = ANY (f.tags)`)
    .where(sql<boolean>`f.hidden IS NOT TRUE`);
  if (opts.forUpdate) q = q.forUpdate("f");
  const row = await q.executeTakeFirst();
  if (!row) throw loraNotFound(loraId);
  return row;
}

/** The workflows that used a LoRA, most recent first. */
export async function workflowsUsing(db: Kysely<Database>, loraId: string, limit = 100): Promise<WorkflowRef[]> {
  const rows = await db
    .selectFrom("lora_workflow_usage")
    .selectAll()
    .where("lora_id", "=", loraId)
    .orderBy("last_used_at", "desc")
    .orderBy("workflow_id")
    .limit(limit)
    .execute();
  return rows.map((w) =>
    create(WorkflowRefSchema, {
      id: w.workflow_id,
      name: w.workflow_name,
      useCount: BigInt(w.use_count),
      lastUsedAt: timestampFromDate(w.last_used_at),
    }),
  );
}

export interface LoraSizeRow {
  id: string;
  name: string;
  size_bytes: string;
  pending: boolean;
  last_used_at: Date | null;
}

/** Every LoRA counted against a user's quota (visible and pending), largest first. */
export async function loraSizes(db: Kysely<Database>, userId: string): Promise<LoraSizeRow[]> {
  const res = await sql<LoraSizeRow>`
    SELECT f.id, f.name, lora_size_bytes(f.gen_out_data) AS size_bytes, false AS pending, u.last_used_at
    FROM flat_file f LEFT JOIN lora_usage u ON u.lora_id = f.id
    WHERE f.user_id = ${userId} AND 'lora' = ANY (f.tags) AND f.hidden IS NOT TRUE
    UNION ALL
    SELECT f.id, f.name, s.declared_size_bytes, true, NULL
    FROM lora_upload s JOIN flat_file f ON f.id = s.lora_id
    WHERE s.user_id = ${userId} AND s.state = 'pending'
    ORDER BY size_bytes DESC, id`.execute(db);
  return res.rows;
}
