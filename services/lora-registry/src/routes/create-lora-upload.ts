import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { CreateLoraUploadResponseSchema, type LoraService } from "@emprops/contracts";
import { userOf } from "../domain/caller.js";
import { GATEWAY_TIMEOUT_MS, userLoraBlob, viaGateway } from "../domain/blob.js";
import { writeAudit } from "../domain/audit.js";
import { mergeMetadata, toLora } from "../domain/lora-message.js";
import { ensureLedger, quotaExceeded, quotaSummary, readLedger, reserveQuota } from "../domain/quota.js";
import { endSession, type SessionRow, toUploadSession } from "../domain/uploads.js";
import {
  parseLoraName,
  parseOptionalSha256,
  parseTags,
  parseUploadSize,
  parseUploadSource,
  parseUserMetadata,
} from "../domain/validate.js";
import { toDbTimestamp } from "../db/pg-types.js";
import type { LoraGenOutData } from "../db/schema/index.js";
import type { AppContext } from "../context.js";
import { withSpan } from "../telemetry.js";

/** Seconds an upload URL handed out now may live: the configured lifetime, never past the session. */
export function uploadUrlTtl(ctx: AppContext, expiresAt: Date): number {
  const left = Math.floor((expiresAt.getTime() - ctx.clock.now().getTime()) / 1000);
  return Math.max(1, Math.min(ctx.cfg.upload.urlTtlSeconds, left));
}

export function createLoraUpload(ctx: AppContext): Partial<ServiceImpl<typeof LoraService>> {
  return {
    async createLoraUpload(req, hctx) {
      const userId = userOf(hctx);
      const { name, extension } = parseLoraName(req.name);
      const size = parseUploadSize(req.sizeBytes, ctx.cfg.quota.maxLoraBytes);
      const tags = parseTags(req.tags);
      const userMetadata = parseUserMetadata(req.metadata);
      const sha256 = parseOptionalSha256(req.sha256);
      const uploadSource = parseUploadSource(req.uploadSource);

      const now = ctx.clock.now();
      const expiresAt = new Date(now.getTime() + ctx.cfg.upload.sessionTtlSeconds * 1000);
      const uploadId = ctx.newId();
      const genOut: LoraGenOutData = {
        size_bytes: size,
        validation_status: "pending",
        upload_source: uploadSource,
        extension,
        user_metadata: userMetadata,
        lora_metadata: mergeMetadata({}, userMetadata),
      };

      // Reserve first, in one short transaction: the ledger row lock is never held across the gateway call.
      const created = await withSpan("reserve_quota", { "lora.size_bytes": size }, () =>
        ctx.db.transaction().execute(async (trx) => {
          await ensureLedger(trx, userId, now);
          const ledger = await reserveQuota(trx, ctx.cfg.quota, userId, size, now);
          if (!ledger) return { refused: true as const, ledger: await readLedger(trx, ctx.cfg.quota, userId) };
          const row = await trx
            .insertInto("flat_file")
            .values({
              created_at: toDbTimestamp(now),
              hidden: true,
              user_id: userId,
              name,
              gen_out_data: JSON.stringify(genOut),
              mime_type: "application/octet-stream",
              tags: ["lora", ...tags],
            })
            .returning(["id", "user_id", "name", "url", "created_at", "tags", "gen_out_data"])
            .executeTakeFirstOrThrow();
          const session = await trx
            .insertInto("lora_upload")
            .values({
              id: uploadId,
              user_id: userId,
              lora_id: row.id,
              state: "pending",
              declared_size_bytes: size,
              extension,
              expected_sha256: sha256 ?? null,
              created_at: now,
              expires_at: expiresAt,
            })
            .returningAll()
            .executeTakeFirstOrThrow();
          await writeAudit(trx, now, [
            {
              actorId: userId,
              actorRole: "user",
              action: "lora.upload.create",
              userId,
              loraId: row.id,
              details: { upload_id: uploadId, name, size_bytes: size, upload_source: uploadSource },
            },
          ]);
          return { refused: false as const, ledger, row, session: session as SessionRow };
        }),
      );
      if (created.refused) {
        ctx.metrics.uploads.add(1, { outcome: "quota_exceeded" });
        throw quotaExceeded(created.ledger, ctx.cfg.quota, size);
      }
      const { ledger, row, session } = created;

      const blob = userLoraBlob(userId, row.id, extension);
      let signed;
      try {
        signed = await viaGateway(ctx.logger, "CreateUploadUrl", () =>
          ctx.blobGateway.createUploadUrl(
            {
              blob,
              sizeBytes: BigInt(size),
              ttlSeconds: uploadUrlTtl(ctx, expiresAt),
            },
            { timeoutMs: GATEWAY_TIMEOUT_MS },
          ),
        );
      } catch (err) {
        // No URL, no upload: give the reservation back at once.
        await endSession(ctx, session, {
          state: "failed",
          blobMayExist: false,
          audit: {
            actorId: "system",
            actorRole: "system",
            action: "lora.upload.fail",
            details: { upload_id: uploadId },
          },
          failure: { reason: "DEPENDENCY_UNAVAILABLE", message: "no upload URL could be signed" },
        });
        throw err;
      }

      const stored = await ctx.db.transaction().execute(async (trx) => {
        await trx.updateTable("lora_upload").set({ blob_path: signed.blobPath }).where("id", "=", uploadId).execute();
        return trx
          .updateTable("flat_file")
          .set({
            url: signed.blobUrl,
            gen_out_data: JSON.stringify({ ...genOut, blob_path: signed.blobPath }),
          })
          .where("id", "=", row.id)
          .returning(["id", "user_id", "name", "url", "created_at", "tags", "gen_out_data"])
          .executeTakeFirstOrThrow();
      });
      ctx.metrics.uploads.add(1, { outcome: "created" });
      ctx.logger.info({ user_id: userId, lora_id: row.id, upload_id: uploadId, size_bytes: size }, "upload started");
      return create(CreateLoraUploadResponseSchema, {
        upload: toUploadSession({ ...session, blob_path: signed.blobPath }, now),
        lora: toLora(stored),
        uploadUrl: signed.uploadUrl,
        uploadUrlExpireTime: signed.expireTime,
        blockSizeBytes: signed.blockSizeBytes,
        quota: quotaSummary(ledger, ctx.cfg.quota),
      });
    },
  };
}
