import { create } from "@bufbuild/protobuf";
import { ErrorReason, type LoraPreviewUrl, LoraPreviewUrlSchema } from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";
import { writeAudit } from "../db/queries/audit.js";
import { type LoraRow, previewsOf, setPreviewOf } from "../db/queries/loras.js";
import type { StoredPreview } from "../db/schema/index.js";
import type { AppContext } from "../context.js";
import { viaGateway } from "./blob.js";
import { toPreviewMessage } from "./lora-message.js";
import { findOwnLora, loraNotFound } from "./loras.js";

/** The largest preview image accepted (the gateway applies the same limit). */
export const MAX_PREVIEW_BYTES = 2 * 1024 * 1024;
/** Preview URLs per GetLoraPreviewUrls call: a page of ListLoras at most. */
export const MAX_PREVIEW_URLS = 200;
/** Targets per CreateDownloadUrls call of the gateway. */
const GATEWAY_BATCH = 64;

/** An image's size, refused before anything is sent on. */
export function checkPreviewSize(image: Uint8Array): void {
  if (image.length === 0) {
    throw invalidArgument(ErrorReason.INVALID_IMAGE, "image is required: a PNG, JPEG or WebP file", {
      field: "image",
    });
  }
  if (image.length > MAX_PREVIEW_BYTES) {
    throw invalidArgument(
      ErrorReason.FILE_TOO_LARGE,
      `the image has ${image.length} bytes; a preview may have at most ${MAX_PREVIEW_BYTES} (2 MiB)`,
      { field: "image", size_bytes: image.length, max_bytes: MAX_PREVIEW_BYTES },
    );
  }
}

/**
 * Stores an image as the caller's LoRA's preview: the gateway checks and
 * re-encodes it, then the row records it. No lock is held across the call;
 * a LoRA deleted meanwhile keeps no preview (the deletion event removes the
 * blob next to it).
 */
export async function setPreview(
  ctx: AppContext,
  userId: string,
  loraId: string,
  image: Uint8Array,
  source: StoredPreview["source"],
): Promise<LoraRow> {
  checkPreviewSize(image);
  await findOwnLora(ctx.db, userId, loraId);
  const stored = await viaGateway(ctx.logger, "StorePreview", () =>
    ctx.blobGateway.storePreview({ blob: { userId, loraId }, image }),
  );
  const now = ctx.clock.now();
  const preview: StoredPreview = {
    source,
    width: stored.width,
    height: stored.height,
    size_bytes: Number(stored.sizeBytes),
    sha256: stored.sha256,
    updated_at: now.toISOString(),
  };
  await ctx.db.transaction().execute(async (trx) => {
    if (!(await setPreviewOf(trx, userId, loraId, preview))) throw loraNotFound(loraId);
    await writeAudit(trx, now, [
      {
        actorId: userId,
        actorRole: "user",
        action: "lora.preview.set",
        userId,
        loraId,
        details: { source, source_format: stored.sourceFormat, width: stored.width, height: stored.height },
      },
    ]);
  });
  return findOwnLora(ctx.db, userId, loraId);
}

/** Removes the caller's LoRA's preview (a LoRA without one stays as it is). */
export async function removePreview(ctx: AppContext, userId: string, loraId: string): Promise<LoraRow> {
  const row = await findOwnLora(ctx.db, userId, loraId);
  if (!row.gen_out_data?.preview) return row;
  await viaGateway(ctx.logger, "DeletePreview", () => ctx.blobGateway.deletePreview({ blob: { userId, loraId } }));
  const now = ctx.clock.now();
  await ctx.db.transaction().execute(async (trx) => {
    if (!(await setPreviewOf(trx, userId, loraId, undefined))) throw loraNotFound(loraId);
    await writeAudit(trx, now, [
      { actorId: userId, actorRole: "user", action: "lora.preview.delete", userId, loraId, details: {} },
    ]);
  });
  return findOwnLora(ctx.db, userId, loraId);
}

/** Signed URLs of the previews of those ids that are the caller's LoRAs with a preview, in request order. */
export async function previewUrls(ctx: AppContext, userId: string, loraIds: string[]): Promise<LoraPreviewUrl[]> {
  const found = new Map((await previewsOf(ctx.db, userId, loraIds)).map((r) => [r.id, r.preview]));
  const ids = loraIds.filter((id, i) => found.has(id) && loraIds.indexOf(id) === i);
  const batches: string[][] = [];
  for (let i = 0; i < ids.length; i += GATEWAY_BATCH) batches.push(ids.slice(i, i + GATEWAY_BATCH));
  const signed = await Promise.all(
    batches.map((batch) =>
      viaGateway(ctx.logger, "CreateDownloadUrls", () =>
        ctx.blobGateway.createDownloadUrls({
          targets: batch.map((loraId) => ({
            target: { case: "loraPreview" as const, value: { userId, loraId } },
          })),
          ttlSeconds: ctx.cfg.downloadUrlTtlSeconds,
        }),
      ),
    ),
  );
  const urls = signed.flatMap((r) => r.urls);
  return ids.map((loraId, i) =>
    create(LoraPreviewUrlSchema, {
      loraId,
      url: urls[i]!.url,
      expireTime: urls[i]!.expireTime,
      preview: toPreviewMessage(found.get(loraId)),
    }),
  );
}

const THUMBNAIL = /^data:image\/(png|jpe?g|webp);base64,([A-Za-z0-9+/=\s]+)$/i;

/**
 * After an upload: the file's modelspec.thumbnail (a data URI in its
 * safetensors metadata) becomes the LoRA's preview. Best effort: a missing,
 * malformed or refused thumbnail leaves the LoRA without one, and the
 * upload stands.
 */
export async function adoptFileThumbnail(ctx: AppContext, userId: string, row: LoraRow): Promise<LoraRow> {
  const uri = row.gen_out_data?.extracted_metadata?.raw?.["modelspec.thumbnail"];
  if (!uri || row.gen_out_data?.preview) return row;
  const match = THUMBNAIL.exec(uri.trim());
  if (!match) {
    ctx.logger.info({ lora_id: row.id }, "modelspec.thumbnail is not a PNG, JPEG or WebP data URI; no preview");
    return row;
  }
  try {
    return await setPreview(ctx, userId, row.id, Buffer.from(match[2]!, "base64"), "file");
  } catch (err) {
    ctx.logger.warn({ err, lora_id: row.id }, "the file's thumbnail could not become its preview");
    return row;
  }
}
