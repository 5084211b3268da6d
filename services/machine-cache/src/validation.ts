import {
  checkLoraFileName,
  ErrorReason,
  type LoraReference,
  LoraSource,
  MODEL_FILE_EXTENSIONS,
} from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";
import type { LoraKey } from "./cache/lora-key.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MAX_ID = 9223372036854775807n;

/** Largest number of references one EnsureLoras may carry (refs and workflow together). */
export const MAX_REFS = 64;

/** A user id: a UUID, returned in lower case. */
export function parseUserId(value: string, field = "user_id"): string {
  if (!UUID.test(value)) {
    throw invalidArgument(ErrorReason.INVALID_ID, `${field} must be a UUID`, { field });
  }
  return value.toLowerCase();
}

/** A flat_file id: a positive decimal int64, without leading zeros. */
export function parseLoraId(value: string, field: string): string {
  if (!/^\d{1,19}$/.test(value) || BigInt(value) === 0n || BigInt(value) > MAX_ID) {
    throw invalidArgument(
      ErrorReason.INVALID_ID,
      `${field}: a user LoRA identifier must be a flat_file id like "123"`,
      {
        field,
      },
    );
  }
  return BigInt(value).toString();
}

/** A shared LoRA's file name, by the LoRA file-name rule with any model extension ComfyUI loads. */
export function parseSharedName(value: string, field: string): string {
  const checked = checkLoraFileName(value, { extensions: MODEL_FILE_EXTENSIONS });
  if (!checked.ok) {
    throw invalidArgument(
      ErrorReason.INVALID_NAME,
      `${field}: a shared LoRA identifier is a file name such as "style.safetensors". ${checked.message}`,
      {
        field,
        problem: checked.problem,
      },
    );
  }
  return value;
}

/**
 * A reference as this cache keys it. User references need the job's user
 * (`userId`, already validated; "" when the request has none).
 */
export function parseReference(ref: LoraReference, userId: string, field: string): LoraKey {
  const identifier = ref.identifier.trim();
  if (identifier === "") {
    throw invalidArgument(ErrorReason.INVALID_REFERENCE, `${field}: identifier is empty`, { field });
  }
  switch (ref.source) {
    case LoraSource.USER:
      if (!userId) {
        throw invalidArgument(ErrorReason.INVALID_ID, `user_id is required for user LoRAs (${field})`, {
          field: "user_id",
        });
      }
      return { source: "user", userId, identifier: parseLoraId(identifier, field) };
    case LoraSource.SHARED:
      // Untrimmed: the file-name rule refuses edge spaces rather than guessing.
      return { source: "shared", userId: "", identifier: parseSharedName(ref.identifier, field) };
    default:
      throw invalidArgument(ErrorReason.INVALID_REFERENCE, `${field}: source must be user or shared`, { field });
  }
}
