import { create } from "@bufbuild/protobuf";
import { FileFormat, type LoraReference, LoraReferenceSchema, LoraSource } from "@emprops/contracts";
import type { LoraSourceName } from "../db/lora-files.js";

/** A validated reference as this cache keys it: user LoRAs by owner and id, shared ones by name. */
export interface LoraKey {
  source: LoraSourceName;
  /** Owner (lower-case UUID) for user LoRAs; "" for shared ones. */
  userId: string;
  /** Decimal flat_file id for user LoRAs; file name for shared ones. */
  identifier: string;
}

export function keyString(key: LoraKey): string {
  return `${key.source}:${key.userId}:${key.identifier}`;
}

export function referenceOf(key: LoraKey): LoraReference {
  return create(LoraReferenceSchema, {
    source: key.source === "user" ? LoraSource.USER : LoraSource.SHARED,
    identifier: key.identifier,
  });
}

/** The extension ComfyUI needs for the verified format; undefined when the format is unknown. */
export function extensionOf(format: FileFormat): string | undefined {
  switch (format) {
    case FileFormat.SAFETENSORS:
      return ".safetensors";
    case FileFormat.TORCH_ZIP:
    case FileFormat.PICKLE:
      return ".pt";
    default:
      return undefined;
  }
}
