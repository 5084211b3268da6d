import { create } from "@bufbuild/protobuf";
import { Code, type ServiceImpl } from "@connectrpc/connect";
import {
  type CreateDownloadUrlsResponse,
  type DownloadTarget,
  DownloadTargetSchema,
  ErrorReason,
  type LoraReference,
  type LoraResolverService,
  LoraSource,
  ResolvedLoraSchema,
  type ResolveResult,
  ResolveLorasResponseSchema,
  ResolveResultSchema,
  SharedLoraBlobSchema,
} from "@emprops/contracts";
import { invalidArgument, rpcError, toItemError } from "@emprops/platform";
import { sql } from "kysely";
import { actorOf } from "../domain/caller.js";
import { type AuditEntry, writeAudit } from "../domain/audit.js";
import { GATEWAY_TIMEOUT_MS, blobPathOf, userLoraBlob, viaGateway } from "../domain/blob.js";
import { sha256Of, sizeOf, toFileFormat } from "../domain/lora-message.js";
import { loraNotFound } from "../domain/lora-query.js";
import { parseLoraId, parseSharedLoraName, parseShortText, parseUuid } from "../domain/validate.js";
import type { LoraGenOutData } from "../db/schema/index.js";
import type { AppContext } from "../context.js";
import { withSpan } from "../telemetry.js";

const MAX_REFS = 64;

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

interface OwnedRow {
  id: string;
  user_id: string;
  name: string;
  gen_out_data: LoraGenOutData | null;
}

