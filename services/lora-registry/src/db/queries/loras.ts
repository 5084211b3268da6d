import { type Kysely, type RawBuilder, type Selectable, sql } from "kysely";
import { toDbTimestamp } from "../pg-types.js";
import type { Database, FlatFileTable, LoraGenOutData, LoraUsageTable, StoredPreview } from "../schema/index.js";

// flat_file holds more than LoRAs: every query here reads it as `f`.

/** A LoRA row (tagged "lora"), hidden or not. */
export const isLora = sql<boolean>`'lora' = ANY (f.tags)`;

/** A LoRA its owner sees: tagged "lora" and not hidden (the predicate of the partial indexes). */
export const isVisibleLora = sql<boolean>`${isLora} AND f.hidden IS NOT TRUE`;

/** flat_file as f, only the visible LoRAs. */
export function visibleLoras(db: Kysely<Database>) {
  return db.selectFrom("flat_file as f").where(isVisibleLora);
}

/** What a Lora message is built from, but gen_out_data (which lists trim). */
const LORA_FIELDS = ["id", "user_id", "name", "url", "created_at", "tags"] as const;
/** The columns a Lora message is built from. */
export const LORA_COLUMNS = [...LORA_FIELDS, "gen_out_data"] as const;
const LORA_COLUMNS_OF_F = LORA_COLUMNS.map((c) => `f.${c}` as const);

type FlatFile = Selectable<FlatFileTable>;
type Usage = Pick<Selectable<LoraUsageTable>, "usage_count" | "last_used_at">;

/** A LoRA as messages show it, with its usage where the query joins it. */
export type LoraRow = Pick<FlatFile, (typeof LORA_COLUMNS)[number]> & { [K in keyof Usage]?: Usage[K] | null };

/** What a blob path and a deletion event are built from. */
export type LoraBlobRow = Pick<FlatFile, "id" | "user_id" | "name" | "gen_out_data">;

/** The user's visible LoRA with its usage (locked for update when asked). */
export async function findVisibleLora(
  db: Kysely<Database>,
  userId: string,
  loraId: string,
  opts: { forUpdate?: boolean } = {},
): Promise<LoraRow | undefined> {
  let q = visibleLoras(db)
    .leftJoin("lora_usage as u", "u.lora_id", "f.id")
    .select([...LORA_COLUMNS_OF_F, "u.usage_count", "u.last_used_at"])
    .where("f.id", "=", loraId)
    .where("f.user_id", "=", userId);
  if (opts.forUpdate) q = q.forUpdate("f");
  return q.executeTakeFirst();
}

/** Those of the ids that are the user's visible LoRAs. */
export function findVisibleLoras(db: Kysely<Database>, userId: string, loraIds: string[]): Promise<LoraBlobRow[]> {
  if (loraIds.length === 0) return Promise.resolve([]);
  return visibleLoras(db)
    .select(["f.id", "f.user_id", "f.name", "f.gen_out_data"])
    .where("f.id", "in", loraIds)
    .where("f.user_id", "=", userId)
    .execute();
}

/** The owner of each of the ids that is a LoRA (hidden ones included). */
export async function loraOwners(db: Kysely<Database>, loraIds: string[]): Promise<Map<string, string>> {
  if (loraIds.length === 0) return new Map();
  const rows = await db
    .selectFrom("flat_file as f")
    .select(["f.id", "f.user_id"])
    .where("f.id", "in", loraIds)
    .where(isLora)
    .execute();
  return new Map(rows.map((r) => [r.id, r.user_id]));
}

export type LoraSort = "created_at" | "name" | "size" | "last_used";

interface SortSpec {
  /** Must match the expression of the partial index for this sort (last use: one user's rows, sorted). */
  key: RawBuilder<unknown>;
  /** The key's SQL type, to read a cursor back. */
  type: RawBuilder<unknown>;
}

const SORTS: Record<LoraSort, SortSpec> = {
  created_at: { key: sql`coalesce(f.created_at, 'epoch'::timestamp)`, type: sql`timestamp` },
  name: { key: sql`lower(f.name)`, type: sql`text` },
  size: { key: sql`lora_size_bytes(f.gen_out_data)`, type: sql`bigint` },
  // Microseconds since the epoch (independent of the session's time zone); never used is -1, the oldest.
  last_used: {
    key: sql`coalesce((extract(epoch FROM u.last_used_at) * 1000000)::bigint, -1)`,
    type: sql`bigint`,
  },
};

/** What a page token's sort key must look like, per sort. */
export const SORT_KEY_PATTERNS: Record<LoraSort, RegExp> = {
  created_at: /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})?$/,
  name: /^[\s\S]{0,1024}$/,
  size: /^-?\d{1,19}$/,
  last_used: /^-?\d{1,19}$/,
};

