import { RestError } from "@azure/storage-blob";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorReason } from "@emprops/contracts";
import { notFound, rpcError } from "@emprops/platform";

/**
 * Storage could not read the source of a server-side copy (with 404 when the
 * source URL's host is not the one it serves: Azurite behind a proxy that
 * rewrites Host). Not a missing blob: the source may well be there.
 */
function isCopySourceUnreadable(err: unknown): err is RestError {
  return err instanceof RestError && err.code === "CannotVerifyCopySource";
}

/** True when Blob Storage answered 404 (no such blob or container). */
export function isNotFound(err: unknown): boolean {
  return err instanceof RestError && err.statusCode === 404 && !isCopySourceUnreadable(err);
}

/**
 * Turns a storage failure into an RPC error: 404 → NOT_FOUND BLOB_NOT_FOUND,
 * a copy source storage could not read → INTERNAL saying so, unreachable /
 * throttled / 5xx → UNAVAILABLE (the caller may retry), anything else →
 * INTERNAL. RPC errors pass through unchanged.
 */
export function storageError(err: unknown, path: string): ConnectError {
  if (err instanceof ConnectError) return err;
  if (isNotFound(err)) return notFound(ErrorReason.BLOB_NOT_FOUND, `no blob at ${path}`, { blob_path: path });
  const status = err instanceof RestError ? err.statusCode : undefined;
  const detail = err instanceof Error ? err.message.split("\n")[0] : String(err);
  if (isCopySourceUnreadable(err)) {
    return rpcError(
      Code.Internal,
      ErrorReason.UNSPECIFIED,
      `blob storage could not read ${path} as the source of a server-side copy (${status} CannotVerifyCopySource): ${detail}`,
      { blob_path: path },
    );
  }
  if (status === undefined || status === 408 || status === 429 || status >= 500) {
    return rpcError(Code.Unavailable, ErrorReason.DEPENDENCY_UNAVAILABLE, `blob storage is not reachable: ${detail}`, {
      blob_path: path,
    });
  }
  return rpcError(Code.Internal, ErrorReason.UNSPECIFIED, `blob storage refused the request (${status}): ${detail}`, {
    blob_path: path,
  });
}
