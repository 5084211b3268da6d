import { ErrorReason } from "./gen/emprops/common/v1/error_reason_pb.js";

/** The error domain of every ErrorInfo this platform sends. */
export const ERROR_DOMAIN = "emprops.ai";

const PREFIX = "ERROR_REASON_";

/** "QUOTA_EXCEEDED" for ErrorReason.QUOTA_EXCEEDED: the wire form of a reason. */
export function reasonName(reason: ErrorReason): string {
  const name = ErrorReason[reason];
  return name === undefined ? "UNSPECIFIED" : name;
}

/** Parses "QUOTA_EXCEEDED" back to the enum; also the "ERROR_REASON_QUOTA_EXCEEDED" of earlier builds. */
export function parseReason(name: string): ErrorReason {
  const key = name.startsWith(PREFIX) ? name.slice(PREFIX.length) : name;
  const value = (ErrorReason as unknown as Record<string, number | undefined>)[key];
  return value === undefined ? ErrorReason.UNSPECIFIED : (value as ErrorReason);
}
