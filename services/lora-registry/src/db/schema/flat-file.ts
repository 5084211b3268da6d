import type { ColumnType, Generated } from "kysely";

/** The LoRA part of flat_file.gen_out_data (other flat_file rows hold other shapes). */
export interface LoraGenOutData {
  /** Verified size; the declared size while the upload is pending. */
  size_bytes?: number;
  /** "sha256:<hex>", once verified. */
  file_hash?: string;
  /** Extracted metadata merged with what the user stated (without the raw header map). */
  lora_metadata?: StoredLoraMetadata;
  /** "emprops_studio", "api", "cli", ... */
  upload_source?: string;
  /**
   * "pending" while uploading, "safe" once verified; an upload that never
   * became visible ends "rejected" (verification failed), "aborted" or "expired".
   */
  validation_status?: "pending" | "safe" | "rejected" | "aborted" | "expired";
  /** "safetensors" | "torch_zip" | "pickle". */
  format?: string;
  /** File extension without the dot. */
  extension?: string;
  /**
   * Path of the verified file in the user LoRA container,
   * users/{user_id}/loras/{id}.{ext} (the original the user uploaded).
   */
  blob_path?: string;
  /** ETag of that blob as the gateway stored it (without quotes); the consistency sweep reports a blob whose ETag differs. */
  blob_etag?: string;
  /** ETag of the staging blob whose bytes were verified and copied to blob_path. */
  verified_etag?: string;
  /** For a .pt: the safetensors converted from it, the file machines receive (not counted in the quota). */
  converted?: ConvertedBlob;
  /** Tensors in the file. */
  tensor_count?: number;
  /** What verification extracted from the file, including the raw header map. */
  extracted_metadata?: StoredLoraMetadata;
  /** What the user stated at upload or changed later. */
  user_metadata?: StoredUserMetadata;
  /** ISO time of deletion; set together with hidden = true. */
  deleted_at?: string;
  /** The preview image stored next to the blob (users/{user}/loras/{id}.preview.webp), when there is one. */
  preview?: StoredPreview;
}

/** What the gateway stored as a LoRA's preview. */
export interface StoredPreview {
  /** "file": the file's modelspec.thumbnail; "uploaded": SetLoraPreview. */
  source: "file" | "uploaded";
  width: number;
  height: number;
  size_bytes: number;
  /** Hex sha256 of the stored WebP. */
  sha256: string;
  /** ISO time it was stored. */
  updated_at: string;
}

/** A blob the gateway derived from the uploaded file. */
export interface ConvertedBlob {
  /** users/{user_id}/loras/{id}.safetensors */
  blob_path: string;
  size_bytes: number;
  /** Lower-case hex sha256 of the converted file (what machines check). */
  sha256: string;
  etag: string;
}

export interface StoredLoraMetadata {
  base_model?: string;
  rank?: number;
  alpha?: number;
  trigger_words?: string[];
  training_epochs?: number;
  training_images?: number;
  resolution?: string;
  description?: string;
  title?: string;
  network_module?: string;
  raw?: Record<string, string>;
}

export interface StoredUserMetadata {
  base_model?: string;
  trigger_words?: string[];
  description?: string;
}

/**
 * flat_file exactly as the platform's Prisma model defines it. Timestamps
 * are `timestamp(3)` without zone holding UTC (Prisma's convention); write
 * them with toDbTimestamp(). int8 columns arrive as strings.
 */
export interface FlatFileTable {
  id: Generated<string>;
  created_at: ColumnType<Date | null, string | undefined, string>;
  url: string | null;
  hidden: ColumnType<boolean | null, boolean | undefined, boolean>;
  user_id: string;
  name: string;
  gen_in_data: ColumnType<unknown, string | null | undefined, string | null>;
  gen_out_data: ColumnType<LoraGenOutData | null, string | null | undefined, string | null>;
  mime_type: string | null;
  rel_id: string | null;
  rel_type: string | null;
  tags: ColumnType<string[] | null, string[] | undefined, string[]>;
}