export interface LoraListQuery {
  userId: string;
  /** Case-insensitive substring of the name, a tag, a trigger word or the description; "" for all. */
  search: string;
  /** Rows must carry every one of these tags. */
  tags: string[];
  /** Only LoRAs last used before this time or never used. */
  unusedSince?: Date;
  /** Only LoRAs of this base model (case-insensitive); "" for all. */
  baseModel: string;
  sort: LoraSort;
  descending: boolean;
  /** Sort key (as text) and id of the last row of the previous page. */
  after?: { key: string; id: string };
  skip: number;
  limit: number;
}

/** `%term%` for LIKE with the term's own %, _ and \ taken literally. */
function containsPattern(term: string): string {
  return `%${term.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

/** What search reads: must match the expression of flat_file_lora_search_idx (migration 009). */
const searchText = sql<string>`lora_search_text(f.name, f.tags, f.gen_out_data)`;

/** The base query of a listing: the user's visible LoRAs that match. */
function matching(db: Kysely<Database>, q: LoraListQuery) {
  let base = visibleLoras(db).where("f.user_id", "=", q.userId);
  if (q.search) base = base.where(sql<boolean>`${searchText} LIKE lower(${containsPattern(q.search)}) ESCAPE '\\'`);
  if (q.tags.length > 0) base = base.where(sql<boolean>`f.tags @> ${q.tags}::text[]`);
  if (q.baseModel) {
    base = base.where(sql<boolean>`lower(f.gen_out_data #>> '{lora_metadata,base_model}') = lower(${q.baseModel})`);
  }
  if (q.unusedSince) {
    const since = q.unusedSince;
    base = base.where(
      sql<boolean>`NOT EXISTS (SELECT 1 FROM lora_usage used WHERE used.lora_id = f.id AND used.last_used_at >= ${since})`,
    );
  }
  return base;
}

/**
 * One keyset page (limit rows, in the order of one partial index) with its
 * sort key as text, and the count of every match; the two run side by side.
 */
export async function listVisibleLoras(db: Kysely<Database>, q: LoraListQuery) {
  const sort = SORTS[q.sort];
  const base = matching(db, q);
  let page = base.leftJoin("lora_usage as u", "u.lora_id", "f.id").select([
    ...LORA_FIELDS.map((c) => `f.${c}` as const),
    "u.usage_count",
    "u.last_used_at",
    // The raw header map can be large; lists leave it out.
    sql<LoraGenOutData | null>`f.gen_out_data - 'extracted_metadata'`.as("gen_out_data"),
    sql<string>`(${sort.key})::text`.as("sort_key"),
  ]);
  if (q.after) {
    const after = sql`(${q.after.key}::${sort.type}, ${q.after.id}::bigint)`;
    page = page.where(
      q.descending ? sql<boolean>`(${sort.key}, f.id) < ${after}` : sql<boolean>`(${sort.key}, f.id) > ${after}`,
    );
  }
  const direction = q.descending ? "desc" : "asc";
  page = page.orderBy(sort.key, direction).orderBy("f.id", direction).offset(q.skip).limit(q.limit);
  const [rows, total] = await Promise.all([
    page.execute(),
    base.select(sql<string>`count(*)`.as("n")).executeTakeFirstOrThrow(),
  ]);
  return { rows, total: Number(total.n) };
}

/** The hidden row of a new upload; visible once its upload completes. */
export function insertPendingLora(
  db: Kysely<Database>,
  row: { userId: string; name: string; tags: string[]; genOut: LoraGenOutData; createdAt: Date },
): Promise<LoraRow> {
  return db
    .insertInto("flat_file")
    .values({
      created_at: toDbTimestamp(row.createdAt),
      hidden: true,
      user_id: row.userId,
      name: row.name,
      gen_out_data: JSON.stringify(row.genOut),
      mime_type: "application/octet-stream",
      tags: ["lora", ...row.tags],
    })
    .returning(LORA_COLUMNS)
    .executeTakeFirstOrThrow();
}

/** Rewrites a LoRA row: gen_out_data always, url, name, tags and visibility when given. */
export function updateLoraRow(
  db: Kysely<Database>,
  loraId: string,
  change: { genOut: LoraGenOutData; url?: string; name?: string; tags?: string[]; visible?: boolean },
): Promise<LoraRow> {
  return db
    .updateTable("flat_file")
    .set({
      gen_out_data: JSON.stringify(change.genOut),
      ...(change.url !== undefined ? { url: change.url } : {}),
      ...(change.name !== undefined ? { name: change.name } : {}),
      ...(change.tags !== undefined ? { tags: ["lora", ...change.tags] } : {}),
      ...(change.visible ? { hidden: false } : {}),
    })
    .where("id", "=", loraId)
    .returning(LORA_COLUMNS)
    .executeTakeFirstOrThrow();
}

export async function genOutDataOf(db: Kysely<Database>, loraId: string): Promise<LoraGenOutData> {
  const row = await db
    .selectFrom("flat_file")
    .select("gen_out_data")
    .where("id", "=", loraId)
    .executeTakeFirstOrThrow();
  return row.gen_out_data ?? {};
}

