import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import {
  ErrorReason,
  type FindLoraHoldersResponse,
  FindLoraHoldersResponseSchema,
  type LoraReference,
  LoraSource,
  type PlacementLora,
  PlacementLoraSchema,
  type RankMachinesResponse,
  RankMachinesResponseSchema,
} from "@emprops/contracts";
import { invalidArgument, rpcError, toItemError } from "@emprops/platform";
import type { AppContext } from "../context.js";
import { findVisibleLoras } from "../db/queries/loras.js";
import { contentKey, type MachineEntry } from "../holdings/holdings-index.js";
import { type Candidate, rankCandidates } from "../holdings/rank-candidates.js";
import { sha256Of, sizeOf } from "./lora-message.js";
import { loraNotFound } from "./loras.js";
import { parseLoraId, parseSharedLoraName, parseUuid } from "./validate.js";

export const MAX_PLACEMENT_REFS = 64;
export const MAX_CANDIDATES = 10_000;
const MACHINE_ID = /^[A-Za-z0-9._-]{1,128}$/;
const POOL = /^[A-Za-z0-9._-]{1,64}$/;
const DEFAULT_HOLDERS = 100;
const MAX_HOLDERS = 1000;

/** A reference the placement can count: its content key and the content it must be. */
interface Wanted {
  key: string;
  /** The current sha256 (user LoRAs); "" accepts any copy (shared LoRAs, which the registry does not hash). */
  sha256: string;
  sizeBytes: number;
  sizeKnown: boolean;
}

/** The job's references as the placement counts them, or each one's error, as ResolveLoras would answer. */
async function wantedOf(
  ctx: AppContext,
  userIdField: string,
  refs: LoraReference[],
): Promise<{ loras: PlacementLora[]; wanted: (Wanted | undefined)[] }> {
  if (refs.length > MAX_PLACEMENT_REFS) {
    throw invalidArgument(
      ErrorReason.INVALID_REQUEST,
      `at most ${MAX_PLACEMENT_REFS} references per call, got ${refs.length}`,
      { field: "refs" },
    );
  }
  // As ResolveLoras: a job without a user may name shared LoRAs only.
  const sharedOnly = refs.every((ref) => ref.source === LoraSource.SHARED);
  const userId = userIdField === "" && sharedOnly ? "" : parseUuid(userIdField, "user_id");
  if (!ctx.holdings.caughtUp) {
    throw rpcError(
      Code.Unavailable,
      ErrorReason.DEPENDENCY_UNAVAILABLE,
      "the holdings index is still being read from NATS (LORA_HOLDINGS); retry shortly",
    );
  }
  const plans = refs.map((ref) => {
    try {
      if (ref.source === LoraSource.USER) return { loraId: parseLoraId(ref.identifier, "identifier") };
      if (ref.source === LoraSource.SHARED) return { shared: parseSharedLoraName(ref.identifier, "identifier") };
      throw invalidArgument(ErrorReason.INVALID_REFERENCE, "a reference needs lora_source user or shared", {
        source: ref.source,
      });
    } catch (err) {
      return { error: err };
    }
  });
  const ids = [...new Set(plans.flatMap((p) => (p.loraId ? [p.loraId] : [])))];
  const owned = new Map((await findVisibleLoras(ctx.db, userId, ids)).map((r) => [r.id, r]));
  const alive = aliveSince(ctx);
  const loras: PlacementLora[] = [];
  const wanted: (Wanted | undefined)[] = [];
  plans.forEach((p, i) => {
    const ref = refs[i]!;
    const fail = (err: unknown) => {
      loras.push(create(PlacementLoraSchema, { ref, outcome: { case: "error", value: toItemError(err) } }));
      wanted.push(undefined);
    };
    if (p.error !== undefined) return fail(p.error);
    let w: Wanted;
    if (p.loraId) {
      const row = owned.get(p.loraId);
      if (!row) return fail(loraNotFound(p.loraId));
      w = {
        key: contentKey(LoraSource.USER, p.loraId),
        sha256: sha256Of(row.gen_out_data),
        sizeBytes: sizeOf(row.gen_out_data),
        sizeKnown: true,
      };
    } else {
      // The registry keeps no row of a shared LoRA: its size is what its holders report.
      const key = contentKey(LoraSource.SHARED, p.shared!);
      let size = 0;
      for (const m of ctx.holdings.holdersOf(key).values()) {
        if (m.lastSeenMs >= alive) size = Math.max(size, m.holdings.get(key)?.sizeBytes ?? 0);
      }
      w = { key, sha256: "", sizeBytes: size, sizeKnown: size > 0 };
    }
    let holderCount = 0;
    for (const m of ctx.holdings.holdersOf(w.key).values())
      if (m.lastSeenMs >= alive && holdsCurrent(m, w)) holderCount++;
    wanted.push(w);
    loras.push(
      create(PlacementLoraSchema, {
        ref,
        outcome: {
          case: "lora",
          value: { sizeBytes: BigInt(w.sizeBytes), sizeKnown: w.sizeKnown, sha256: w.sha256, holderCount },
        },
      }),
    );
  });
  return { loras, wanted };
}

/** Reports at or after this time count: the machine is in the index. */
function aliveSince(ctx: AppContext): number {
  return ctx.clock.now().getTime() - ctx.cfg.holdingsMachineTtlMs;
}

