export type {
  FileFormatName,
  LoraMetadataExtract,
  RejectReason,
  VerificationResult,
  VerifierOptions,
} from "./types.js";
export { LoraVerifier, type Rejection } from "./lora-verifier.js";
export { verifyStream } from "./verify-stream.js";
export { checkHead, headLength, HEAD_MAX_BYTES, type HeadCheckOptions, type HeadVerdict } from "./head.js";
export { ContentCheck, type ContentCheckOptions } from "./content-check.js";
export { FormatError } from "./format-error.js";
export { detectType, DETECT_TYPE_PREFIX_BYTES } from "./detect-type.js";
export { parseSafetensorsHeader, type SafetensorsHeader, type SafetensorsTensorInfo } from "./safetensors-header.js";
export { SAFETENSORS_DTYPES, type SafetensorsDtype } from "./safetensors-dtypes.js";
export {
  SAFETENSORS_MAX_HEADER_BYTES,
  SAFETENSORS_MAX_METADATA_ENTRIES,
  SAFETENSORS_MAX_TENSORS,
} from "./safetensors-limits.js";
export { PickleScanner, type PickleScannerOptions } from "./pickle-scanner.js";
export { ALLOWED_PICKLE_GLOBALS } from "./pickle-allow-list.js";
export { extractLoraMetadata, normalizeBaseModel } from "./lora-metadata.js";
export { UnsafePickleError } from "./unsafe-pickle-error.js";
export {
  readTorchPickle,
  ALLOWED_TORCH_GLOBALS,
  MAX_TORCH_PICKLE_BYTES,
  MAX_TORCH_TENSORS,
  type TorchPickle,
} from "./torch-pickle.js";
export { layoutStateDict, type StateDictLayout, type StateDictTensor } from "./torch-state-dict.js";
export { TorchCheckpointReader, type TorchCheckpoint } from "./torch-checkpoint.js";
export { isTarHeader } from "./tar-header.js";
export {
  TorchToSafetensors,
  bufferSource,
  fileSource,
  type ConvertedTensor,
  type ConversionOptions,
  type RandomAccessSource,
} from "./torch-to-safetensors.js";
export { MAX_VIEW_EXTENT_BYTES, MAX_METADATA_JSON_BYTES } from "./torch-state-dict.js";
