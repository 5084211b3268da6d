import type { ServiceImpl } from "@connectrpc/connect";
import type { PlacementService } from "@emprops/contracts";
import { findLoraHolders as find } from "../domain/placement.js";
import type { AppContext } from "../context.js";

export function findLoraHolders(ctx: AppContext): Partial<ServiceImpl<typeof PlacementService>> {
  return {
    findLoraHolders: (req) =>
      find(ctx, { userId: req.userId, refs: req.refs, pool: req.pool, maxHolders: req.maxHolders }),
  };
}