/** A copy of the current content (any copy, for content the registry has no sha256 of). */
function holdsCurrent(machine: MachineEntry, w: Wanted): boolean {
  const copy = machine.holdings.get(w.key);
  return copy !== undefined && (w.sha256 === "" || copy.sha256 === w.sha256);
}

interface IndexedCandidate extends Candidate {
  entry: MachineEntry | undefined;
}

/** RankMachines: the candidates best first, and what each would have to download. */
export async function rankMachines(
  ctx: AppContext,
  req: { userId: string; refs: LoraReference[]; machineIds: string[]; homeAffinity?: boolean },
): Promise<RankMachinesResponse> {
  if (req.machineIds.length === 0 || req.machineIds.length > MAX_CANDIDATES) {
    throw invalidArgument(
      ErrorReason.INVALID_REQUEST,
      `machine_ids must name 1 to ${MAX_CANDIDATES} candidates, got ${req.machineIds.length}`,
      { field: "machine_ids" },
    );
  }
  const bad = req.machineIds.find((id) => !MACHINE_ID.test(id));
  if (bad !== undefined) {
    throw invalidArgument(
      ErrorReason.INVALID_REQUEST,
      `machine_ids must be 1-128 letters, digits, '.', '_' or '-', got ${JSON.stringify(bad.slice(0, 140))}`,
      { field: "machine_ids" },
    );
  }
  const { loras, wanted } = await wantedOf(ctx, req.userId, req.refs);
  const alive = aliveSince(ctx);
  const candidates: IndexedCandidate[] = [...new Set(req.machineIds)].map((machineId) => {
    const found = ctx.holdings.machines.get(machineId);
    const entry = found && found.lastSeenMs >= alive ? found : undefined;
    return {
      machineId,
      entry,
      reporting: entry !== undefined,
      freeCacheBytes: entry?.freeCacheBytes ?? 0,
      evictedBytes1h: entry?.evictedBytes1h ?? 0,
    };
  });
  const counted = wanted.flatMap((w, i) => (w ? [{ w, i }] : []));
  const ranked = rankCandidates(
    candidates,
    counted.map(({ w }) => w),
    (c, k) => holdsCurrent(c.entry!, counted[k]!.w),
    req.homeAffinity ? { affinityKey: affinityKeyOf(req.userId, req.refs) } : {},
  );
  return create(RankMachinesResponseSchema, {
    loras,
    machines: ranked.map((r) => ({
      machineId: r.candidate.machineId,
      reporting: r.candidate.reporting,
      cachedBytes: BigInt(r.cachedBytes),
      downloadBytes: BigInt(r.downloadBytes),
      downloadRefIndexes: r.downloads.map((k) => counted[k]!.i),
      freeCacheBytes: BigInt(r.candidate.freeCacheBytes),
      evictedBytes1h: BigInt(r.candidate.evictedBytes1h),
      pool: r.candidate.entry?.pool ?? "",
    })),
  });
}

/** Whose home machines a job goes to: its user's, or for shared LoRAs only, its set of references'. */
function affinityKeyOf(userId: string, refs: LoraReference[]): string {
  if (userId !== "") return `user:${userId.toLowerCase()}`;
  return `refs:${refs
    .map((r) => `${r.source}/${r.identifier}`)
    .sort()
    .join("|")}`;
}

/** FindLoraHolders: per reference, the reporting machines holding its current content. */
export async function findLoraHolders(
  ctx: AppContext,
  req: { userId: string; refs: LoraReference[]; pool: string; maxHolders: number },
): Promise<FindLoraHoldersResponse> {
  if (req.pool !== "" && !POOL.test(req.pool)) {
    throw invalidArgument(
      ErrorReason.INVALID_REQUEST,
      `pool must be 1-64 letters, digits, '.', '_' or '-', got ${JSON.stringify(req.pool.slice(0, 80))}`,
      { field: "pool" },
    );
  }
  if (req.maxHolders < 0) {
    throw invalidArgument(ErrorReason.INVALID_REQUEST, "max_holders must not be negative", { field: "max_holders" });
  }
  const limit = req.maxHolders === 0 ? DEFAULT_HOLDERS : Math.min(MAX_HOLDERS, req.maxHolders);
  const { loras, wanted } = await wantedOf(ctx, req.userId, req.refs);
  const alive = aliveSince(ctx);
  return create(FindLoraHoldersResponseSchema, {
    loras: loras.map((lora, i) => {
      const w = wanted[i];
      const holders = w
        ? [...ctx.holdings.holdersOf(w.key).values()]
            .filter((m) => m.lastSeenMs >= alive && (req.pool === "" || m.pool === req.pool) && holdsCurrent(m, w))
            .sort((a, b) => b.freeCacheBytes - a.freeCacheBytes || (a.machineId < b.machineId ? -1 : 1))
            .slice(0, limit)
        : [];
      return {
        ref: lora.ref,
        lora,
        holders: holders.map((m) => ({
          machineId: m.machineId,
          pool: m.pool,
          peerAddress: m.peerAddress,
          freeCacheBytes: BigInt(m.freeCacheBytes),
        })),
      };
    }),
  });
}
