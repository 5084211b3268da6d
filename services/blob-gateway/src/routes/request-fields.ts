import { ErrorReason } from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";

/** A requested URL lifetime: 0 means the default; above the maximum is refused. */
export function ttlSeconds(requested: number, defaults: { ttl: number; max: number }, field = "ttl_seconds"): number {
  if (requested < 0) throw invalidArgument(ErrorReason.INVALID_REQUEST, `${field} must not be negative`, { field });
  if (requested > defaults.max) {
    throw invalidArgument(ErrorReason.INVALID_REQUEST, `${field} must be at most ${defaults.max}`, {
      field,
      max_ttl_seconds: defaults.max,
    });
  }
  return requested === 0 ? defaults.ttl : requested;
}

/** A declared file size: a positive integer no larger than the LoRA limit. */
export function declaredSize(value: bigint, maxBytes: number, field = "size_bytes"): number {
  if (value <= 0n) throw invalidArgument(ErrorReason.INVALID_SIZE, `${field} must be a positive integer`, { field });
  if (value > BigInt(maxBytes)) {
    throw invalidArgument(ErrorReason.FILE_TOO_LARGE, `${field} is larger than the limit of ${maxBytes} bytes`, {
      field,
      max_size_bytes: maxBytes,
      size_bytes: value,
    });
  }
  return Number(value);
}

/** An optional limit or expectation in bytes: 0 means "not given". */
export function optionalBytes(value: bigint, field: string): number | undefined {
  if (value < 0n) throw invalidArgument(ErrorReason.INVALID_SIZE, `${field} must not be negative`, { field });
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw invalidArgument(ErrorReason.INVALID_SIZE, `${field} is too large`, { field });
  }
  return value === 0n ? undefined : Number(value);
}

/** An optional sha256: empty, or 64 hex digits (a "sha256:" prefix is accepted). Lower case out. */
export function optionalSha256(value: string, field = "expected_sha256"): string | undefined {
  if (value === "") return undefined;
  const hex = value.startsWith("sha256:") ? value.slice("sha256:".length) : value;
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) {
    throw invalidArgument(ErrorReason.INVALID_REQUEST, `${field} must be 64 hexadecimal digits`, { field });
  }
  return hex.toLowerCase();
}
