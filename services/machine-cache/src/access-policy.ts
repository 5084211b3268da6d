import { MachineCacheService } from "@emprops/contracts";
import { type RpcRule, type ServicePolicy, servicePolicy } from "@emprops/platform";

/** ComfyUI's loader node on this machine (machine role), or an admin. */
const MACHINE_OR_ADMIN: RpcRule = { allow: ["machine", "admin"] };
const ADMIN: RpcRule = { allow: ["admin"] };

/** Who may call each RPC of the machine cache. */
export const machineCacheAccessPolicy: ServicePolicy[] = [
  servicePolicy(MachineCacheService, {
    ensureLoras: MACHINE_OR_ADMIN,
    ensureLorasWithProgress: MACHINE_OR_ADMIN,
    getCacheStats: MACHINE_OR_ADMIN,
    listCachedModels: MACHINE_OR_ADMIN,
    evictLoras: ADMIN,
    warmLoras: MACHINE_OR_ADMIN,
  }),
];
