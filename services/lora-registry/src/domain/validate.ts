import {
  checkLoraFileName,
  ErrorReason,
  type LoraUploadExtension,
  MAX_LORA_FILE_NAME_BYTES,
  MODEL_FILE_EXTENSIONS,
  UPLOAD_HEAD_MAX_BYTES,
  type UserLoraMetadata,
} from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";
import type { StoredUserMetadata } from "../db/schema/index.js";

const MAX_BIGINT = 9223372036854775807n;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;
const MAX_TAGS = 20;
const MAX_TAG = 64;
const MAX_TRIGGER_WORDS = 50;
const MAX_TRIGGER_WORD = 100;
const MAX_DESCRIPTION = 2000;
const MAX_BASE_MODEL = 64;

/** A flat_file id: a positive decimal int64. */
export function parseLoraId(value: string, field = "lora_id"): string {
  if (!/^[1-9][0-9]{0,18}$/.test(value) || BigInt(value) > MAX_BIGINT) {
    throw invalidArgument(
      ErrorReason.INVALID_ID,
      value === ""
        ? `${field} is required`
        : `${field} must be a positive decimal integer, got ${JSON.stringify(clip(value))}`,
      { field },
    );
  }
  return value;
}

/** A UUID, lower-cased. */
export function parseUuid(value: string, field: string): string {
  if (!UUID.test(value)) {
    throw invalidArgument(
      ErrorReason.INVALID_ID,
      value === "" ? `${field} is required` : `${field} must be a UUID, got ${JSON.stringify(clip(value))}`,
      { field },
    );
  }
  return value.toLowerCase();
}

/** An optional UUID filter: "" means none. */
export function parseOptionalUuid(value: string, field: string): string | undefined {
  return value === "" ? undefined : parseUuid(value, field);
}

/** A LoRA file name, by the one rule every part of the platform applies (returned in NFC). */
export function parseLoraName(value: string, field = "name"): { name: string; extension: LoraUploadExtension } {
  const checked = checkLoraFileName(value);
  if (!checked.ok) {
    throw invalidArgument(checked.reason, checked.message, {
      field,
      problem: checked.problem,
      ...(checked.problem === "too_long" ? { max_bytes: MAX_LORA_FILE_NAME_BYTES } : {}),
      ...(checked.problem === "extension" ? { detected_format: detectedFormat(value) } : {}),
    });
  }
  return { name: checked.name, extension: checked.extension as LoraUploadExtension };
}

/** A shared LoRA's file name (emprops-share/models/loras/{name}): the same rule, any model extension. */
export function parseSharedLoraName(value: string, field: string): string {
  if (value.trim() === "") {
    throw invalidArgument(ErrorReason.INVALID_REFERENCE, `${field}: a shared LoRA is named by its file name`, {
      field,
    });
  }
  const checked = checkLoraFileName(value, { extensions: MODEL_FILE_EXTENSIONS });
  if (!checked.ok) {
    throw invalidArgument(ErrorReason.INVALID_NAME, `${field}: ${checked.message}`, {
      field,
      problem: checked.problem,
    });
  }
  return value;
}

function detectedFormat(name: string): string {
  const dot = name.lastIndexOf(".");
  return dot < 0 || dot === name.length - 1 ? "none" : `.${clip(name.slice(dot + 1).toLowerCase(), 32)}`;
}

/** A declared upload size: a positive integer no larger than the per-LoRA limit. */
export function parseUploadSize(value: bigint, maxBytes: number): number {
  if (value <= 0n) {
    throw invalidArgument(ErrorReason.INVALID_SIZE, `size_bytes must be positive, got ${value}`, {
      field: "size_bytes",
    });
  }
  if (value > BigInt(maxBytes)) {
    throw invalidArgument(
      ErrorReason.FILE_TOO_LARGE,
      `The file is ${value} bytes; a LoRA may be at most ${maxBytes} bytes`,
      { field: "size_bytes", size_bytes: value, max_bytes: maxBytes },
    );
  }
  return Number(value);
}

/** User tags: at most 20, each 1–64 printable characters; trimmed, de-duplicated, without "lora". */
export function parseTags(values: readonly string[], field = "tags"): string[] {
  if (values.length > MAX_TAGS) {
    throw invalidArgument(ErrorReason.INVALID_TAGS, `at most ${MAX_TAGS} tags are allowed, got ${values.length}`, {
      field,
      max_tags: MAX_TAGS,
    });
  }
  const out: string[] = [];
  for (const raw of values) {
    const tag = raw.trim();
    if (tag === "" || tag.length > MAX_TAG || CONTROL.test(tag)) {
      throw invalidArgument(
        ErrorReason.INVALID_TAGS,
        `each tag must be 1–${MAX_TAG} printable characters, got ${JSON.stringify(clip(raw))}`,
        { field, max_length: MAX_TAG },
      );
    }
    if (tag !== "lora" && !out.includes(tag)) out.push(tag);
  }
  return out;
}

