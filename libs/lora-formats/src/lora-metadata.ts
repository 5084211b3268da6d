import type { LoraMetadataExtract } from "./types.js";

// Reads the training metadata kohya's sd-scripts (ss_*) and the Stability AI ModelSpec (modelspec.*) write into
// safetensors `__metadata__`. Values come from users: anything malformed is skipped, never thrown.

const MAX_TRIGGER_WORDS = 10;
const MAX_TRIGGER_PHRASES = 100;

/** Family patterns, tried in order; the first match names the base model. */
const BASE_MODEL_PATTERNS: readonly (readonly [RegExp, string])[] = [
  [/flux/, "FLUX.1"],
  [/chroma/, "Chroma"],
  [/stable-diffusion-xl|sdxl|sd_xl|(^|[^a-z])xl([^a-z]|$)/, "SDXL"],
  [/stable-diffusion-3|(^|[^a-z0-9])sd_?3([^0-9]|$)/, "SD3"],
  [/stable-diffusion-v2|(^|[^a-z0-9])sd_?v?2([^0-9]|$)|(^|[^a-z0-9])v2-[01]/, "SD2"],
  [/stable-diffusion-v1|(^|[^a-z0-9])sd_?v?1([^0-9]|$)|(^|[^a-z0-9])sd_?1\.?5|v1-[45]/, "SD1.5"],
  [/lumina/, "Lumina"],
  [/stable-cascade/, "Stable Cascade"],
];

export function extractLoraMetadata(meta: Record<string, string>): LoraMetadataExtract {
  const get = (key: string): string => {
    const value: unknown = Object.prototype.hasOwnProperty.call(meta, key) ? meta[key] : undefined;
    return typeof value === "string" ? value.trim() : "";
  };
  const triggerPhrase = splitTriggerPhrase(get("modelspec.trigger_phrase"));
  return {
    baseModel: baseModel(
      get("modelspec.architecture"),
      get("ss_base_model_version"),
      get("ss_sd_model_name"),
      get("ss_v2"),
    ),
    rank: parseCount(get("ss_network_dim")),
    alpha: parseDecimal(get("ss_network_alpha")),
    triggerWords: triggerPhrase.length > 0 ? triggerPhrase : topTags(get("ss_tag_frequency")),
    trainingEpochs: parseCount(get("ss_num_epochs")) || parseCount(get("ss_epoch")),
    trainingImages: parseCount(get("ss_num_train_images")),
    resolution: normalizeResolution(get("modelspec.resolution")) || normalizeResolution(get("ss_resolution")),
    description: get("modelspec.description"),
    title: get("modelspec.title") || get("ss_output_name"),
    networkModule: get("ss_network_module"),
    raw: Object.fromEntries(
      Object.entries(meta).filter((entry): entry is [string, string] => typeof entry[1] === "string"),
    ),
  };
}

/** Maps an architecture id, kohya version tag or checkpoint name to a model family, or undefined. */
export function normalizeBaseModel(value: string): string | undefined {
  const lower = value.toLowerCase();
  for (const [pattern, family] of BASE_MODEL_PATTERNS) if (pattern.test(lower)) return family;
  return undefined;
}

function baseModel(architecture: string, versionTag: string, checkpointName: string, v2Flag: string): string {
  for (const source of [architecture, versionTag, checkpointName]) {
    const family = source ? normalizeBaseModel(source) : undefined;
    if (family) return family;
  }
  // Old kohya files only say ss_v2 = "True" for SD 2.x and nothing at all for SD 1.x.
  if (v2Flag.toLowerCase() === "true") return "SD2";
  const stripAdapter = (id: string): string => id.replace(/\/[^/]*$/, "");
  return stripAdapter(architecture) || versionTag || checkpointName;
}

/** Non-negative integers written as "16" or "16.0"; anything else is 0. */
function parseCount(text: string): number {
  if (!/^\+?[0-9]+(\.0*)?$/.test(text)) return 0;
  const value = Number(text);
  return Number.isSafeInteger(value) ? value : 0;
}

function parseDecimal(text: string): number {
  if (!/^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$/.test(text)) return 0;
  const value = Number(text);
  return Number.isFinite(value) ? value : 0;
}

function splitTriggerPhrase(text: string): string[] {
  const words: string[] = [];
  for (const part of text.split(",")) {
    const word = part.trim();
    if (word && !words.includes(word)) words.push(word);
    if (words.length >= MAX_TRIGGER_PHRASES) break;
  }
  return words;
}

/** ss_tag_frequency is JSON {dataset: {tag: count}}; the most frequent tags summed over datasets. */
function topTags(json: string): string[] {
  if (!json) return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    return [];
  }
  if (!isPlainObject(parsed)) return [];
  const totals = new Map<string, number>();
  for (const dataset of Object.values(parsed)) {
    if (!isPlainObject(dataset)) continue;
    for (const [rawTag, count] of Object.entries(dataset)) {
      const tag = rawTag.trim();
      if (!tag || typeof count !== "number" || !Number.isFinite(count) || count <= 0) continue;
      totals.set(tag, (totals.get(tag) ?? 0) + count);
    }
  }
  return [...totals.entries()]
    .sort(([tagA, a], [tagB, b]) => b - a || (tagA < tagB ? -1 : tagA > tagB ? 1 : 0))
    .slice(0, MAX_TRIGGER_WORDS)
    .map(([tag]) => tag);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** "(1024, 1024)", "[512,768]", "1024x1024" or "768" → "WxH"; anything else → "". */
function normalizeResolution(text: string): string {
  const match = /^[([]?\s*([0-9]{1,6})\s*(?:[,x×*]\s*([0-9]{1,6})\s*)?[)\]]?$/i.exec(text);
  if (!match?.[1]) return "";
  const width = Number(match[1]);
  const height = Number(match[2] ?? match[1]);
  return width > 0 && height > 0 ? `${width}x${height}` : "";
}
