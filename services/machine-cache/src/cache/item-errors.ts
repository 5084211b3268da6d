import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { type EnsuredLora, EnsuredLoraSchema, ErrorReason, type ItemError } from "@emprops/contracts";
import { rpcError, toItemError } from "@emprops/platform";
import { DownloadError } from "../download/download-file.js";
import { type LoraKey, referenceOf } from "./lora-key.js";

/** A reference's answer when it failed; the others of its batch do not. */
export function errorResult(key: LoraKey, error: ItemError, elapsedMs: number): EnsuredLora {
  return create(EnsuredLoraSchema, { ref: referenceOf(key), error, elapsedMs });
}

/** Codes that mean the registry could not be reached or failed, rather than refused the request. */
const UNREACHABLE = new Set([Code.Unavailable, Code.DeadlineExceeded, Code.Canceled, Code.Unknown, Code.Internal]);

/** A whole ResolveLoras call failed: unreachable becomes DEPENDENCY_UNAVAILABLE, a refusal keeps its reason. */
export function registryFailure(err: unknown): ItemError {
  const ce = ConnectError.from(err);
  if (!UNREACHABLE.has(ce.code)) return toItemError(ce);
  return toItemError(
    rpcError(
      Code.Unavailable,
      ErrorReason.DEPENDENCY_UNAVAILABLE,
      `the LoRA registry is not reachable: ${ce.rawMessage}`,
    ),
  );
}

/** Missing and someone else's look the same: the registry's access check decides, and says no more. */
export function notFound(key: LoraKey): ConnectError {
  return rpcError(Code.NotFound, ErrorReason.LORA_NOT_FOUND, `LoRA ${key.identifier} not found or access denied`, {
    lora_identifier: key.identifier,
  });
}

export function notFoundItem(key: LoraKey): ItemError {
  return toItemError(notFound(key));
}

export function internalItem(message: string): ItemError {
  return toItemError(rpcError(Code.Internal, ErrorReason.UNSPECIFIED, message));
}

/** The per-reference error of a failed fetch: the reasons the specification's messages name. */
export function downloadItemError(err: unknown): ItemError {
  if (!(err instanceof DownloadError)) return toItemError(err);
  if (err.cause instanceof ConnectError) return toItemError(err.cause);
  const attempts = { attempts: err.attempts };
  switch (err.kind) {
    case "not_found":
      return toItemError(rpcError(Code.NotFound, ErrorReason.BLOB_NOT_FOUND, err.message, attempts));
    case "checksum":
      return toItemError(
        rpcError(
          Code.DataLoss,
          ErrorReason.CHECKSUM_MISMATCH,
          `${err.message} (after ${err.attempts} attempts)`,
          attempts,
        ),
      );
    default:
      return toItemError(rpcError(Code.Unavailable, ErrorReason.DOWNLOAD_FAILED, err.message, attempts));
  }
}

/** The outcome label of a failed download for metrics and spans. */
export function downloadOutcomeOf(err: unknown): string {
  if (err instanceof DownloadError) return err.kind;
  return err instanceof ConnectError ? Code[err.code] : "error";
}
