import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  ErrorReason,
  EvictedModelSchema,
  EvictLorasResponseSchema,
  LoraSource,
  type MachineCacheService,
} from "@emprops/contracts";
import { failedPrecondition, invalidArgument } from "@emprops/platform";
import type { Evicted } from "../cache/evictor.js";
import type { AppContext } from "../context.js";
import { findLoraFile, findUserLoraFiles, type LoraFileRow, loraFilesOfUser } from "../db/lora-files.js";
import { readSettings } from "../db/settings.js";
import { MAX_REFS, parseLoraId, parseSharedName, parseUserId } from "../validation.js";

/**
 * EvictLoras (admins): removes the given LoRAs, a user's LoRAs, runs the age
 * policy, or frees bytes by LRU, now. Protected and ignored models and files
 * in use are left alone.
 */
export function evictLoras(ctx: AppContext): Partial<ServiceImpl<typeof MachineCacheService>> {
  return {
    async evictLoras(req) {
      const userId = req.userId ? parseUserId(req.userId) : "";
      if (req.freeBytes < 0n) {
        throw invalidArgument(ErrorReason.INVALID_SIZE, "free_bytes must not be negative", { field: "free_bytes" });
      }
      if (req.refs.length > MAX_REFS) {
        throw invalidArgument(ErrorReason.INVALID_REQUEST, `at most ${MAX_REFS} refs`, { max_refs: MAX_REFS });
      }
      const targets: LoraFileRow[] = [];
      for (const [i, ref] of req.refs.entries()) {
        const field = `refs[${i}]`;
        if (ref.source === LoraSource.USER) {
          targets.push(...findUserLoraFiles(ctx.db, parseLoraId(ref.identifier.trim(), field), userId || undefined));
        } else if (ref.source === LoraSource.SHARED) {
          const row = findLoraFile(ctx.db, {
            source: "shared",
            userId: "",
            identifier: parseSharedName(ref.identifier, field),
          });
          if (row) targets.push(row);
        } else {
          throw invalidArgument(ErrorReason.INVALID_REFERENCE, `${field}: source must be user or shared`, { field });
        }
      }
      if (req.refs.length === 0 && userId) targets.push(...loraFilesOfUser(ctx.db, userId));
      if (req.refs.length === 0 && !userId && !req.runAgePolicy && req.freeBytes === 0n) {
        throw invalidArgument(
          ErrorReason.INVALID_REQUEST,
          "name what to evict: refs, user_id, run_age_policy or free_bytes",
        );
      }
      if (!readSettings(ctx.db).evictionEnabled) {
        throw failedPrecondition(ErrorReason.EVICTION_DISABLED, "eviction is disabled (lora_eviction_enabled = false)");
      }
      const evicted: Evicted[] = [];
      const { space } = ctx;
      if (targets.length > 0) evicted.push(...(await space.evictSelected(targets, "admin")));
      if (req.runAgePolicy) evicted.push(...(await space.runAgePolicy()));
      if (req.freeBytes > 0n) evicted.push(...(await space.freeBytes(Number(req.freeBytes), "admin")));
      return create(EvictLorasResponseSchema, {
        evicted: evicted.map((e) =>
          create(EvictedModelSchema, { path: e.relativePath, sizeBytes: BigInt(e.sizeBytes), reason: e.reason }),
        ),
        // A path other paths still link to frees nothing.
        freedBytes: BigInt(evicted.reduce((s, e) => s + e.freedBytes, 0)),
      });
    },
  };
}
