import type { Client } from "@connectrpc/connect";
import {
  ErrorReason,
  type ItemError,
  type LoraResolverService,
  type ResolvedLora,
  type ResolveResult,
} from "@emprops/contracts";
import { type Logger, outgoingTimeoutMs } from "@emprops/platform";
import type { LoraFileRow } from "../db/lora-files.js";
import { internalItem, notFoundItem } from "./item-errors.js";
import { type LoraKey, referenceOf } from "./lora-key.js";

/** Every ResolveLoras this machine makes goes through here. */
export interface ResolveDeps {
  resolver: Client<typeof LoraResolverService>;
  machineId: string;
  logger: Logger;
  /** Deadline of every ResolveLoras (ms); a caller's shorter deadline wins. */
  registryTimeoutMs: number;
}

/** On whose behalf: the registry's access check is keyed by the job's user; the job is for its audit log. */
export interface Requester {
  jobId: string;
  userId: string;
}

/** What the registry said about one reference. */
export type Resolution = { case: "lora"; value: ResolvedLora } | { case: "error"; value: ItemError };

/**
 * One ResolveLoras for the distinct references of a batch: cached copies to
 * check again and references to fetch, together. Read URLs are signed only
 * when something is to be fetched (`signUrls`); a copy found changed without
 * one gets it when its download starts. The call has the registry deadline,
 * or what is left of the caller's (`timeoutMs`) less a margin to answer
 * (outgoingTimeoutMs), if shorter. Throws when the call itself fails (DEADLINE_EXCEEDED when late).
 */
export async function resolveAll(
  deps: ResolveDeps,
  who: Requester,
  keys: LoraKey[],
  signUrls: boolean,
  opts: { timeoutMs?: number } = {},
): Promise<Resolution[]> {
  const answer = await deps.resolver.resolveLoras(
    {
      userId: who.userId,
      jobId: who.jobId,
      machineId: deps.machineId,
      refs: keys.map(referenceOf),
      skipDownloadUrls: !signUrls,
    },
    { timeoutMs: outgoingTimeoutMs(deps.registryTimeoutMs, opts.timeoutMs) },
  );
  return keys.map((key, k) => checked(deps.logger, key, answer.results[k]));
}

/** One reference, with a read URL (a fresh one, or for warming). */
export async function resolveOne(deps: ResolveDeps, who: Requester, key: LoraKey): Promise<Resolution> {
  const [resolution] = await resolveAll(deps, who, [key], true);
  return resolution as Resolution;
}

/**
 * The registry's answer for `key`; an answer about another LoRA is as good
 * as none, and so is one without a sha256: every file this cache stores,
 * user or shared, is checked against the sha256 its verification recorded.
 */
function checked(logger: Logger, key: LoraKey, result: ResolveResult | undefined): Resolution {
  const outcome = result?.outcome;
  if (outcome?.case === "error") return outcome;
  if (outcome?.case !== "lora") return { case: "error", value: internalItem("the registry gave no result") };
  const lora = outcome.value;
  if (key.source === "user" && (lora.userId.toLowerCase() !== key.userId || lora.loraId !== key.identifier)) {
    logger.error({ asked: key, got: { user_id: lora.userId, lora_id: lora.loraId } }, "registry answered another LoRA");
    return { case: "error", value: notFoundItem(key) };
  }
  if (!/^[0-9a-f]{64}$/i.test(lora.sha256)) {
    logger.error({ asked: key }, "registry answered without a sha256");
    return {
      case: "error",
      value: internalItem(`the registry gave no sha256 for ${key.identifier}: nothing unverified is stored`),
    };
  }
  return outcome;
}

/** What a registry answer means for a cached copy. */
export type Revalidation =
  | { verdict: "valid" }
  /** Another size or checksum: evicted and fetched again. */
  | { verdict: "changed"; lora: ResolvedLora }
  /** Deleted, or no longer the job's user's: evicted and NOT_FOUND. */
  | { verdict: "gone"; error: ItemError }
  /** The registry could not tell: the copy was valid when last checked, so it is served. */
  | { verdict: "unavailable"; error: ItemError };

export function revalidation(row: LoraFileRow, resolution: Resolution): Revalidation {
  if (resolution.case === "error") {
    return resolution.value.reason === ErrorReason.LORA_NOT_FOUND
      ? { verdict: "gone", error: resolution.value }
      : { verdict: "unavailable", error: resolution.value };
  }
  const lora = resolution.value;
  const same = Number(lora.sizeBytes) === row.size_bytes && lora.sha256.toLowerCase() === row.sha256;
  return same ? { verdict: "valid" } : { verdict: "changed", lora };
}
