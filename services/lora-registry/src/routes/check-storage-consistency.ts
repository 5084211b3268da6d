import type { ServiceImpl } from "@connectrpc/connect";
import type { LoraAdminService } from "@emprops/contracts";
import { sweepNow } from "../jobs/storage-sweep.js";
import type { AppContext } from "../context.js";

/** Runs the storage consistency sweep now and answers its report. */
export function checkStorageConsistency(ctx: AppContext): Partial<ServiceImpl<typeof LoraAdminService>> {
  return {
    async checkStorageConsistency(req) {
      return { report: await sweepNow(ctx, req.dryRun) };
    },
  };
}
