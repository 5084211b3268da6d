/** Container formats a verified LoRA file may have. */
export type FileFormatName = "safetensors" | "torch_zip" | "pickle";

/** Machine-readable rejection reasons; they match the shared error reasons of the API. */
export type RejectReason = "INVALID_FILE_FORMAT" | "FILE_TOO_LARGE" | "UNSAFE_PICKLE" | "CHECKSUM_MISMATCH";

/** What the UI and the registry want to know about a LoRA, read from safetensors `__metadata__`. */
export interface LoraMetadataExtract {
  /** Normalised family ("SDXL", "SD1.5", "SD2", "SD3", "FLUX.1", …) or the raw value when unknown; "" if absent. */
  baseModel: string;
  /** Network dimension; 0 if absent or not a number. */
  rank: number;
  /** Network alpha; 0 if absent or not a number. */
  alpha: number;
  triggerWords: string[];
  trainingEpochs: number;
  trainingImages: number;
  /** "WIDTHxHEIGHT" or "". */
  resolution: string;
  description: string;
  title: string;
  networkModule: string;
  /** The whole `__metadata__` map, unchanged. */
  raw: Record<string, string>;
}

export interface VerificationResult {
  /** true = the file is safe to store and to hand to a loader. */
  ok: boolean;
  reason?: RejectReason;
  /** Safe to show to a user; says precisely what is wrong. */
  message?: string;
  /** Bytes fed to the verifier. */
  sizeBytes: number;
  /** Lower-case hex SHA-256 over every byte fed. */
  sha256: string;
  /** Set once the content was recognised as one of the accepted containers. */
  format?: FileFormatName;
  /** What the first bytes look like: "safetensors", "zip", "pickle", "png", "jpeg", "gzip", "gguf", "empty", "unknown", … */
  detectedType: string;
  /** Present when a safetensors header was parsed. */
  metadata?: LoraMetadataExtract;
  /** Pickle globals that are not on the allow-list, as "module.name". */
  unsafeGlobals: string[];
  /** Tensors declared by a safetensors header, or tensor rebuild calls found in a pickle. */
  tensorCount: number;
}

export interface VerifierOptions {
  /** The extension the file was uploaded under; the content must match it. */
  expectedExtension: "safetensors" | "pt";
  /** Files larger than this are rejected with FILE_TOO_LARGE as soon as the running size exceeds it. */
  maxSizeBytes: number;
  /** Size the client announced; a difference is a CHECKSUM_MISMATCH. */
  expectedSizeBytes?: number;
  /** SHA-256 (hex) the client announced; a difference is a CHECKSUM_MISMATCH. */
  expectedSha256?: string;
}
