import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { ErrorReason, type LoraAdminService, SetUserQuotaResponseSchema } from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";
import { actorOf } from "../domain/caller.js";
import { quotaSummary, readLedger } from "../domain/quota.js";
import { changeLimits } from "../domain/quota-admin.js";
import { parseUuid } from "../domain/validate.js";
import type { AppContext } from "../context.js";

/** Larger limits are surely typos: 1 PiB and a million LoRAs per user. */
const MAX_BYTES = 2n ** 50n;
const MAX_COUNT = 1_000_000;

export function setUserQuota(ctx: AppContext): Partial<ServiceImpl<typeof LoraAdminService>> {
  return {
    async setUserQuota(req, hctx) {
      const userId = parseUuid(req.userId, "user_id");
      const setsValue = req.maxBytes !== undefined || req.maxCount !== undefined;
      if (req.resetToDefaults && setsValue) {
        throw invalidArgument(
          ErrorReason.INVALID_QUOTA,
          "reset_to_defaults cannot be combined with max_bytes or max_count",
          { field: "reset_to_defaults" },
        );
      }
      if (!req.resetToDefaults && !setsValue) {
        throw invalidArgument(ErrorReason.INVALID_QUOTA, "set max_bytes, max_count or reset_to_defaults", {
          field: "max_bytes",
        });
      }
      if (req.maxBytes !== undefined && (req.maxBytes < 0n || req.maxBytes > MAX_BYTES)) {
        throw invalidArgument(ErrorReason.INVALID_QUOTA, `max_bytes must be between 0 and ${MAX_BYTES}`, {
          field: "max_bytes",
        });
      }
      if (req.maxCount !== undefined && (req.maxCount < 0 || req.maxCount > MAX_COUNT)) {
        throw invalidArgument(ErrorReason.INVALID_QUOTA, `max_count must be between 0 and ${MAX_COUNT}`, {
          field: "max_count",
        });
      }
      await changeLimits(ctx, userId, actorOf(hctx), {
        resetToDefaults: req.resetToDefaults,
        maxBytes: req.maxBytes === undefined ? undefined : Number(req.maxBytes),
        maxCount: req.maxCount,
      });
      const ledger = await readLedger(ctx.db, ctx.cfg.quota, userId);
      return create(SetUserQuotaResponseSchema, { quota: quotaSummary(ledger, ctx.cfg.quota) });
    },
  };
}
