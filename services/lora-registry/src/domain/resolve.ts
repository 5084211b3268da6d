import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import {
  type CreateDownloadUrlsResponse,
  type DownloadTarget,
  DownloadTargetSchema,
  type DownloadUrl,
  ErrorReason,
  type LoraReference,
  LoraSource,
  ResolvedLoraSchema,
  type ResolveResult,
  ResolveResultSchema,
  SharedLoraBlobSchema,
  ValidationStatus,
} from "@emprops/contracts";
import { invalidArgument, rpcError, toItemError } from "@emprops/platform";
import { type AuditEntry, writeAudit } from "../db/queries/audit.js";
import { findVisibleLoras, type LoraBlobRow } from "../db/queries/loras.js";
import type { AppContext } from "../context.js";
import { withSpan } from "../telemetry.js";
import { blobPathOf, userLoraBlob, viaGateway } from "./blob.js";
import { sha256Of, sizeOf, toFileFormat } from "./lora-message.js";
import { loraNotFound } from "./loras.js";
import { peersFor } from "./peers.js";
import { parseLoraId, parseSharedLoraName } from "./validate.js";

type Plan =
  | { kind: "error"; error: ReturnType<typeof toItemError> }
  | { kind: "user"; loraId: string }
  | { kind: "shared"; name: string };

/** Validates one reference on its own: a bad one fails alone, as an ItemError. */
function plan(ref: LoraReference): Plan {
  try {
    if (ref.source === LoraSource.USER) return { kind: "user", loraId: parseLoraId(ref.identifier, "identifier") };
    if (ref.source === LoraSource.SHARED) {
      return { kind: "shared", name: parseSharedLoraName(ref.identifier, "identifier") };
    }
    throw invalidArgument(ErrorReason.INVALID_REFERENCE, "a reference needs lora_source user or shared", {
      source: ref.source,
    });
  } catch (err) {
    return { kind: "error", error: toItemError(err) };
  }
}

export interface ResolveJob {
  /** The job's user: only their own visible LoRAs resolve ("" for a job of shared LoRAs only). */
  userId: string;
  jobId: string;
  machineId: string;
  /** The machine's subject, for the audit log. */
  actor: string;
  refs: LoraReference[];
  skipDownloadUrls: boolean;
}

/**
 * Resolves a job's references, each on its own: the user's own visible
 * LoRAs (anyone else's is as missing as a missing one) and shared LoRAs by
 * name. ONE gateway call signs every read URL and sizes the shared LoRAs;
 * every reference is written to the audit log with the job and machine.
 */
export function resolveReferences(ctx: AppContext, job: ResolveJob): Promise<ResolveResult[]> {
  const plans = job.refs.map(plan);
  return withSpan("resolve_loras", { "lora.refs": job.refs.length, "lora.job_id": job.jobId }, async () => {
    const wanted = [...new Set(plans.flatMap((p) => (p.kind === "user" ? [p.loraId] : [])))];
    const owned = new Map((await findVisibleLoras(ctx.db, job.userId, wanted)).map((r) => [r.id, r]));
    const signing = await signAll(ctx, job, plans, owned);
    const results = plans.map((p, index) => resultOf(p, job.refs[index] as LoraReference, owned, signing, index, job));
    // Peers only for a fetch (a read URL was asked for): validating a cached copy needs none.
    if (!job.skipDownloadUrls && job.machineId !== "") {
      await Promise.all(
        results.map(async (r) => {
          if (r.outcome.case === "lora") r.outcome.value.peers = await peersFor(ctx, job.machineId, r.outcome.value);
        }),
      );
    }
    await writeAudit(
      ctx.db,
      ctx.clock.now(),
      results.map((r, i) => auditEntry(job, plans[i] as Plan, r, i)),
    );
    for (const r of results) {
      ctx.metrics.resolutions.add(1, { outcome: r.outcome.case === "lora" ? "ok" : (r.outcome.value?.code ?? "") });
    }
    return results;
  });
}

interface Signing {
  /** The signed URL of each reference that asked for one, by reference index. */
  urls: Map<number, DownloadUrl | undefined>;
  /** Why the gateway signed nothing, when it failed. */
  failure?: unknown;
}

/**
 * The file a machine receives for a user LoRA: the verified upload itself
 * for safetensors, the converted safetensors for a .pt. A .pt stored
 * before conversion existed has none and is not handed out.
 */
function machineFile(row: LoraBlobRow): { extension: "safetensors"; sizeBytes: number; sha256: string } | undefined {
  const data = row.gen_out_data;
  if (blobPathOf(row).extension === "safetensors") {
    return { extension: "safetensors", sizeBytes: sizeOf(data), sha256: sha256Of(data) };
  }
  const converted = data?.converted;
  return converted
    ? { extension: "safetensors", sizeBytes: converted.size_bytes, sha256: converted.sha256 }
    : undefined;
}

