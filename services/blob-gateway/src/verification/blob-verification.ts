import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  type BlobVerificationSchema,
  ErrorReason,
  FileFormat,
  type LoraMetadataSchema,
  ValidationStatus,
} from "@emprops/contracts";
import type { FileFormatName, LoraMetadataExtract, RejectReason, VerificationResult } from "@emprops/lora-formats";

export type BlobVerificationInit = MessageInitShape<typeof BlobVerificationSchema>;

const REASONS: Record<RejectReason, ErrorReason> = {
  INVALID_FILE_FORMAT: ErrorReason.INVALID_FILE_FORMAT,
  FILE_TOO_LARGE: ErrorReason.FILE_TOO_LARGE,
  UNSAFE_PICKLE: ErrorReason.UNSAFE_PICKLE,
  CHECKSUM_MISMATCH: ErrorReason.CHECKSUM_MISMATCH,
};

/** The API's reason for a verifier's rejection reason. */
export function errorReasonOf(reason: RejectReason): ErrorReason {
  return REASONS[reason];
}

const FORMATS: Record<FileFormatName, FileFormat> = {
  safetensors: FileFormat.SAFETENSORS,
  torch_zip: FileFormat.TORCH_ZIP,
  pickle: FileFormat.PICKLE,
};

/** The verifier's verdict as the API reports it: a rejection is a result, not an RPC error. */
export function toBlobVerification(r: VerificationResult): BlobVerificationInit {
  return {
    status: r.ok ? ValidationStatus.SAFE : ValidationStatus.REJECTED,
    reason: r.ok || !r.reason ? ErrorReason.UNSPECIFIED : errorReasonOf(r.reason),
    message: r.ok ? "" : (r.message ?? ""),
    sizeBytes: BigInt(r.sizeBytes),
    sha256: r.sha256,
    format: r.format ? FORMATS[r.format] : FileFormat.UNSPECIFIED,
    detectedType: r.detectedType,
    metadata: r.metadata ? toLoraMetadata(r.metadata) : undefined,
    unsafeGlobals: r.unsafeGlobals,
    tensorCount: r.tensorCount,
  };
}

function toLoraMetadata(m: LoraMetadataExtract): MessageInitShape<typeof LoraMetadataSchema> {
  return {
    baseModel: m.baseModel,
    // int32 fields: a value a file claims beyond int32 is not a real count.
    rank: int32(m.rank),
    alpha: m.alpha,
    triggerWords: m.triggerWords,
    trainingEpochs: int32(m.trainingEpochs),
    trainingImages: int32(m.trainingImages),
    resolution: m.resolution,
    description: m.description,
    title: m.title,
    networkModule: m.networkModule,
    raw: m.raw,
  };
}

function int32(n: number): number {
  return Number.isInteger(n) && n >= 0 && n <= 2_147_483_647 ? n : 0;
}
