import path from "node:path";
import { checkLoraFileName, MODEL_FILE_EXTENSIONS } from "@emprops/contracts";

/**
 * Where user LoRAs are cached by default: beside ComfyUI's models/, in no
 * folder ComfyUI lists models from, so nothing but this service's answer
 * (checked against the job's user) can name them.
 */
export const DEFAULT_USER_LORA_DIR = "user_lora_cache";
/** The specification's layout, models/loras/users/: ComfyUI lists these files to every workflow. */
export const USERS_DIR = "users";
/** Shared LoRAs, in models/loras/shared/, where ComfyUI lists them. */
export const SHARED_DIR = "shared";

/** Modes of the user LoRA directory and files: the service's user only, or its group too. */
export function userLoraModes(groupReadable: boolean): { dir: number; file: number } {
  return groupReadable ? { dir: 0o750, file: 0o640 } : { dir: 0o700, file: 0o600 };
}

/** Suffixes of a download in progress and of its record of completed ranges. */
export const PARTIAL_SUFFIX = ".partial";
export const SIDECAR_SUFFIX = ".partial.json";

/**
 * A user LoRA's file name on disk: its name when it passes the LoRA
 * file-name rule (in NFC), else "lora" (a name stored before the rule).
 * `ext` (from the verified file format, e.g. ".safetensors") wins over the
 * name's own, since ComfyUI chooses safetensors or torch loading by it.
 */
export function userLoraFileName(name: string, ext?: string): string {
  const checked = checkLoraFileName(name, { extensions: MODEL_FILE_EXTENSIONS });
  const stem = checked.ok ? checked.stem : "lora";
  const extension = ext ?? (checked.ok ? `.${checked.extension}` : ".safetensors");
  return `${stem}${extension}`;
}

/** {user_id}/{lora_id}-{name}, relative to the user LoRA directory: the file id keeps names unique per LoRA. */
export function userLoraRelPath(userId: string, loraId: string, fileName: string, ext?: string): string {
  return `${userId}/${loraId}-${userLoraFileName(fileName, ext)}`;
}

/** shared/{name}, for a name that passes the LoRA file-name rule (parseSharedName has checked it). */
export function sharedLoraRelPath(name: string): string {
  const checked = checkLoraFileName(name, { extensions: MODEL_FILE_EXTENSIONS });
  if (!checked.ok) throw new Error(`not a shared LoRA name: ${checked.message}`);
  return `${SHARED_DIR}/${name}`;
}

/** The path ComfyUI's LoraLoader takes: relative to models/loras with '/' separators; undefined outside it. */
export function relativeToLoraDir(loraDir: string, absolute: string): string | undefined {
  const rel = path.relative(loraDir, absolute);
  if (!rel || rel.startsWith("..") || path.isAbsolute(rel)) return undefined;
  return rel.split(path.sep).join("/");
}

/** Absolute path of a relative one, refusing anything that would leave `loraDir` (models/loras or the user LoRA directory). */
export function absoluteInLoraDir(loraDir: string, relative: string): string {
  const abs = path.resolve(loraDir, relative);
  if (relativeToLoraDir(loraDir, abs) === undefined) throw new Error(`path escapes the LoRA directory: ${relative}`);
  return abs;
}
