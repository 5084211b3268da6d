import type { ContainerListBlobFlatSegmentResponse } from "@azure/storage-blob";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  BlobArea,
  type BlobGatewayService,
  ErrorReason,
  type ListedBlob,
  ListedBlobKind,
  ListedBlobSchema,
} from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";
import type { AppContext } from "../context.js";
import { parseUserContainerPath, STAGING_PREFIX, USERS_PREFIX } from "../storage/blob-paths.js";
import { bareEtag } from "../storage/staging.js";
import { storageError } from "../storage/storage-errors.js";
import { inSpan } from "../telemetry.js";

const DEFAULT_PAGE = 1000;
/** Blob Storage's own page limit (List Blobs maxresults). */
const MAX_PAGE = 5000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** One page of users/ or staging/ with what each name identifies. */
export function listBlobs(ctx: AppContext): Partial<ServiceImpl<typeof BlobGatewayService>> {
  return {
    async listBlobs(req) {
      const prefix = listingPrefix(req.area, req.userId);
      if (req.pageSize < 0) {
        throw invalidArgument(ErrorReason.INVALID_PAGE_SIZE, `page_size must not be negative, got ${req.pageSize}`, {
          field: "page_size",
        });
      }
      const pageSize = Math.min(req.pageSize || DEFAULT_PAGE, MAX_PAGE);
      const marker = req.pageToken ? decodeToken(req.pageToken, prefix) : undefined;
      return inSpan("blob.list", { "blob.prefix": prefix }, async () => {
        try {
          const pages = ctx.storage.userContainer
            .listBlobsFlat({
              prefix,
              includeMetadata: true,
              // A staging blob with staged blocks only is listed too (the sweep seals it).
              includeUncommitedBlobs: req.area === BlobArea.STAGING,
            })
            .byPage({ maxPageSize: pageSize, continuationToken: marker });
          const first = await pages.next();
          const page: ContainerListBlobFlatSegmentResponse | undefined = first.done ? undefined : first.value;
          const items = page?.segment.blobItems ?? [];
          const next = page?.continuationToken;
          return {
            blobs: items.map((b) =>
              listed(b.name, {
                size: b.properties.contentLength ?? 0,
                etag: bareEtag(b.properties.etag),
                lastModified: b.properties.lastModified,
                metadata: b.metadata ?? {},
                leased: b.properties.leaseState === "leased",
              }),
            ),
            nextPageToken: next ? encodeToken(prefix, next) : "",
          };
        } catch (err) {
          throw storageError(err, prefix);
        }
      });
    },
  };
}

function listingPrefix(area: BlobArea, userId: string): string {
  const root = area === BlobArea.USERS ? USERS_PREFIX : area === BlobArea.STAGING ? STAGING_PREFIX : undefined;
  if (!root) {
    throw invalidArgument(ErrorReason.INVALID_REQUEST, "area must be BLOB_AREA_USERS or BLOB_AREA_STAGING", {
      field: "area",
    });
  }
  if (!userId) return root;
  if (!UUID.test(userId)) throw invalidArgument(ErrorReason.INVALID_ID, "user_id must be a UUID", { field: "user_id" });
  return `${root}${userId.toLowerCase()}/`;
}

function listed(
  path: string,
  p: { size: number; etag: string; lastModified: Date; metadata: Record<string, string>; leased: boolean },
): ListedBlob {
  const named = parseUserContainerPath(path);
  const base = {
    blobPath: path,
    sizeBytes: BigInt(p.size),
    etag: p.etag,
    lastModified: timestampFromDate(p.lastModified),
    metadata: p.metadata,
    leased: p.leased,
  };
  switch (named?.kind) {
    case "user":
      return create(ListedBlobSchema, {
        ...base,
        kind: ListedBlobKind.LORA,
        userId: named.userId,
        loraId: named.loraId,
        extension: named.extension,
      });
    case "preview":
      return create(ListedBlobSchema, {
        ...base,
        kind: ListedBlobKind.PREVIEW,
        userId: named.userId,
        loraId: named.loraId,
      });
    case "staged":
      return create(ListedBlobSchema, {
        ...base,
        kind: ListedBlobKind.STAGED,
        userId: named.userId,
        uploadId: named.uploadId,
        extension: named.extension,
      });
    default:
      return create(ListedBlobSchema, { ...base, kind: ListedBlobKind.UNSPECIFIED, userId: ownerOf(path) });
  }
}

/** The user segment of users/{user}/… or staging/{user}/… when it is a UUID. */
function ownerOf(path: string): string {
  const segment = path.split("/")[1] ?? "";
  return UUID.test(segment) ? segment.toLowerCase() : "";
}

/** The storage continuation marker, bound to its prefix so a token only continues its own listing. */
function encodeToken(prefix: string, marker: string): string {
  return Buffer.from(JSON.stringify({ p: prefix, m: marker })).toString("base64url");
}

function decodeToken(token: string, prefix: string): string {
  const bad = (why: string) =>
    invalidArgument(ErrorReason.INVALID_PAGE_TOKEN, `page_token ${why}`, { field: "page_token" });
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw bad("is malformed");
  }
  const b = body as { p?: unknown; m?: unknown } | null;
  if (!b || typeof b.p !== "string" || typeof b.m !== "string" || b.m === "") throw bad("is malformed");
  if (b.p !== prefix) throw bad("belongs to a different listing; start again without a token");
  return b.m;
}
