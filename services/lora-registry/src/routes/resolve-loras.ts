import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { ErrorReason, type LoraResolverService, LoraSource, ResolveLorasResponseSchema } from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";
import { actorOf } from "../domain/caller.js";
import { resolveReferences } from "../domain/resolve.js";
import { parseShortText, parseUuid } from "../domain/validate.js";
import type { AppContext } from "../context.js";

const MAX_REFS = 64;

export function resolveLoras(ctx: AppContext): Partial<ServiceImpl<typeof LoraResolverService>> {
  return {
    async resolveLoras(req, hctx) {
      // Shared LoRAs belong to no user: a job without one may resolve those, and only those.
      const sharedOnly = req.refs.every((ref) => ref.source === LoraSource.SHARED);
      const userId = req.userId === "" && sharedOnly ? "" : parseUuid(req.userId, "user_id");
      const jobId = parseShortText(req.jobId, "job_id", 128);
      const machineId = parseShortText(req.machineId, "machine_id", 128);
      if (req.refs.length > MAX_REFS) {
        throw invalidArgument(
          ErrorReason.INVALID_REQUEST,
          `at most ${MAX_REFS} references per call, got ${req.refs.length}`,
          { field: "refs" },
        );
      }
      const results = await resolveReferences(ctx, {
        userId,
        jobId,
        machineId,
        actor: actorOf(hctx),
        refs: req.refs,
        skipDownloadUrls: req.skipDownloadUrls,
      });
      return create(ResolveLorasResponseSchema, { results });
    },
  };
}
