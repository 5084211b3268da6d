import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { writeAudit } from "../db/queries/audit.js";
import type { AppContext } from "../context.js";
import { blobPathOf, userLoraBlob, viaGateway } from "./blob.js";
import { sha256Of, sizeOf } from "./lora-message.js";
import { findOwnLora } from "./loras.js";

export interface OwnerDownload {
  url: string;
  expireTime: Timestamp;
  fileName: string;
  sizeBytes: bigint;
  sha256: string;
}

/**
 * A read URL of the caller's own file as uploaded (its original extension),
 * answering with a Content-Disposition that names it; written to the audit
 * log. Another user's LoRA is LORA_NOT_FOUND, as a missing one.
 */
export async function ownerDownload(ctx: AppContext, userId: string, loraId: string): Promise<OwnerDownload> {
  const row = await findOwnLora(ctx.db, userId, loraId);
  const { extension, blobPath } = blobPathOf(row);
  const res = await viaGateway(ctx.logger, "CreateDownloadUrls", () =>
    ctx.blobGateway.createDownloadUrls({
      targets: [
        {
          target: { case: "userLora", value: userLoraBlob(userId, loraId, extension) },
          attachmentFileName: row.name,
        },
      ],
      ttlSeconds: ctx.cfg.downloadUrlTtlSeconds,
    }),
  );
  const signed = res.urls[0];
  if (!signed) throw new Error("CreateDownloadUrls answered without a URL");
  const now = ctx.clock.now();
  await writeAudit(ctx.db, now, [
    {
      actorId: userId,
      actorRole: "user",
      action: "lora.download",
      userId,
      loraId,
      details: { blob_path: blobPath, size_bytes: sizeOf(row.gen_out_data) },
    },
  ]);
  return {
    url: signed.url,
    expireTime: signed.expireTime ?? timestampFromDate(now),
    fileName: row.name,
    sizeBytes: BigInt(sizeOf(row.gen_out_data)),
    sha256: sha256Of(row.gen_out_data),
  };
}
