import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema, formatBytes, formatPercent, QuotaExceededDetailSchema } from "@emprops/contracts";

/** An error as the page shows it: a headline, the server's own message, its reason code and numbers. */
export interface ShownError {
  title: string;
  /** The server's message (or the network's). */
  message: string;
  /** The machine-readable reason, e.g. "QUOTA_EXCEEDED"; "" when there is none. */
  reason: string;
  /** Extra lines: quota numbers, unsafe globals, limits. */
  details: string[];
  /** The token is missing, invalid or expired: sign in again. */
  signInAgain: boolean;
}

const TITLES: Record<string, string> = {
  INVALID_FILE_FORMAT: "Not a valid LoRA file",
  FILE_TOO_LARGE: "File too large",
  QUOTA_EXCEEDED: "Not enough LoRA storage",
  UNSAFE_PICKLE: "Unsafe file rejected",
  CHECKSUM_MISMATCH: "The upload was corrupted",
  LORA_NOT_FOUND: "LoRA not found",
  UPLOAD_NOT_FOUND: "Upload not found",
  UPLOAD_EXPIRED: "The upload expired",
  UPLOAD_STATE_CONFLICT: "The upload has already finished",
  UPLOAD_INCOMPLETE: "The upload is incomplete",
  INVALID_NAME: "Invalid name",
  INVALID_TAGS: "Invalid tags",
  INVALID_IMAGE: "Not a usable image",
  INVALID_UPDATE_MASK: "Nothing to change",
  INVALID_REQUEST: "Invalid request",
  TOKEN_MISSING: "Please sign in",
  TOKEN_INVALID: "Your sign-in is not valid",
  TOKEN_EXPIRED: "Your session expired",
  TOKEN_EXPIRY_MISSING: "Your sign-in is not valid",
  TOKEN_LIFETIME_TOO_LONG: "Your sign-in is not valid",
  TOKEN_NOT_YET_VALID: "Your sign-in is not valid yet",
  ROLE_REQUIRED: "Not allowed",
  USER_TOKEN_REQUIRED: "Sign in as a user",
  DEPENDENCY_UNAVAILABLE: "Storage is unavailable",
};

function gb(bytes: bigint | number): string {
  return formatBytes(bytes);
}

/** A refusal the page finds itself (the same rule the server applies), shown as the server's would be. */
export function localError(reason: string, message: string): ShownError {
  return { title: TITLES[reason] ?? "Request failed", message, reason, details: [], signInAgain: false };
}

/** Any error → what to show. Unknown errors keep their message; nothing is swallowed. */
export function showError(err: unknown): ShownError {
  if (!(err instanceof ConnectError)) {
    const message = err instanceof Error ? err.message : String(err);
    return { title: "Something went wrong", message, reason: "", details: [], signInAgain: false };
  }
  const info = err.findDetails(ErrorInfoSchema)[0];
  const reason = info?.reason ?? "";
  const meta = info?.metadata ?? {};
  const details: string[] = [];
  // The quota's numbers, once: from the detail, in place of the server's sentence that repeats them.
  let message = err.rawMessage;
  const quota = err.findDetails(QuotaExceededDetailSchema)[0];
  if (quota?.quota) {
    const q = quota.quota;
    message =
      quota.limit === "count"
        ? `${q.usedCount + q.reservedCount} of ${q.maxCount} LoRAs stored.`
        : `${gb(q.usedBytes + q.reservedBytes)} of ${gb(q.maxBytes)} used (${formatPercent(q.utilizationPercent)}), ` +
          `${gb(q.availableBytes)} available; this file needs ${gb(quota.requestedBytes)}.`;
    details.push("Delete LoRAs you no longer use to make room: the quota box lists the ones unused longest.");
  }
  if (meta.unsafe_globals) details.push(`Code it would run: ${meta.unsafe_globals.split(",").join(", ")}`);
  if (meta.detected_format) details.push(`Detected: ${meta.detected_format}`);
  if (reason === "FILE_TOO_LARGE" && meta.max_bytes)
    details.push(`The limit is ${gb(Number(meta.max_bytes))} per LoRA.`);
  const network = !reason && (err.code === Code.Unavailable || err.code === Code.Unknown);
  return {
    title: TITLES[reason] ?? (network ? "Cannot reach the LoRA service" : "Request failed"),
    message,
    reason,
    details,
    signInAgain: err.code === Code.Unauthenticated,
  };
}
