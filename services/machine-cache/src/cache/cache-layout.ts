import { createHash } from "node:crypto";
import path from "node:path";

/** Sub-directories of models/loras this service owns. */
export const USERS_DIR = "users";
export const SHARED_DIR = "shared";

/** Suffixes of a download in progress and of its record of completed ranges. */
export const PARTIAL_SUFFIX = ".partial";
export const SIDECAR_SUFFIX = ".partial.json";

/** Extensions ComfyUI lists as model files; it picks the loader by extension. */
export const MODEL_EXTENSIONS = [".safetensors", ".sft", ".pt", ".pth", ".ckpt", ".bin"];
const MAX_STEM = 100;

/**
 * A file name that cannot leave its directory or hide: the base name only,
 * letters, digits, '.', '_' and '-', no leading dot, at most 100 characters
 * before a model extension. `ext` (from the verified file format) wins over
 * the name's own, since ComfyUI chooses safetensors or torch loading by it.
 */
export function safeFileName(name: string, ext?: string): string {
  const base = name.split(/[/\\]/).pop() ?? "";
  const lower = base.toLowerCase();
  const own = MODEL_EXTENSIONS.find((e) => lower.endsWith(e));
  const stemRaw = own ? base.slice(0, base.length - own.length) : base;
  const extension = ext ?? own ?? ".safetensors";
  const stem = stemRaw
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "")
    .replace(/[^A-Za-z0-9._-]+/g, "_")
    .replace(/_{2,}/g, "_")
    .replace(/^[._-]+/, "")
    .slice(0, MAX_STEM)
    .replace(/[._-]+$/, "");
  return `${stem || "lora"}${extension}`;
}

/** users/{user_id}/{lora_id}-{safe name}: the file id keeps names unique per LoRA. */
export function userLoraRelPath(userId: string, loraId: string, fileName: string, ext?: string): string {
  return `${USERS_DIR}/${userId}/${loraId}-${safeFileName(fileName, ext)}`;
}

/**
 * shared/{name} when the name is already safe; otherwise the safe form plus
 * a hash of the original, so two names never land on one file.
 */
export function sharedLoraRelPath(name: string): string {
  const safe = safeFileName(name);
  if (safe === name) return `${SHARED_DIR}/${name}`;
  const ext = path.extname(safe);
  const digest = createHash("sha256").update(name).digest("hex").slice(0, 10);
  return `${SHARED_DIR}/${safe.slice(0, safe.length - ext.length)}-${digest}${ext}`;
}

/** The path ComfyUI's LoraLoader takes: relative to models/loras with '/' separators; undefined outside it. */
export function relativeToLoraDir(loraDir: string, absolute: string): string | undefined {
  const rel = path.relative(loraDir, absolute);
  if (!rel || rel.startsWith("..") || path.isAbsolute(rel)) return undefined;
  return rel.split(path.sep).join("/");
}

/** Absolute path of a relative one, refusing anything that would leave models/loras. */
export function absoluteInLoraDir(loraDir: string, relative: string): string {
  const abs = path.resolve(loraDir, relative);
  if (relativeToLoraDir(loraDir, abs) === undefined) throw new Error(`path escapes the LoRA directory: ${relative}`);
  return abs;
}
