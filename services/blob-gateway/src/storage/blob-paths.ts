import { checkLoraFileName, ErrorReason, MODEL_FILE_EXTENSIONS } from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";

/** File extensions a user LoRA may have. */
export type LoraExtension = "safetensors" | "pt";

/** A user LoRA blob whose ids have been checked. */
export interface UserBlobRef {
  kind: "user";
  userId: string;
  loraId: string;
  extension: LoraExtension;
  /** users/{user_id}/loras/{lora_id}.{ext} */
  path: string;
}

/** An upload's staging blob whose ids have been checked: the only path a signed write URL covers. */
export interface StagedBlobRef {
  kind: "staged";
  userId: string;
  uploadId: string;
  extension: LoraExtension;
  /** staging/{user_id}/{upload_id}.{ext} */
  path: string;
}

/** A shared LoRA blob whose name has been checked. */
export interface SharedBlobRef {
  kind: "shared";
  name: string;
  /** models/loras/{name} */
  path: string;
}

/** A LoRA's preview image whose ids have been checked: next to the LoRA, in the user container. */
export interface PreviewBlobRef {
  kind: "preview";
  userId: string;
  loraId: string;
  /** users/{user_id}/loras/{lora_id}.preview.webp */
  path: string;
}

export type BlobRef = UserBlobRef | StagedBlobRef | SharedBlobRef | PreviewBlobRef;

/** Where upload URLs write; never under users/, which only the gateway writes. */
export const STAGING_PREFIX = "staging/";
/** Where verified LoRAs (their converted copies and previews too) live. */
export const USERS_PREFIX = "users/";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const DECIMAL_ID = /^[1-9][0-9]{0,18}$/;
const INT64_MAX = 2n ** 63n - 1n;

/**
 * The only way a user LoRA path is made: from a UUID, a positive decimal id
 * and a known extension, so no input can leave users/{user_id}/loras/.
 */
export function userBlob(
  input: { userId: string; loraId: string; extension: string } | undefined,
  field = "blob",
): UserBlobRef {
  if (!input) throw invalidArgument(ErrorReason.INVALID_REQUEST, `${field} is required`, { field });
  const { userId } = checkedIds(input, field);
  const extension = checkedExtension(input.extension, field);
  return {
    kind: "user",
    userId,
    loraId: input.loraId,
    extension,
    path: `${USERS_PREFIX}${userId}/loras/${input.loraId}.${extension}`,
  };
}

/** The converted safetensors beside a .pt: users/{user_id}/loras/{lora_id}.safetensors. */
export function convertedBlob(original: UserBlobRef): UserBlobRef {
  return userBlob({ userId: original.userId, loraId: original.loraId, extension: "safetensors" });
}

/**
 * An upload's staging path, from a UUID user, a UUID upload id and a known
 * extension: staging/{user_id}/{upload_id}.{ext}.
 */
export function stagedUpload(
  input: { userId: string; uploadId: string; extension: string } | undefined,
  field = "upload",
): StagedBlobRef {
  if (!input) throw invalidArgument(ErrorReason.INVALID_REQUEST, `${field} is required`, { field });
  const userId = checkedUserId(input.userId, field);
  if (!UUID.test(input.uploadId)) {
    throw invalidArgument(ErrorReason.INVALID_ID, "upload_id must be a UUID", { field: `${field}.upload_id` });
  }
  const uploadId = input.uploadId.toLowerCase();
  const extension = checkedExtension(input.extension, field);
  return { kind: "staged", userId, uploadId, extension, path: `${STAGING_PREFIX}${userId}/${uploadId}.${extension}` };
}

/** A UUID and a positive decimal int64 id; the user id in lower case (one user, one prefix). */
function checkedIds(input: { userId: string; loraId: string }, field: string): { userId: string } {
  const userId = checkedUserId(input.userId, field);
  if (!DECIMAL_ID.test(input.loraId) || BigInt(input.loraId) > INT64_MAX) {
    throw invalidArgument(ErrorReason.INVALID_ID, "lora_id must be a positive decimal integer", {
      field: `${field}.lora_id`,
    });
  }
  return { userId };
}

function checkedUserId(userId: string, field: string): string {
  if (!UUID.test(userId)) {
    throw invalidArgument(ErrorReason.INVALID_ID, "user_id must be a UUID", { field: `${field}.user_id` });
  }
  // Postgres prints UUIDs in lower case; one user must map to one prefix.
  return userId.toLowerCase();
}

function checkedExtension(extension: string, field: string): LoraExtension {
  if (extension !== "safetensors" && extension !== "pt") {
    throw invalidArgument(ErrorReason.INVALID_FILE_FORMAT, 'extension must be "safetensors" or "pt"', {
      field: `${field}.extension`,
    });
  }
  return extension;
}

/** A LoRA's preview path, users/{user_id}/loras/{lora_id}.preview.webp, from checked ids only. */
export function previewBlob(input: { userId: string; loraId: string } | undefined, field = "blob"): PreviewBlobRef {
  if (!input) throw invalidArgument(ErrorReason.INVALID_REQUEST, `${field} is required`, { field });
  const { userId } = checkedIds(input, field);
  return {
    kind: "preview",
    userId,
    loraId: input.loraId,
    path: `${USERS_PREFIX}${userId}/loras/${input.loraId}.preview.webp`,
  };
}

/**
 * A shared LoRA path, models/loras/{name}: a name that passes the LoRA
 * file-name rule (any model extension ComfyUI loads), so it cannot reach
 * another folder. The name is used as given: blob names are exact, and NFC
 * could name another blob.
 */
export function sharedBlob(input: { name: string } | undefined, field = "name"): SharedBlobRef {
  const name = input?.name ?? "";
  const checked = checkLoraFileName(name, { extensions: MODEL_FILE_EXTENSIONS });
  if (!checked.ok) {
    throw invalidArgument(ErrorReason.INVALID_NAME, `shared LoRA name: ${checked.message}`, {
      field,
      problem: checked.problem,
    });
  }
  return { kind: "shared", name, path: `models/loras/${name}` };
}

/** A blob of the user LoRA container whose name the gateway makes, read back from its path. */
export type NamedUserContainerBlob = UserBlobRef | PreviewBlobRef | StagedBlobRef;

const USER_BLOB_NAME = /^users\/([0-9a-f-]{36})\/loras\/([0-9]+)\.(safetensors|pt|preview\.webp)$/;
const STAGED_BLOB_NAME = /^staging\/([0-9a-f-]{36})\/([0-9a-f-]{36})\.(safetensors|pt)$/;

/**
 * What a path of the user LoRA container names, when it is one the gateway
 * makes: parsed, then rebuilt by the functions above and compared, so a
 * name is recognised only if the gateway would write exactly it.
 */
export function parseUserContainerPath(path: string): NamedUserContainerBlob | undefined {
  try {
    const user = USER_BLOB_NAME.exec(path);
    if (user) {
      const [, userId, loraId, suffix] = user as unknown as [string, string, string, string];
      const ref =
        suffix === "preview.webp" ? previewBlob({ userId, loraId }) : userBlob({ userId, loraId, extension: suffix });
      return ref.path === path ? ref : undefined;
    }
    const staged = STAGED_BLOB_NAME.exec(path);
    if (staged) {
      const [, userId, uploadId, extension] = staged as unknown as [string, string, string, string];
      const ref = stagedUpload({ userId, uploadId, extension });
      return ref.path === path ? ref : undefined;
    }
  } catch {
    // An id the checks refuse: not a name the gateway makes.
  }
  return undefined;
}
