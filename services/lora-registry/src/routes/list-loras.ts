import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { ListLorasResponseSchema, LoraSortField, type LoraService } from "@emprops/contracts";
import { listVisibleLoras, SORT_KEY_PATTERNS } from "../db/queries/loras.js";
import { userOf } from "../domain/caller.js";
import { toLora } from "../domain/lora-message.js";
import { decodePageToken, encodePageToken, queryFingerprint } from "../domain/page-token.js";
import { parseLoraSort, parsePageSize, parseSkip, parseTimestamp } from "../domain/listing-params.js";
import { parseShortText, parseTags } from "../domain/validate.js";
import type { AppContext } from "../context.js";
import { withSpan } from "../telemetry.js";

const DEFAULT_PAGE = 50;
const MAX_PAGE = 200;
const MAX_SEARCH = 255;
const MAX_BASE_MODEL = 64;

export function listLoras(ctx: AppContext): Partial<ServiceImpl<typeof LoraService>> {
  return {
    async listLoras(req, hctx) {
      const userId = userOf(hctx);
      const pageSize = parsePageSize(req.pageSize, DEFAULT_PAGE, MAX_PAGE);
      const skip = parseSkip(req.skip);
      const { sort, descending } = parseLoraSort(req.sort, req.order);
      const search = parseShortText(req.search, "search", MAX_SEARCH).trim();
      const tags = parseTags(req.tags).sort();
      const baseModel = parseShortText(req.baseModel, "base_model", MAX_BASE_MODEL).trim();
      const unusedSince = req.unusedSince ? parseTimestamp(req.unusedSince, "unused_since") : undefined;
      const fingerprint = queryFingerprint([
        userId,
        search,
        tags,
        req.sort || LoraSortField.CREATED_AT,
        descending,
        baseModel.toLowerCase(),
        unusedSince?.toISOString() ?? "",
      ]);
      const after = req.pageToken ? decodePageToken(req.pageToken, fingerprint, SORT_KEY_PATTERNS[sort]) : undefined;

      const query = {
        userId,
        search,
        tags,
        baseModel,
        unusedSince,
        sort,
        descending,
        after,
        skip,
        limit: pageSize + 1,
      };
      const { rows, total } = await withSpan(
        "list_loras",
        { "lora.search": search !== "", "lora.page_size": pageSize, "lora.sort": sort },
        () => listVisibleLoras(ctx.db, query),
      );
      const page = rows.slice(0, pageSize);
      const last = page[page.length - 1];
      return create(ListLorasResponseSchema, {
        loras: page.map((r) => toLora(r)),
        nextPageToken:
          rows.length > pageSize && last ? encodePageToken(fingerprint, { key: last.sort_key, id: last.id }) : "",
        totalSize: total,
      });
    },
  };
}
