import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema, formatBytes, QuotaExceededDetailSchema } from "@emprops/contracts";

/**
 * Exit codes of the lora command, one per kind of outcome a script may want
 * to act on (the README's table).
 */
export const EXIT = {
  OK: 0,
  /** Anything not listed below (a bug, an internal server error). */
  FAILURE: 1,
  /** Bad command line: unknown option, missing argument, unreadable file. */
  USAGE: 2,
  /** Not logged in, or the token is invalid or expired. */
  AUTH: 3,
  /** The token lacks the role the command needs (admin commands). */
  PERMISSION: 4,
  /** LORA_NOT_FOUND, UPLOAD_NOT_FOUND: missing or someone else's. */
  NOT_FOUND: 5,
  /** INVALID_FILE_FORMAT, FILE_TOO_LARGE, UNSAFE_PICKLE, CHECKSUM_MISMATCH. */
  REJECTED_FILE: 6,
  /** QUOTA_EXCEEDED. */
  QUOTA: 7,
  /** Other INVALID_ARGUMENT reasons: name, size, id, tags, page token, sort, quota values. */
  INVALID_REQUEST: 8,
  /** UPLOAD_EXPIRED, UPLOAD_STATE_CONFLICT, UPLOAD_INCOMPLETE. */
  UPLOAD_STATE: 9,
  /** Registry or storage unreachable, or an upload interrupted: run the command again (uploads resume). */
  UNAVAILABLE: 10,
} as const;

/** A failure with the message to print and the exit code to leave with. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
    readonly reason = "",
  ) {
    super(message);
    this.name = "CliError";
  }
}

const BY_REASON: Record<string, number> = {
  TOKEN_MISSING: EXIT.AUTH,
  TOKEN_INVALID: EXIT.AUTH,
  TOKEN_EXPIRED: EXIT.AUTH,
  TOKEN_EXPIRY_MISSING: EXIT.AUTH,
  TOKEN_LIFETIME_TOO_LONG: EXIT.AUTH,
  TOKEN_NOT_YET_VALID: EXIT.AUTH,
  ROLE_REQUIRED: EXIT.PERMISSION,
  USER_TOKEN_REQUIRED: EXIT.PERMISSION,
  LORA_NOT_FOUND: EXIT.NOT_FOUND,
  UPLOAD_NOT_FOUND: EXIT.NOT_FOUND,
  BLOB_NOT_FOUND: EXIT.NOT_FOUND,
  INVALID_FILE_FORMAT: EXIT.REJECTED_FILE,
  FILE_TOO_LARGE: EXIT.REJECTED_FILE,
  UNSAFE_PICKLE: EXIT.REJECTED_FILE,
  CHECKSUM_MISMATCH: EXIT.REJECTED_FILE,
  QUOTA_EXCEEDED: EXIT.QUOTA,
  UPLOAD_EXPIRED: EXIT.UPLOAD_STATE,
  UPLOAD_STATE_CONFLICT: EXIT.UPLOAD_STATE,
  UPLOAD_INCOMPLETE: EXIT.UPLOAD_STATE,
  DEPENDENCY_UNAVAILABLE: EXIT.UNAVAILABLE,
};

const BY_CODE: Partial<Record<Code, number>> = {
  [Code.Unauthenticated]: EXIT.AUTH,
  [Code.PermissionDenied]: EXIT.PERMISSION,
  [Code.NotFound]: EXIT.NOT_FOUND,
  [Code.InvalidArgument]: EXIT.INVALID_REQUEST,
  [Code.ResourceExhausted]: EXIT.QUOTA,
  [Code.FailedPrecondition]: EXIT.UPLOAD_STATE,
  [Code.Unavailable]: EXIT.UNAVAILABLE,
  [Code.DeadlineExceeded]: EXIT.UNAVAILABLE,
};

/** A refusal found before calling the server, printed and exiting as the server's would. */
export function localRefusal(reason: string, message: string, hint?: string): CliError {
  return new CliError(
    `${message} [${reason}]${hint ? `\n  ${hint}` : ""}`,
    BY_REASON[reason] ?? EXIT.INVALID_REQUEST,
    reason,
  );
}

/** The reason a server gave ("" when none), e.g. "QUOTA_EXCEEDED". */
export function reasonOf(err: unknown): string {
  return err instanceof ConnectError ? (err.findDetails(ErrorInfoSchema)[0]?.reason ?? "") : "";
}

/** What to print and which exit code to use for any error. */
export function describeError(err: unknown, registryUrl: string): CliError {
  if (err instanceof CliError) return err;
  if (!(err instanceof ConnectError)) {
    return new CliError(err instanceof Error ? err.message : String(err), EXIT.FAILURE);
  }
  const reason = reasonOf(err);
  const exitCode = BY_REASON[reason] ?? BY_CODE[err.code] ?? EXIT.FAILURE;
  let message = reason ? `${err.rawMessage} [${reason}]` : err.rawMessage;
  if (!reason && err.code === Code.Unavailable) {
    message = `cannot reach the registry at ${registryUrl}: ${err.rawMessage}`;
  }
  if (reason === "TOKEN_MISSING") message += "\n  run `lora login` first, or pass --token";
  if (reason === "TOKEN_EXPIRED" || reason === "TOKEN_INVALID") message += "\n  run `lora login` with a new token";
  const quota = err.findDetails(QuotaExceededDetailSchema)[0];
  if (quota?.quota) {
    const q = quota.quota;
    message +=
      quota.limit === "count"
        ? `\n  LoRAs: ${q.usedCount + q.reservedCount} of ${q.maxCount}; delete one to make room`
        : `\n  Storage: ${formatBytes(q.usedBytes + q.reservedBytes)} of ${formatBytes(q.maxBytes)} used, ` +
          `${formatBytes(q.availableBytes)} available; this file needs ${formatBytes(quota.requestedBytes)}`;
  }
  return new CliError(message, exitCode, reason);
}
