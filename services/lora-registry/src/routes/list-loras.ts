import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { ErrorReason, ListLorasResponseSchema, LoraSortField, type LoraService, SortOrder } from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";
import { type RawBuilder, sql } from "kysely";
import { userOf } from "../domain/caller.js";
import { toLora } from "../domain/lora-message.js";
import { decodePageToken, encodePageToken, queryFingerprint } from "../domain/page-token.js";
import { parsePageSize, parseShortText, parseTags } from "../domain/validate.js";
import type { LoraGenOutData } from "../db/schema/index.js";
import type { AppContext } from "../context.js";
import { withSpan } from "../telemetry.js";

const DEFAULT_PAGE = 50;
const MAX_PAGE = 200;
const MAX_SEARCH = 255;

interface SortSpec {
  /** Must match the expression of the partial index for this sort. */
  key: RawBuilder<unknown>;
  /** The key's SQL type, to read a cursor back. */
  type: RawBuilder<unknown>;
  /** What a cursor's key must look like. */
  pattern: RegExp;
}

const SORTS: Record<LoraSortField, SortSpec> = {
  [LoraSortField.UNSPECIFIED]: {
    key: sql`coalesce(f.created_at, 'epoch'::timestamp)`,
    type: sql`timestamp`,
    pattern: /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})?$/,
  },
  [LoraSortField.CREATED_AT]: {
    key: sql`coalesce(f.created_at, 'epoch'::timestamp)`,
    type: sql`timestamp`,
    pattern: /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})?$/,
  },
  [LoraSortField.NAME]: { key: sql`lower(f.name)`, type: sql`text`, pattern: /^[\s\S]{0,1024}$/ },
  [LoraSortField.SIZE]: { key: sql`lora_size_bytes(f.gen_out_data)`, type: sql`bigint`, pattern: /^-?\d{1,19}$/ },
};

/** `%term%` for LIKE with the term's own %, _ and \ taken literally. */
function containsPattern(term: string): string {
  return `%${term.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

export function listLoras(ctx: AppContext): Partial<ServiceImpl<typeof LoraService>> {
  return {
    async listLoras(req, hctx) {
      const userId = userOf(hctx);
      const pageSize = parsePageSize(req.pageSize, DEFAULT_PAGE, MAX_PAGE);
      if (!Number.isInteger(req.skip) || req.skip < 0) {
        throw invalidArgument(ErrorReason.INVALID_REQUEST, `skip must not be negative, got ${req.skip}`, {
          field: "skip",
        });
      }
      const sort = SORTS[req.sort];
      if (!sort) {
        throw invalidArgument(ErrorReason.INVALID_SORT, `unknown sort field ${req.sort}`, { field: "sort" });
      }
      if (!(req.order in SortOrder)) {
        throw invalidArgument(ErrorReason.INVALID_SORT, `unknown sort order ${req.order}`, { field: "order" });
      }
      const search = parseShortText(req.search, "search", MAX_SEARCH).trim();
      const tags = parseTags(req.tags).sort();
      const descending = req.order !== SortOrder.ASC;
      const fingerprint = queryFingerprint([userId, search, tags, req.sort || LoraSortField.CREATED_AT, descending]);
      const cursor = req.pageToken ? decodePageToken(req.pageToken, fingerprint, sort.pattern) : undefined;

      let base = ctx.db
        .selectFrom("flat_file as f")
        .where("f.user_id", "=", userId)
        .where(sql<boolean>`'lora' = ANY (f.tags)`)
        .where(sql<boolean>`f.hidden IS NOT TRUE`);
      if (search) base = base.where(sql<boolean>`lower(f.name) LIKE lower(${containsPattern(search)}) ESCAPE '\\'`);
      if (tags.length > 0) base = base.where(sql<boolean>`f.tags @> ${tags}::text[]`);

      let page = base.leftJoin("lora_usage as u", "u.lora_id", "f.id").select([
        "f.id",
        "f.user_id",
        "f.name",
        "f.url",
        "f.created_at",
        "f.tags",
        "u.usage_count",
        "u.last_used_at",
        // The raw header map can be large; lists leave it out.
        sql<LoraGenOutData | null>`f.gen_out_data - 'extracted_metadata'`.as("gen_out_data"),
        sql<string>`(${sort.key})::text`.as("sort_key"),
      ]);
      if (cursor) {
        const after = sql`(${cursor.key}::${sort.type}, ${cursor.id}::bigint)`;
        page = page.where(
          descending ? sql<boolean>`(${sort.key}, f.id) < ${after}` : sql<boolean>`(${sort.key}, f.id) > ${after}`,
        );
      }
      const direction = descending ? "desc" : "asc";
      page = page
        .orderBy(sort.key, direction)
        .orderBy("f.id", direction)
        .offset(req.skip)
        .limit(pageSize + 1);

      const [rows, total] = await withSpan(
        "list_loras",
        { "lora.search": search !== "", "lora.page_size": pageSize },
        () => Promise.all([page.execute(), base.select(sql<string>`count(*)`.as("n")).executeTakeFirstOrThrow()]),
      );
      const visible = rows.slice(0, pageSize);
      const last = visible[visible.length - 1];
      return create(ListLorasResponseSchema, {
        loras: visible.map((r) => toLora(r)),
        nextPageToken:
          rows.length > pageSize && last ? encodePageToken(fingerprint, { key: last.sort_key, id: last.id }) : "",
        totalSize: Number(total.n),
      });
    },
  };
}