/** Trigger words: at most 50, each 1–100 printable characters. */
export function parseTriggerWords(values: readonly string[], field: string): string[] {
  if (values.length > MAX_TRIGGER_WORDS) {
    throw invalidArgument(ErrorReason.INVALID_REQUEST, `at most ${MAX_TRIGGER_WORDS} trigger words are allowed`, {
      field,
    });
  }
  return values.map((raw) => {
    const word = raw.trim();
    if (word === "" || word.length > MAX_TRIGGER_WORD || CONTROL.test(word)) {
      throw invalidArgument(
        ErrorReason.INVALID_REQUEST,
        `each trigger word must be 1–${MAX_TRIGGER_WORD} printable characters`,
        { field },
      );
    }
    return word;
  });
}

export function parseDescription(value: string, field: string): string {
  if (value.length > MAX_DESCRIPTION) {
    throw invalidArgument(ErrorReason.INVALID_REQUEST, `${field} must be at most ${MAX_DESCRIPTION} characters`, {
      field,
    });
  }
  return value.trim();
}

/** What the user states about a LoRA at upload. */
export function parseUserMetadata(meta: UserLoraMetadata | undefined): StoredUserMetadata {
  if (!meta) return {};
  const baseModel = meta.baseModel.trim();
  if (baseModel.length > MAX_BASE_MODEL || CONTROL.test(baseModel)) {
    throw invalidArgument(
      ErrorReason.INVALID_REQUEST,
      `metadata.base_model must be at most ${MAX_BASE_MODEL} printable characters`,
      { field: "metadata.base_model" },
    );
  }
  const out: StoredUserMetadata = {};
  if (baseModel) out.base_model = baseModel;
  const words = parseTriggerWords(meta.triggerWords, "metadata.trigger_words");
  if (words.length > 0) out.trigger_words = words;
  const description = parseDescription(meta.description, "metadata.description");
  if (description) out.description = description;
  return out;
}

/** An optional lower-case hex sha256 (upper case accepted). */
export function parseOptionalSha256(value: string, field = "sha256"): string | undefined {
  if (value === "") return undefined;
  if (!/^[0-9a-f]{64}$/i.test(value)) {
    throw invalidArgument(ErrorReason.INVALID_REQUEST, `${field} must be 64 hexadecimal characters`, { field });
  }
  return value.toLowerCase();
}

/** CreateLoraUpload's head: the file's first bytes, at most 1 MiB and never more than the file; empty = none. */
export function parseUploadHead(head: Uint8Array, sizeBytes: number): Uint8Array | undefined {
  if (head.length === 0) return undefined;
  if (head.length > UPLOAD_HEAD_MAX_BYTES) {
    throw invalidArgument(ErrorReason.INVALID_REQUEST, `head must be at most ${UPLOAD_HEAD_MAX_BYTES} bytes`, {
      field: "head",
      max_head_bytes: UPLOAD_HEAD_MAX_BYTES,
    });
  }
  if (head.length > sizeBytes) {
    throw invalidArgument(ErrorReason.INVALID_REQUEST, "head must not be longer than size_bytes", { field: "head" });
  }
  return head;
}

/** Where an upload comes from, e.g. "emprops_studio"; "api" when empty. */
export function parseUploadSource(value: string): string {
  if (value === "") return "api";
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(value)) {
    throw invalidArgument(ErrorReason.INVALID_REQUEST, "upload_source must be 1–64 letters, digits, '_', '.' or '-'", {
      field: "upload_source",
    });
  }
  return value;
}

/** A short free-text field (job id, machine id, reason): at most `max` printable characters. */
export function parseShortText(value: string, field: string, max: number): string {
  if (value.length > max || CONTROL.test(value)) {
    throw invalidArgument(ErrorReason.INVALID_REQUEST, `${field} must be at most ${max} printable characters`, {
      field,
    });
  }
  return value;
}

/** What UpdateLora may change. */
export const LORA_UPDATE_FIELDS = ["name", "tags", "description", "trigger_words"] as const;
export type LoraUpdateField = (typeof LORA_UPDATE_FIELDS)[number];

/** The mask's fields; with no mask, the fields the request sets (AIP-134). */
export function parseLoraUpdateMask(
  paths: readonly string[],
  req: { name: string; tags: string[]; description: string; triggerWords: string[] },
): Set<LoraUpdateField> {
  const set = new Set<LoraUpdateField>();
  if (paths.length === 0) {
    if (req.name !== "") set.add("name");
    if (req.tags.length > 0) set.add("tags");
    if (req.description !== "") set.add("description");
    if (req.triggerWords.length > 0) set.add("trigger_words");
    if (set.size === 0) {
      throw invalidArgument(
        ErrorReason.INVALID_UPDATE_MASK,
        `nothing to update: set update_mask to some of ${LORA_UPDATE_FIELDS.join(", ")}`,
        { field: "update_mask" },
      );
    }
    return set;
  }
  for (const path of paths) {
    const field = path === "triggerWords" ? "trigger_words" : path;
    if (!(LORA_UPDATE_FIELDS as readonly string[]).includes(field)) {
      throw invalidArgument(
        ErrorReason.INVALID_UPDATE_MASK,
        `update_mask names ${JSON.stringify(path)}, which cannot be updated; use ${LORA_UPDATE_FIELDS.join(", ")}`,
        { field: "update_mask", path },
      );
    }
    set.add(field as LoraUpdateField);
  }
  return set;
}

function clip(value: string, max = 80): string {
  return value.length > max ? `${value.slice(0, max)}…` : value;
}
