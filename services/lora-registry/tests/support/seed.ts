import { createHash, randomUUID } from "node:crypto";
import { type Kysely, sql } from "kysely";
import { toDbTimestamp } from "../../src/db/pg-types.js";
import type { Database, LoraGenOutData } from "../../src/db/schema/index.js";

export interface SeedLora {
  userId: string;
  name?: string;
  sizeBytes?: number;
  createdAt?: Date;
  /** Extra tags besides "lora". */
  tags?: string[];
  hidden?: boolean;
  /** A flat_file row of the same user that is not a LoRA (an image, say). */
  notLora?: boolean;
  /** Default "SDXL". */
  baseModel?: string;
  /** Default ["seeded"]. */
  triggerWords?: string[];
  description?: string;
  /** Last use by a machine (a lora_usage row); never used without it. */
  lastUsedAt?: Date;
}

let counter = 0;

/**
 * Rows as a completed upload leaves them (or as the platform's other code
 * writes flat_file), for tests that need many LoRAs without uploading them.
 * A user's ledger, if it exists, is moved along as an upload would.
 */
export async function seedLoras(db: Kysely<Database>, loras: SeedLora[]): Promise<string[]> {
  if (loras.length === 0) return [];
  const rows = loras.map((l) => {
    counter++;
    const name = l.name ?? `lora-${counter}.safetensors`;
    const size = l.sizeBytes ?? 1000 + counter;
    const metadata = {
      base_model: l.baseModel ?? "SDXL",
      trigger_words: l.triggerWords ?? ["seeded"],
      ...(l.description ? { description: l.description } : {}),
    };
    const data: LoraGenOutData = l.notLora
      ? { size_bytes: size }
      : {
          size_bytes: size,
          file_hash: `sha256:${createHash("sha256")
            .update(name + counter)
            .digest("hex")}`,
          lora_metadata: metadata,
          upload_source: "api",
          validation_status: "safe",
          format: "safetensors",
          extension: name.slice(name.lastIndexOf(".") + 1),
          extracted_metadata: { ...metadata, raw: { ss_network_dim: "32" } },
          user_metadata: {},
        };
    return {
      user_id: l.userId,
      name,
      created_at: toDbTimestamp(l.createdAt ?? new Date(Date.UTC(2026, 0, 1) + counter * 1000)),
      hidden: l.hidden ?? false,
      url: `https://example.invalid/users/${l.userId}/loras/${name}`,
      gen_out_data: JSON.stringify(data),
      mime_type: l.notLora ? "image/png" : "application/octet-stream",
      tags: l.notLora ? ["image", ...(l.tags ?? [])] : ["lora", ...(l.tags ?? [])],
    };
  });
  const inserted = await db.insertInto("flat_file").values(rows).returning("id").execute();
  const used = loras.flatMap((l, i) =>
    l.lastUsedAt ? [{ lora_id: inserted[i]!.id, user_id: l.userId, usage_count: 1, last_used_at: l.lastUsedAt }] : [],
  );
  if (used.length > 0) await db.insertInto("lora_usage").values(used).execute();
  const perUser = new Map<string, { bytes: number; count: number }>();
  loras.forEach((l, i) => {
    if (l.notLora || l.hidden) return;
    const t = perUser.get(l.userId) ?? { bytes: 0, count: 0 };
    t.bytes += JSON.parse(rows[i]!.gen_out_data).size_bytes as number;
    t.count++;
    perUser.set(l.userId, t);
  });
  for (const [userId, t] of perUser) {
    await sql`UPDATE lora_quota SET used_bytes = used_bytes + ${t.bytes}, used_count = used_count + ${t.count}
              WHERE user_id = ${userId}`.execute(db);
  }
  return inserted.map((r) => r.id);
}

/** A pending upload session with its hidden row, as CreateLoraUpload leaves it (reservation included). */
export async function seedPendingUpload(
  db: Kysely<Database>,
  userId: string,
  opts: { sizeBytes?: number; expiresAt?: Date; name?: string } = {},
): Promise<{ uploadId: string; loraId: string }> {
  const size = opts.sizeBytes ?? 4096;
  const name = opts.name ?? `pending-${++counter}.safetensors`;
  const row = await db
    .insertInto("flat_file")
    .values({
      user_id: userId,
      name,
      hidden: true,
      created_at: toDbTimestamp(new Date()),
      gen_out_data: JSON.stringify({ size_bytes: size, validation_status: "pending", extension: "safetensors" }),
      tags: ["lora"],
    })
    .returning("id")
    .executeTakeFirstOrThrow();
  const uploadId = randomUUID();
  await db
    .insertInto("lora_upload")
    .values({
      id: uploadId,
      user_id: userId,
      lora_id: row.id,
      state: "pending",
      declared_size_bytes: size,
      extension: "safetensors",
      expected_sha256: null,
      created_at: new Date(),
      expires_at: opts.expiresAt ?? new Date(Date.now() + 3600_000),
    })
    .execute();
  await sql`UPDATE lora_quota SET reserved_bytes = reserved_bytes + ${size}, reserved_count = reserved_count + 1
            WHERE user_id = ${userId}`.execute(db);
  return { uploadId, loraId: row.id };
}

const TABLES = [
  ["flat_file", "id"],
  ["lora_quota", "user_id"],
  ["lora_upload", "id"],
  ["lora_usage", "lora_id"],
  ["lora_workflow_usage", "lora_id, workflow_id"],
  ["lora_usage_batch", "batch_id"],
  ["lora_audit_event", "id"],
  ["lora_outbox", "id"],
  ["machine_cache_stats", "machine_id"],
] as const;

/** Every row of every registry table, to show that a refused call changed nothing. */
export async function snapshot(db: Kysely<Database>): Promise<string> {
  const parts: string[] = [];
  for (const [table, key] of TABLES) {
    const res = await sql<{ j: unknown }>`SELECT coalesce(json_agg(t ORDER BY ${sql.raw(key)}), '[]') AS j
                                          FROM ${sql.table(table)} t`.execute(db);
    parts.push(`${table}: ${JSON.stringify(res.rows[0]?.j)}`);
  }
  return parts.join("\n");
}
