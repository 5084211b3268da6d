import { ErrorReason } from "@emprops/contracts";
import { checkHead, HEAD_MAX_BYTES, type HeadVerdict } from "@emprops/lora-formats";
import { invalidArgument } from "@emprops/platform";
import { errorReasonOf } from "../verification/blob-verification.js";

/**
 * Judges an upload's first bytes (CreateUploadUrl's head) with the verifier's rules before a URL is signed: a file
 * the verification would refuse whatever follows is refused now with the verifier's reason and message, so not a
 * block of it is stored. An empty head is no check.
 */
export function refuseWrongHead(
  head: Uint8Array,
  upload: { extension: "safetensors" | "pt"; sizeBytes: number },
): HeadVerdict | undefined {
  if (head.length === 0) return undefined;
  if (head.length > HEAD_MAX_BYTES) {
    throw invalidArgument(ErrorReason.INVALID_REQUEST, `head must be at most ${HEAD_MAX_BYTES} bytes`, {
      field: "head",
      max_head_bytes: HEAD_MAX_BYTES,
    });
  }
  if (head.length > upload.sizeBytes) {
    throw invalidArgument(ErrorReason.INVALID_REQUEST, "head must not be longer than size_bytes", { field: "head" });
  }
  const verdict = checkHead(head, { extension: upload.extension, sizeBytes: upload.sizeBytes });
  if (verdict.outcome === "refused") {
    // The metadata CompleteLoraUpload gives a refused file, so clients show both alike.
    throw invalidArgument(errorReasonOf(verdict.reason), verdict.message, {
      field: "head",
      head_bytes: head.length,
      detected_format: verdict.detectedType,
      ...(verdict.unsafeGlobals.length > 0 ? { unsafe_globals: verdict.unsafeGlobals.join(",") } : {}),
    });
  }
  return verdict;
}