/** Records (or, with undefined, forgets) the user's visible LoRA's preview; undefined when there is no such LoRA. */
export async function setPreviewOf(
  db: Kysely<Database>,
  userId: string,
  loraId: string,
  preview: StoredPreview | undefined,
): Promise<LoraRow | undefined> {
  const data =
    preview === undefined
      ? sql`coalesce(f.gen_out_data, '{}'::jsonb) - 'preview'`
      : sql`coalesce(f.gen_out_data, '{}'::jsonb) || jsonb_build_object('preview', ${JSON.stringify(preview)}::jsonb)`;
  const res = await sql<LoraRow>`
    UPDATE flat_file f SET gen_out_data = ${data}
    WHERE f.id = ${loraId} AND f.user_id = ${userId} AND ${isVisibleLora}
    RETURNING ${sql.join(LORA_COLUMNS_OF_F.map((c) => sql.ref(c)))}`.execute(db);
  return res.rows[0];
}

/** The previews recorded for those of the ids that are the user's visible LoRAs. */
export async function previewsOf(
  db: Kysely<Database>,
  userId: string,
  loraIds: string[],
): Promise<{ id: string; preview: StoredPreview }[]> {
  if (loraIds.length === 0) return [];
  return visibleLoras(db)
    .select(["f.id", sql<StoredPreview>`f.gen_out_data -> 'preview'`.as("preview")])
    .where("f.id", "in", loraIds)
    .where("f.user_id", "=", userId)
    .where(sql<boolean>`f.gen_out_data ? 'preview'`)
    .execute();
}

/** Hides the user's visible LoRA, stamped deleted_at; undefined when there is none. */
export async function hideVisibleLora(
  db: Kysely<Database>,
  userId: string,
  loraId: string,
  now: Date,
): Promise<LoraBlobRow | undefined> {
  const res = await sql<LoraBlobRow>`
    UPDATE flat_file f
    SET hidden = true,
        gen_out_data = coalesce(f.gen_out_data, '{}'::jsonb) || jsonb_build_object('deleted_at', ${now.toISOString()}::text)
    WHERE f.id = ${loraId} AND f.user_id = ${userId} AND ${isVisibleLora}
    RETURNING f.id, f.user_id, f.name, f.gen_out_data`.execute(db);
  return res.rows[0];
}

/** Hides every visible LoRA of the user, stamped deleted_at. */
export async function hideVisibleLorasOfUser(db: Kysely<Database>, userId: string, now: Date): Promise<LoraBlobRow[]> {
  const res = await sql<LoraBlobRow>`
    UPDATE flat_file f
    SET hidden = true,
        gen_out_data = coalesce(f.gen_out_data, '{}'::jsonb) || jsonb_build_object('deleted_at', ${now.toISOString()}::text)
    WHERE f.user_id = ${userId} AND ${isVisibleLora}
    RETURNING f.id, f.user_id, f.name, f.gen_out_data`.execute(db);
  return res.rows;
}

/** True when the user deleted this LoRA before (hidden with deleted_at). */
export async function wasDeleted(db: Kysely<Database>, userId: string, loraId: string): Promise<boolean> {
  const row = await db
    .selectFrom("flat_file as f")
    .select("f.id")
    .where("f.id", "=", loraId)
    .where("f.user_id", "=", userId)
    .where(sql<boolean>`${isLora} AND f.hidden IS TRUE AND f.gen_out_data ? 'deleted_at'`)
    .executeTakeFirst();
  return row !== undefined;
}

/** The rows of pending uploads cancelled with their account: aborted, stamped deleted_at (they stay hidden). */
export async function markPendingLorasDeleted(
  db: Kysely<Database>,
  loraIds: string[],
  now: Date,
): Promise<LoraBlobRow[]> {
  if (loraIds.length === 0) return [];
  const res = await sql<LoraBlobRow>`
    UPDATE flat_file f
    SET gen_out_data = coalesce(f.gen_out_data, '{}'::jsonb)
          || jsonb_build_object('validation_status', 'aborted', 'deleted_at', ${now.toISOString()}::text)
    WHERE f.id = ANY (${loraIds}::bigint[])
    RETURNING f.id, f.user_id, f.name, f.gen_out_data`.execute(db);
  return res.rows;
}

/** The row of an upload that ended unpublished: hidden, with how it ended. */
export async function markUploadEnded(
  db: Kysely<Database>,
  loraId: string,
  status: "rejected" | "aborted" | "expired",
): Promise<void> {
  await sql`
    UPDATE flat_file f
    SET hidden = true,
        gen_out_data = coalesce(f.gen_out_data, '{}'::jsonb) || jsonb_build_object('validation_status', ${status}::text)
    WHERE f.id = ${loraId}`.execute(db);
}
