import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  ErrorInfoSchema,
  ErrorReason,
  parseReason,
  type StagedUpload,
  StagedUploadSchema,
  type UserLoraBlob,
  UserLoraBlobSchema,
} from "@emprops/contracts";
import { rpcError } from "@emprops/platform";
import type { Logger } from "pino";
import type { LoraBlobRow } from "../db/queries/loras.js";

export function userLoraBlob(userId: string, loraId: string, extension: string): UserLoraBlob {
  return create(UserLoraBlobSchema, { userId, loraId, extension });
}

/** An upload session's staging blob, as the gateway names it: staging/{user_id}/{upload_id}.{ext}. */
export function stagedUpload(s: { id: string; user_id: string; extension: string }): StagedUpload {
  return create(StagedUploadSchema, { userId: s.user_id, uploadId: s.id, extension: s.extension });
}

/**
 * Codes of the gateway's own answers that are the registry's fault rather
 * than the caller's: it could not be reached in time, or it refused the
 * registry's own token.
 */
const NOT_THE_CALLERS = new Set([Code.Unavailable, Code.DeadlineExceeded, Code.Unauthenticated, Code.PermissionDenied]);

/**
 * Runs a blob-gateway call. A refusal the gateway explains (its code and
 * ErrorInfo reason: a bad name, a file over its limit, a missing blob)
 * reaches the caller as the gateway said it. A gateway that cannot be
 * reached, answers UNAVAILABLE or too late, or refuses the registry's own
 * token becomes UNAVAILABLE / DEPENDENCY_UNAVAILABLE (the original is
 * logged), so the client retries rather than fixing its request.
 */
export async function viaGateway<T>(logger: Logger, what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    const ce = ConnectError.from(err);
    const info = ce.findDetails(ErrorInfoSchema)[0];
    if (info && !NOT_THE_CALLERS.has(ce.code)) {
      logger.info({ err: ce, what }, "blob-gateway refused the call");
      throw rpcError(ce.code, parseReason(info.reason), ce.rawMessage, info.metadata);
    }
    logger.warn({ err: ce, what }, "blob-gateway call failed");
    throw rpcError(Code.Unavailable, ErrorReason.DEPENDENCY_UNAVAILABLE, `blob storage is not available (${what})`, {
      dependency: "blob-gateway",
      dependency_code: Code[ce.code],
    });
  }
}

/** users/{user_id}/loras/{id}.{ext}: the verified original, as recorded at completion (or as the gateway builds it). */
export function blobPathOf(row: LoraBlobRow) {
  const extension = row.gen_out_data?.extension ?? row.name.slice(row.name.lastIndexOf(".") + 1).toLowerCase();
  return {
    extension,
    blobPath: row.gen_out_data?.blob_path ?? `users/${row.user_id}/loras/${row.id}.${extension}`,
  };
}
