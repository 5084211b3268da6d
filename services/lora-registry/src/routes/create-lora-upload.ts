import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { CreateLoraUploadResponseSchema, type LoraService } from "@emprops/contracts";
import { userOf } from "../domain/caller.js";
import { toLora } from "../domain/lora-message.js";
import { quotaSummary } from "../domain/quota.js";
import { toUploadSession } from "../domain/upload-session.js";
import { startUpload } from "../domain/uploads.js";
import {
  parseLoraName,
  parseOptionalSha256,
  parseTags,
  parseUploadHead,
  parseUploadSize,
  parseUploadSource,
  parseUserMetadata,
} from "../domain/validate.js";
import type { AppContext } from "../context.js";

export function createLoraUpload(ctx: AppContext): Partial<ServiceImpl<typeof LoraService>> {
  return {
    async createLoraUpload(req, hctx) {
      const userId = userOf(hctx);
      const { name, extension } = parseLoraName(req.name);
      const sizeBytes = parseUploadSize(req.sizeBytes, ctx.cfg.quota.maxLoraBytes);
      const started = await startUpload(ctx, userId, {
        name,
        extension,
        sizeBytes,
        head: parseUploadHead(req.head, sizeBytes),
        tags: parseTags(req.tags),
        userMetadata: parseUserMetadata(req.metadata),
        sha256: parseOptionalSha256(req.sha256),
        uploadSource: parseUploadSource(req.uploadSource),
      });
      return create(CreateLoraUploadResponseSchema, {
        upload: toUploadSession(started.session, started.now),
        lora: toLora(started.lora),
        uploadUrl: started.signed.uploadUrl,
        uploadUrlExpireTime: started.signed.expireTime,
        blockSizeBytes: started.signed.blockSizeBytes,
        quota: quotaSummary(started.ledger, ctx.cfg.quota),
      });
    },
  };
}
