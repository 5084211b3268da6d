import type { ServiceImpl } from "@connectrpc/connect";
import type { LoraService } from "@emprops/contracts";
import { userOf } from "../domain/caller.js";
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
      const ended = await endSession(ctx, session, {
        state: "aborted",
        blobMayExist: true,
        audit: { actorId: userId, actorRole: "user", action: "lora.upload.abort", details: { upload_id: uploadId } },
      });
      if (ended) {
        ctx.metrics.uploads.add(1, { outcome: "aborted" });
        return {};
      }
      // Someone ended it first: aborting twice is harmless, anything else is a conflict.
      const now = await findSession(ctx.db, userId, uploadId);
      if (now.state !== "aborted") throw notPending(now, ctx.clock.now());
      return {};
    },
  };
}
