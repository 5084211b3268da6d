import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorReason, type UserLoraBlob, UserLoraBlobSchema } from "@emprops/contracts";
import { rpcError } from "@emprops/platform";
import type { Logger } from "pino";
import type { LoraBlobRow } from "../db/queries/loras.js";

/** Deadline of a gateway call; verification streams the whole blob and gets longer. */
export const GATEWAY_TIMEOUT_MS = 15_000;
export const VERIFY_TIMEOUT_MS = 15 * 60_000;

export function userLoraBlob(userId: string, loraId: string, extension: string): UserLoraBlob {
  return create(UserLoraBlobSchema, { userId, loraId, extension });
}

/**
 * Runs a blob-gateway call. Its failures are ours to explain, not the
 * caller's: they surface as UNAVAILABLE / DEPENDENCY_UNAVAILABLE (the
 * original is logged), so a client retries rather than fixing its request.
 */
export async function viaGateway<T>(logger: Logger, what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    const ce = ConnectError.from(err);
    logger.warn({ err: ce, what }, "blob-gateway call failed");
    throw rpcError(Code.Unavailable, ErrorReason.DEPENDENCY_UNAVAILABLE, `blob storage is not available (${what})`, {
      dependency: "blob-gateway",
      dependency_code: Code[ce.code],
    });
  }
}

/** users/{user_id}/loras/{id}.{ext}, as recorded at upload (or as the gateway builds it). */
export function blobPathOf(row: LoraBlobRow) {
  const extension = row.gen_out_data?.extension ?? row.name.slice(row.name.lastIndexOf(".") + 1).toLowerCase();
  return {
    extension,
    blobPath: row.gen_out_data?.blob_path ?? `users/${row.user_id}/loras/${row.id}.${extension}`,
  };
}