/** One CreateDownloadUrls for every URL (and the size and verification of every shared LoRA, which has no row). */
async function signAll(
  ctx: AppContext,
  job: ResolveJob,
  plans: Plan[],
  owned: Map<string, LoraBlobRow>,
): Promise<Signing> {
  const targets: { index: number; target: DownloadTarget }[] = [];
  plans.forEach((p, index) => {
    const row = p.kind === "user" ? owned.get(p.loraId) : undefined;
    const file = row && machineFile(row);
    if (row && file && !job.skipDownloadUrls) {
      const value = userLoraBlob(job.userId, row.id, file.extension);
      targets.push({ index, target: create(DownloadTargetSchema, { target: { case: "userLora", value } }) });
    } else if (p.kind === "shared") {
      const value = create(SharedLoraBlobSchema, { name: p.name });
      targets.push({ index, target: create(DownloadTargetSchema, { target: { case: "sharedLora", value } }) });
    }
  });
  if (targets.length === 0) return { urls: new Map() };
  let signed: CreateDownloadUrlsResponse | undefined;
  let failure: unknown;
  try {
    signed = await viaGateway(ctx.logger, "CreateDownloadUrls", () =>
      ctx.blobGateway.createDownloadUrls({
        targets: targets.map((t) => t.target),
        ttlSeconds: ctx.cfg.downloadUrlTtlSeconds,
        includeProperties: plans.some((p) => p.kind === "shared"),
      }),
    );
  } catch (err) {
    failure = err;
  }
  return { urls: new Map(targets.map((t, i) => [t.index, signed?.urls[i]])), failure };
}

function resultOf(
  p: Plan,
  ref: LoraReference,
  owned: Map<string, LoraBlobRow>,
  signing: Signing,
  index: number,
  job: ResolveJob,
): ResolveResult {
  const fail = (err: unknown) => create(ResolveResultSchema, { outcome: { case: "error", value: toItemError(err) } });
  const lora = (value: MessageInitShape<typeof ResolvedLoraSchema>) =>
    create(ResolveResultSchema, { outcome: { case: "lora", value: create(ResolvedLoraSchema, value) } });
  if (p.kind === "error") return create(ResolveResultSchema, { outcome: { case: "error", value: p.error } });
  const url = signing.urls.get(index);
  if (p.kind === "user") {
    const row = owned.get(p.loraId);
    if (!row) return fail(loraNotFound(p.loraId));
    const file = machineFile(row);
    if (!file) return fail(notConverted(row.id));
    if (!job.skipDownloadUrls && !url) return fail(signing.failure ?? missingUrl());
    return lora({
      ref,
      loraId: row.id,
      userId: row.user_id,
      fileName: row.name,
      sizeBytes: BigInt(file.sizeBytes),
      sha256: file.sha256,
      downloadUrl: job.skipDownloadUrls ? "" : (url?.url ?? ""),
      downloadUrlExpireTime: job.skipDownloadUrls ? undefined : url?.expireTime,
      format: toFileFormat(file.extension),
    });
  }
  if (!url) return fail(signing.failure ?? missingUrl());
  if (url.sizeBytes < 0n) {
    return fail(
      rpcError(Code.NotFound, ErrorReason.LORA_NOT_FOUND, `Shared LoRA ${p.name} not found`, { name: p.name }),
    );
  }
  const verified = sharedVerdict(p.name, url);
  if (verified instanceof Error) return fail(verified);
  return lora({
    ref,
    fileName: p.name,
    sizeBytes: verified.sizeBytes,
    sha256: verified.sha256,
    downloadUrl: job.skipDownloadUrls ? "" : url.url,
    downloadUrlExpireTime: job.skipDownloadUrls ? undefined : url.expireTime,
    format: verified.format,
  });
}

/**
 * A shared LoRA resolves only as a version the gateway verified safe, with
 * that verification's sha256 and size (machines check them while
 * downloading); a version refused, or still being verified, fails alone.
 */
function sharedVerdict(name: string, url: DownloadUrl) {
  const v = url.verification;
  if (url.verificationPending || !v) {
    return rpcError(
      Code.Unavailable,
      ErrorReason.DEPENDENCY_UNAVAILABLE,
      `Shared LoRA ${name} is being verified; try again in a moment`,
      { name },
    );
  }
  if (v.status !== ValidationStatus.SAFE || !url.url) {
    const reason = v.reason === ErrorReason.UNSPECIFIED ? ErrorReason.INVALID_FILE_FORMAT : v.reason;
    return rpcError(Code.FailedPrecondition, reason, `Shared LoRA ${name} was refused: ${v.message}`, {
      name,
      ...(v.unsafeGlobals.length > 0 ? { unsafe_globals: v.unsafeGlobals.join(",") } : {}),
    });
  }
  return { sizeBytes: v.sizeBytes, sha256: v.sha256, format: v.format };
}

function auditEntry(job: ResolveJob, p: Plan, r: ResolveResult, index: number): AuditEntry {
  return {
    actorId: job.actor,
    actorRole: "machine",
    action: "lora.resolve",
    userId: job.userId || null,
    loraId: p.kind === "user" && r.outcome.case === "lora" ? p.loraId : null,
    details: {
      job_id: job.jobId,
      machine_id: job.machineId,
      source: p.kind,
      identifier: job.refs[index]?.identifier.slice(0, 255) ?? "",
      outcome: r.outcome.case === "lora" ? "resolved" : r.outcome.value?.code,
      signed_url: r.outcome.case === "lora" && r.outcome.value.downloadUrl !== "",
    },
  };
}

function notConverted(loraId: string) {
  return rpcError(
    Code.FailedPrecondition,
    ErrorReason.INVALID_FILE_FORMAT,
    `LoRA ${loraId} is a .pt stored before machines received only safetensors: upload it again (or as .safetensors)`,
    { lora_id: loraId },
  );
}

function missingUrl() {
  return rpcError(Code.Unavailable, ErrorReason.DEPENDENCY_UNAVAILABLE, "no download URL was signed");
}
