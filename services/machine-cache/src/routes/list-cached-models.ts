import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  type CachedModel,
  CachedModelSchema,
  ErrorReason,
  ListCachedModelsResponseSchema,
  type MachineCacheService,
} from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";
import { relativeToLoraDir } from "../cache/cache-layout.js";
import type { AppContext } from "../context.js";
import { findLoraFileByPath, referencesOfContent } from "../db/lora-files.js";
import { type ModelRow, modelsPage } from "../db/models.js";
import type { Db } from "../db/open-database.js";
import { parsePythonIso } from "../db/python-time.js";
import { checkLength } from "./field-checks.js";

const DEFAULT_PAGE = 100;
const MAX_PAGE = 1000;

interface Cursor {
  /** Last id of the previous page. */
  a: number;
  /** The model_type filter the token was issued for. */
  t: string;
}

/** ListCachedModels: the models table for operators, by id, keyset-paged. */
export function listCachedModels(ctx: AppContext): Partial<ServiceImpl<typeof MachineCacheService>> {
  return {
    listCachedModels(req) {
      if (req.pageSize < 0) {
        throw invalidArgument(ErrorReason.INVALID_PAGE_SIZE, "page_size must not be negative", {
          page_size: req.pageSize,
        });
      }
      checkLength("model_type", req.modelType, 64);
      const pageSize = Math.min(req.pageSize || DEFAULT_PAGE, MAX_PAGE);
      const afterId = req.pageToken ? readCursor(req.pageToken, req.modelType) : 0;
      const rows = modelsPage(ctx.db, { afterId, modelType: req.modelType, limit: pageSize + 1 });
      const page = rows.slice(0, pageSize);
      const last = page[page.length - 1];
      return create(ListCachedModelsResponseSchema, {
        models: page.map((row) => toCachedModel(ctx.db, row, ctx.cfg.loraDir)),
        nextPageToken: rows.length > pageSize && last ? writeCursor({ a: last.id, t: req.modelType }) : "",
      });
    },
  };
}

function toCachedModel(db: Db, row: ModelRow, loraDir: string): CachedModel {
  const ours = findLoraFileByPath(db, row.path);
  const lastUsed = parsePythonIso(row.last_used);
  const downloaded = parsePythonIso(row.download_date);
  return create(CachedModelSchema, {
    id: BigInt(row.id),
    path: row.path,
    modelType: row.model_type ?? "",
    filename: row.filename ?? "",
    sizeBytes: BigInt(row.size_bytes ?? 0),
    lastUsed: lastUsed ? timestampFromDate(lastUsed) : undefined,
    useCount: BigInt(row.use_count ?? 0),
    downloadDate: downloaded ? timestampFromDate(downloaded) : undefined,
    protected: !!row.protected,
    isIgnore: !!row.is_ignore,
    relativePath: relativeToLoraDir(loraDir, row.path) ?? "",
    sha256: ours?.sha256 ?? "",
    linkedPaths: ours ? Math.max(1, referencesOfContent(db, ours.content_id)) : 0,
  });
}

function writeCursor(cursor: Cursor): string {
  return Buffer.from(JSON.stringify(cursor)).toString("base64url");
}

function readCursor(token: string, modelType: string): number {
  let cursor: Cursor | undefined;
  try {
    cursor = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as Cursor;
  } catch {
    cursor = undefined;
  }
  if (!cursor || !Number.isSafeInteger(cursor.a) || cursor.a < 0 || cursor.t !== modelType) {
    throw invalidArgument(ErrorReason.INVALID_PAGE_TOKEN, "page_token was not issued for this query");
  }
  return cursor.a;
}
