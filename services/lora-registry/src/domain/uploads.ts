import type { CreateUploadUrlResponse, GetUploadStateResponse, LoraUploadExtension } from "@emprops/contracts";
import { ConnectError } from "@connectrpc/connect";
import { captureTraceContext, errorReason } from "@emprops/platform";
import { writeAudit } from "../db/queries/audit.js";
import { insertPendingLora, type LoraRow } from "../db/queries/loras.js";
import { ensureLedger } from "../db/queries/quota.js";
import { insertSession, type SessionRow, setSessionBlobPath } from "../db/queries/upload-sessions.js";
import type { LoraGenOutData, StoredUserMetadata } from "../db/schema/index.js";
import type { AppContext } from "../context.js";
import { withSpan } from "../telemetry.js";
import { stagedUpload, viaGateway } from "./blob.js";
import { mergeMetadata } from "./lora-message.js";
import { type Ledger, quotaExceeded, readLedger, reserve } from "./quota.js";
import { effectiveState, endSession, findSession, notPending, uploadUrlTtl } from "./upload-session.js";

/** A validated CreateLoraUpload request. */
export interface NewUpload {
  name: string;
  extension: LoraUploadExtension;
  sizeBytes: number;
  tags: string[];
  userMetadata: StoredUserMetadata;
  sha256?: string;
  uploadSource: string;
  /** The file's first bytes, for the gateway to refuse a wrong file before a URL is signed. */
  head?: Uint8Array;
}

export interface StartedUpload {
  session: SessionRow;
  lora: LoraRow;
  signed: CreateUploadUrlResponse;
  ledger: Ledger;
  /** When the session began. */
  now: Date;
}

/**
 * Reserves the quota and creates the hidden row and the session in one short
 * transaction, then has the gateway sign an upload URL (no lock is held
 * across the network). No URL, no upload: the reservation is given back.
 */
export async function startUpload(ctx: AppContext, userId: string, u: NewUpload): Promise<StartedUpload> {
  const now = ctx.clock.now();
  const expiresAt = new Date(now.getTime() + ctx.cfg.upload.sessionTtlSeconds * 1000);
  const uploadId = ctx.newId();
  const genOut: LoraGenOutData = {
    size_bytes: u.sizeBytes,
    validation_status: "pending",
    upload_source: u.uploadSource,
    extension: u.extension,
    user_metadata: u.userMetadata,
    lora_metadata: mergeMetadata({}, u.userMetadata),
  };

  const created = await withSpan("reserve_quota", { "lora.size_bytes": u.sizeBytes }, () =>
    ctx.db.transaction().execute(async (trx) => {
      await ensureLedger(trx, userId, now);
      const ledger = await reserve(trx, ctx.cfg.quota, userId, u.sizeBytes, now);
      if (!ledger) return { refused: true as const, ledger: await readLedger(trx, ctx.cfg.quota, userId) };
      const lora = await insertPendingLora(trx, { userId, name: u.name, tags: u.tags, genOut, createdAt: now });
      const session = await insertSession(trx, {
        id: uploadId,
        user_id: userId,
        lora_id: lora.id,
        state: "pending",
        declared_size_bytes: u.sizeBytes,
        extension: u.extension,
        expected_sha256: u.sha256 ?? null,
        created_at: now,
        expires_at: expiresAt,
        trace_context: captureTraceContext() ?? null,
      });
      await writeAudit(trx, now, [
        {
          actorId: userId,
          actorRole: "user",
          action: "lora.upload.create",
          userId,
          loraId: lora.id,
          details: { upload_id: uploadId, name: u.name, size_bytes: u.sizeBytes, upload_source: u.uploadSource },
        },
      ]);
      return { refused: false as const, ledger, lora, session };
    }),
  );
  if (created.refused) {
    ctx.metrics.uploads.add(1, { outcome: "quota_exceeded" });
    throw quotaExceeded(created.ledger, ctx.cfg.quota, u.sizeBytes);
  }
  const { ledger, lora, session } = created;

  let signed: CreateUploadUrlResponse;
  try {
    signed = await signUploadUrl(ctx, session, u.head);
  } catch (err) {
    // A refusal the gateway explains (a head that shows a wrong file) is kept with its reason and message.
    const reason = errorReason(err);
    await endSession(ctx, session, {
      state: "failed",
      blobMayExist: false,
      audit: { actorId: "system", actorRole: "system", action: "lora.upload.fail", details: { upload_id: uploadId } },
      failure: {
        reason: reason || "DEPENDENCY_UNAVAILABLE",
        message: reason && err instanceof ConnectError ? err.rawMessage : "no upload URL could be signed",
      },
    });
    throw err;
  }

  await setSessionBlobPath(ctx.db, uploadId, signed.blobPath);
  ctx.metrics.uploads.add(1, { outcome: "created" });
  ctx.logger.info(
    { user_id: userId, lora_id: lora.id, upload_id: uploadId, size_bytes: u.sizeBytes },
    "upload started",
  );
  return { session: { ...session, blob_path: signed.blobPath }, lora, signed, ledger, now };
}

/**
 * A write-only URL for the session's staging blob, living no longer than
 * the session. It never covers the LoRA's final path: only the gateway's
 * CommitUpload writes there.
 */
function signUploadUrl(ctx: AppContext, s: SessionRow, head?: Uint8Array): Promise<CreateUploadUrlResponse> {
  return viaGateway(ctx.logger, "CreateUploadUrl", () =>
    ctx.blobGateway.createUploadUrl({
      upload: stagedUpload(s),
      sizeBytes: BigInt(s.declared_size_bytes),
      ttlSeconds: uploadUrlTtl(ctx.cfg.upload, ctx.clock.now(), s.expires_at),
      head,
    }),
  );
}

export interface UploadProgress {
  session: SessionRow;
  /** The time the session's state was read at. */
  now: Date;
  /** While pending: what storage holds and a fresh URL to go on with. */
  resume?: { state: GetUploadStateResponse; signed: CreateUploadUrlResponse };
}

/** The session and, while it is pending, what was staged (a write-only URL cannot read it) and a fresh URL. */
export async function uploadProgress(ctx: AppContext, userId: string, uploadId: string): Promise<UploadProgress> {
  const session = await findSession(ctx.db, userId, uploadId);
  const now = ctx.clock.now();
  if (effectiveState(session, now) !== "pending") return { session, now };
  const upload = stagedUpload(session);
  const [state, signed] = await withSpan("resume_upload", { "lora.upload_id": uploadId }, () =>
    Promise.all([
      viaGateway(ctx.logger, "GetUploadState", () => ctx.blobGateway.getUploadState({ upload })),
      signUploadUrl(ctx, session),
    ]),
  );
  return { session, now, resume: { state, signed } };
}

/** Deletes what was uploaded and returns the reservation; aborting twice is harmless. */
export async function abortUpload(ctx: AppContext, userId: string, uploadId: string): Promise<void> {
  const session = await findSession(ctx.db, userId, uploadId);
  if (session.state === "aborted") return;
  if (session.state !== "pending") throw notPending(session, ctx.clock.now());
  const ended = await endSession(ctx, session, {
    state: "aborted",
    blobMayExist: true,
    audit: { actorId: userId, actorRole: "user", action: "lora.upload.abort", details: { upload_id: uploadId } },
  });
  if (ended) {
    ctx.metrics.uploads.add(1, { outcome: "aborted" });
    return;
  }
  // Someone ended it first: aborting twice is harmless, anything else is a conflict.
  const current = await findSession(ctx.db, userId, uploadId);
  if (current.state !== "aborted") throw notPending(current, ctx.clock.now());
}
