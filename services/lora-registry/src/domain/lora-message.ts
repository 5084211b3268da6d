import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  FileFormat,
  type Lora,
  type LoraMetadata,
  LoraMetadataSchema,
  type LoraPreview,
  LoraPreviewSchema,
  PreviewSource,
  LoraSchema,
  LoraState,
  type WorkflowRef,
  WorkflowRefSchema,
} from "@emprops/contracts";
import type { Selectable } from "kysely";
import type { LoraRow } from "../db/queries/loras.js";
import type {
  LoraGenOutData,
  LoraWorkflowUsageTable,
  StoredLoraMetadata,
  StoredPreview,
  StoredUserMetadata,
} from "../db/schema/index.js";

const FORMATS: Record<string, FileFormat> = {
  safetensors: FileFormat.SAFETENSORS,
  torch_zip: FileFormat.TORCH_ZIP,
  pickle: FileFormat.PICKLE,
};

export function formatName(format: FileFormat): string {
  return Object.entries(FORMATS).find(([, f]) => f === format)?.[0] ?? "";
}

export function toFileFormat(name: string | undefined): FileFormat {
  return (name ? FORMATS[name] : undefined) ?? FileFormat.UNSPECIFIED;
}

/** "sha256:<hex>" → "<hex>". */
export function sha256Of(data: LoraGenOutData | null): string {
  const hash = data?.file_hash ?? "";
  return hash.startsWith("sha256:") ? hash.slice("sha256:".length) : "";
}

export function sizeOf(data: LoraGenOutData | null): number {
  const size = data?.size_bytes;
  return typeof size === "number" && Number.isFinite(size) ? Math.floor(size) : 0;
}

/** Extracted values overridden by what the user stated (the specification's lora_metadata). */
export function mergeMetadata(extracted: StoredLoraMetadata, user: StoredUserMetadata): StoredLoraMetadata {
  const { raw: _raw, ...merged } = extracted;
  if (user.base_model) merged.base_model = user.base_model;
  if (user.trigger_words && user.trigger_words.length > 0) merged.trigger_words = user.trigger_words;
  if (user.description) merged.description = user.description;
  return merged;
}

export function toMetadataMessage(m: StoredLoraMetadata | undefined, raw?: Record<string, string>): LoraMetadata {
  return create(LoraMetadataSchema, {
    baseModel: m?.base_model ?? "",
    rank: m?.rank ?? 0,
    alpha: m?.alpha ?? 0,
    triggerWords: m?.trigger_words ?? [],
    trainingEpochs: m?.training_epochs ?? 0,
    trainingImages: m?.training_images ?? 0,
    resolution: m?.resolution ?? "",
    description: m?.description ?? "",
    title: m?.title ?? "",
    networkModule: m?.network_module ?? "",
    raw: raw ?? {},
  });
}

/** The LoraMetadata message as stored (no raw map, no zero values). */
export function fromMetadataMessage(m: LoraMetadata | undefined): StoredLoraMetadata {
  if (!m) return {};
  const out: StoredLoraMetadata = {};
  if (m.baseModel) out.base_model = m.baseModel;
  if (m.rank) out.rank = m.rank;
  if (m.alpha) out.alpha = m.alpha;
  if (m.triggerWords.length > 0) out.trigger_words = [...m.triggerWords];
  if (m.trainingEpochs) out.training_epochs = m.trainingEpochs;
  if (m.trainingImages) out.training_images = m.trainingImages;
  if (m.resolution) out.resolution = m.resolution;
  if (m.description) out.description = m.description;
  if (m.title) out.title = m.title;
  if (m.networkModule) out.network_module = m.networkModule;
  if (Object.keys(m.raw).length > 0) out.raw = { ...m.raw };
  return out;
}

/** The stored preview as a message; undefined without one. */
export function toPreviewMessage(p: StoredPreview | undefined): LoraPreview | undefined {
  if (!p) return undefined;
  const updated = new Date(p.updated_at);
  return create(LoraPreviewSchema, {
    source: p.source === "file" ? PreviewSource.FILE : PreviewSource.UPLOADED,
    width: p.width,
    height: p.height,
    sizeBytes: BigInt(p.size_bytes),
    updateTime: Number.isNaN(updated.getTime()) ? undefined : timestampFromDate(updated),
  });
}

export function toLora(row: LoraRow, extra: { workflows?: WorkflowRef[]; withRaw?: boolean } = {}): Lora {
  const data = row.gen_out_data;
  const pending = data?.validation_status === "pending";
  return create(LoraSchema, {
    id: row.id,
    userId: row.user_id,
    name: row.name,
    sizeBytes: BigInt(sizeOf(data)),
    sha256: sha256Of(data),
    createdAt: row.created_at ? timestampFromDate(row.created_at) : undefined,
    tags: row.tags ?? [],
    usageCount: BigInt(row.usage_count ?? 0),
    lastUsedAt: row.last_used_at ? timestampFromDate(row.last_used_at) : undefined,
    metadata: toMetadataMessage(data?.lora_metadata, extra.withRaw ? data?.extracted_metadata?.raw : undefined),
    workflowsUsing: extra.workflows ?? [],
    format: toFileFormat(data?.format),
    state: pending ? LoraState.PENDING : LoraState.READY,
    uploadSource: data?.upload_source ?? "",
    validationStatus: pending ? "" : (data?.validation_status ?? ""),
    preview: toPreviewMessage(data?.preview),
  });
}

export function toWorkflowRef(w: Selectable<LoraWorkflowUsageTable>): WorkflowRef {
  return create(WorkflowRefSchema, {
    id: w.workflow_id,
    name: w.workflow_name,
    useCount: BigInt(w.use_count),
    lastUsedAt: timestampFromDate(w.last_used_at),
  });
}
