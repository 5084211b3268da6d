import type { ServiceImpl } from "@connectrpc/connect";
import type { LoraService } from "@emprops/contracts";
import { userOf } from "../domain/caller.js";
import { GATEWAY_TIMEOUT_MS, userLoraBlob, viaGateway } from "../domain/blob.js";
import { endSession, findSession, notPending } from "../domain/uploads.js";
import { parseUuid } from "../domain/validate.js";
import type { AppContext } from "../context.js";

export function abortLoraUpload(ctx: AppContext): Partial<ServiceImpl<typeof LoraService>> {
  return {
    async abortLoraUpload(req, hctx) {
      const userId = userOf(hctx);
      const uploadId = parseUuid(req.uploadId, "upload_id");
      const session = await findSession(ctx.db, userId, uploadId);
      if (session.state === "aborted") return {};
      if (session.state !== "pending") throw notPending(session, ctx.clock.now());
      // Blob first: if storage is down nothing changes and the caller can retry.
      await viaGateway(ctx.logger, "DeleteBlob", () =>
        ctx.blobGateway.deleteBlob(
          { blob: userLoraBlob(userId, session.lora_id, session.extension) },
          { timeoutMs: GATEWAY_TIMEOUT_MS },
        ),
      );
      const ended = await endSession(ctx.db, session, "aborted", ctx.clock.now(), {
        actorId: userId,
        actorRole: "user",
        action: "lora.upload.abort",
        details: { upload_id: uploadId },
      });
      if (!ended) {
        const now = await findSession(ctx.db, userId, uploadId);
        if (now.state !== "aborted") throw notPending(now, ctx.clock.now());
      } else {
        ctx.metrics.uploads.add(1, { outcome: "aborted" });
      }
      return {};
    },
  };
}
