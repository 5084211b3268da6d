import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { ErrorReason, type MachineCacheService, WarmLorasResponseSchema } from "@emprops/contracts";
import { invalidArgument, rpcError } from "@emprops/platform";
import { cachedCopy } from "../cache/cached-copy.js";
import type { WarmItem } from "../cache/warmer.js";
import type { AppContext } from "../context.js";
import { MAX_REFS, parseLoraId, parseReference, parseUserId } from "../validation.js";

const DEFAULT_POPULAR = 10;
const MAX_POPULAR = 100;

/** WarmLoras: queues LoRAs (given, or the registry's most used) for prefetching while the machine is idle. */
export function warmLoras(ctx: AppContext): Partial<ServiceImpl<typeof MachineCacheService>> {
  return {
    async warmLoras(req) {
      const userId = req.userId ? parseUserId(req.userId) : "";
      if (req.popularLimit < 0) {
        throw invalidArgument(ErrorReason.INVALID_PAGE_SIZE, "popular_limit must not be negative", {
          field: "popular_limit",
        });
      }
      if (req.refs.length > MAX_REFS) {
        throw invalidArgument(ErrorReason.INVALID_REQUEST, `at most ${MAX_REFS} refs`, { max_refs: MAX_REFS });
      }
      if (req.refs.length > 0 && !userId) {
        throw invalidArgument(ErrorReason.INVALID_ID, "user_id is required to warm refs", { field: "user_id" });
      }
      if (req.refs.length === 0 && !req.includePopular) {
        throw invalidArgument(ErrorReason.INVALID_REQUEST, "nothing to warm: give refs or include_popular");
      }
      const items: WarmItem[] = req.refs.map((ref, i) => ({ key: parseReference(ref, userId, `refs[${i}]`), userId }));
      if (req.includePopular) {
        let popular;
        try {
          popular = await ctx.resolver.listPopularLoras({
            userId,
            pageSize: Math.min(req.popularLimit || DEFAULT_POPULAR, MAX_POPULAR),
          });
        } catch (err) {
          throw rpcError(
            Code.Unavailable,
            ErrorReason.DEPENDENCY_UNAVAILABLE,
            `the LoRA registry is not reachable: ${ConnectError.from(err).rawMessage}`,
          );
        }
        for (const p of popular.loras) {
          const owner = parseUserId(p.userId, "popular user_id");
          items.push({
            key: { source: "user", userId: owner, identifier: parseLoraId(p.loraId, "popular lora_id") },
            userId: owner,
          });
        }
      }
      const toWarm: WarmItem[] = [];
      let alreadyCached = 0;
      for (const item of items) {
        if (cachedCopy(ctx.db, item.key)) alreadyCached++;
        else toWarm.push(item);
      }
      const queued = ctx.warmer.enqueue(toWarm);
      return create(WarmLorasResponseSchema, { queued, alreadyCached });
    },
  };
}