export function resolveLoras(ctx: AppContext): Partial<ServiceImpl<typeof LoraResolverService>> {
  return {
    async resolveLoras(req, hctx) {
      // Shared LoRAs belong to no user: a job without one may resolve those, and only those.
      const sharedOnly = req.refs.every((ref) => ref.source === LoraSource.SHARED);
      const userId = req.userId === "" && sharedOnly ? "" : parseUuid(req.userId, "user_id");
      const jobId = parseShortText(req.jobId, "job_id", 128);
      const machineId = parseShortText(req.machineId, "machine_id", 128);
      if (req.refs.length > MAX_REFS) {
        throw invalidArgument(
          ErrorReason.INVALID_REQUEST,
          `at most ${MAX_REFS} references per call, got ${req.refs.length}`,
          {
            field: "refs",
          },
        );
      }
      const plans = req.refs.map(plan);
      const wanted = [...new Set(plans.flatMap((p) => (p.kind === "user" ? [p.loraId] : [])))];

      return withSpan("resolve_loras", { "lora.refs": req.refs.length, "lora.job_id": jobId }, async () => {
        // Only the job's user's own visible LoRAs: anyone else's is as missing as a missing one.
        const owned = new Map<string, OwnedRow>();
        if (wanted.length > 0) {
          const rows = await sql<OwnedRow>`
            SELECT id, user_id, name, gen_out_data FROM flat_file
            WHERE id = ANY (${wanted}::bigint[]) AND user_id = ${userId}
              AND 'lora' = ANY (tags) AND hidden IS NOT TRUE`.execute(ctx.db);
          for (const r of rows.rows) owned.set(r.id, r);
        }

        // One gateway call signs every URL (and sizes the shared LoRAs, which have no row).
        const targets: { index: number; target: DownloadTarget }[] = [];
        plans.forEach((p, index) => {
          if (p.kind === "user" && owned.has(p.loraId) && !req.skipDownloadUrls) {
            const row = owned.get(p.loraId) as OwnedRow;
            targets.push({
              index,
              target: create(DownloadTargetSchema, {
                target: { case: "userLora", value: userLoraBlob(userId, row.id, blobPathOf(row).extension) },
              }),
            });
          } else if (p.kind === "shared") {
            targets.push({
              index,
              target: create(DownloadTargetSchema, {
                target: { case: "sharedLora", value: create(SharedLoraBlobSchema, { name: p.name }) },
              }),
            });
          }
        });
        let signed: CreateDownloadUrlsResponse | undefined;
        let unavailable: unknown;
        if (targets.length > 0) {
          try {
            signed = await viaGateway(ctx.logger, "CreateDownloadUrls", () =>
              ctx.blobGateway.createDownloadUrls(
                {
                  targets: targets.map((t) => t.target),
                  ttlSeconds: ctx.cfg.downloadUrlTtlSeconds,
                  includeProperties: plans.some((p) => p.kind === "shared"),
                },
                { timeoutMs: GATEWAY_TIMEOUT_MS },
              ),
            );
          } catch (err) {
            unavailable = err;
          }
        }
        const urlOf = new Map(targets.map((t, i) => [t.index, signed?.urls[i]]));

        const results: ResolveResult[] = plans.map((p, index) => {
          const fail = (err: unknown) =>
            create(ResolveResultSchema, { outcome: { case: "error", value: toItemError(err) } });
          if (p.kind === "error") return create(ResolveResultSchema, { outcome: { case: "error", value: p.error } });
          const ref = req.refs[index];
          if (p.kind === "user") {
            const row = owned.get(p.loraId);
            if (!row) return fail(loraNotFound(p.loraId));
            const url = urlOf.get(index);
            if (!req.skipDownloadUrls && !url) return fail(unavailable ?? missingUrl());
            return create(ResolveResultSchema, {
              outcome: {
                case: "lora",
                value: create(ResolvedLoraSchema, {
                  ref,
                  loraId: row.id,
                  userId: row.user_id,
                  fileName: row.name,
                  sizeBytes: BigInt(sizeOf(row.gen_out_data)),
                  sha256: sha256Of(row.gen_out_data),
                  downloadUrl: req.skipDownloadUrls ? "" : (url?.url ?? ""),
                  downloadUrlExpireTime: req.skipDownloadUrls ? undefined : url?.expireTime,
                  format: toFileFormat(row.gen_out_data?.format),
                }),
              },
            });
          }
          const url = urlOf.get(index);
          if (!url) return fail(unavailable ?? missingUrl());
          if (url.sizeBytes < 0n) {
            return fail(
              rpcError(Code.NotFound, ErrorReason.LORA_NOT_FOUND, `Shared LoRA ${p.name} not found`, { name: p.name }),
            );
          }
          return create(ResolveResultSchema, {
            outcome: {
              case: "lora",
              value: create(ResolvedLoraSchema, {
                ref,
                fileName: p.name,
                sizeBytes: url.sizeBytes,
                downloadUrl: req.skipDownloadUrls ? "" : url.url,
                downloadUrlExpireTime: req.skipDownloadUrls ? undefined : url.expireTime,
                format: toFileFormat(p.name.toLowerCase().endsWith(".safetensors") ? "safetensors" : undefined),
              }),
            },
          });
        });

        const now = ctx.clock.now();
        const actor = actorOf(hctx);
        const audit: AuditEntry[] = results.map((r, i) => {
          const p = plans[i] as Plan;
          return {
            actorId: actor,
            actorRole: "machine",
            action: "lora.resolve",
            userId: userId || null,
            loraId: p.kind === "user" && r.outcome.case === "lora" ? p.loraId : null,
            details: {
              job_id: jobId,
              machine_id: machineId,
              source: p.kind,
              identifier: req.refs[i]?.identifier.slice(0, 255) ?? "",
              outcome: r.outcome.case === "lora" ? "resolved" : r.outcome.value?.code,
              signed_url: r.outcome.case === "lora" && r.outcome.value.downloadUrl !== "",
            },
          };
        });
        await writeAudit(ctx.db, now, audit);
        for (const r of results) {
          ctx.metrics.resolutions.add(1, { outcome: r.outcome.case === "lora" ? "ok" : (r.outcome.value?.code ?? "") });
        }
        return create(ResolveLorasResponseSchema, { results });
      });
    },
  };
}

function missingUrl() {
  return rpcError(Code.Unavailable, ErrorReason.DEPENDENCY_UNAVAILABLE, "no download URL was signed");
}
