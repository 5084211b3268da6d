import type { ConnectRouter } from "@connectrpc/connect";
import { MachineCacheService } from "@emprops/contracts";
import type { AppContext } from "../context.js";
import { ensureLoras } from "./ensure-loras.js";
import { evictLoras } from "./evict-loras.js";
import { getCacheStats } from "./get-cache-stats.js";
import { listCachedModels } from "./list-cached-models.js";
import { warmLoras } from "./warm-loras.js";

/** Every RPC of the machine cache. */
export function routes(ctx: AppContext) {
  return (router: ConnectRouter) => {
    router.service(MachineCacheService, {
      ...ensureLoras(ctx),
      ...getCacheStats(ctx),
      ...listCachedModels(ctx),
      ...evictLoras(ctx),
      ...warmLoras(ctx),
    });
  };
}
