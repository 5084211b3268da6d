import type { ServiceImpl } from "@connectrpc/connect";
import type { PlacementService } from "@emprops/contracts";
import { rankMachines as rank } from "../domain/placement.js";
import type { AppContext } from "../context.js";

export function rankMachines(ctx: AppContext): Partial<ServiceImpl<typeof PlacementService>> {
  return {
    rankMachines: (req) =>
      rank(ctx, { userId: req.userId, refs: req.refs, machineIds: req.machineIds, homeAffinity: req.homeAffinity }),
  };
}
