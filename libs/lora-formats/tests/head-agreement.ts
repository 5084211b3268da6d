import { checkHead, HEAD_MAX_BYTES, type HeadVerdict } from "../src/head.js";
import type { VerificationResult } from "../src/index.js";

/**
 * The head check of `file`'s first `cut` bytes (a MiB by default), held to the verifier's verdict on the whole
 * file: it may refuse only what the verifier refuses, for the same reason; on a whole file the two verdicts are the
 * same. Throws a message naming both verdicts otherwise.
 */
export function headAgrees(
  file: Uint8Array,
  extension: "safetensors" | "pt",
  full: VerificationResult,
  cut = HEAD_MAX_BYTES,
): HeadVerdict {
  const head = file.subarray(0, Math.min(cut, file.length, HEAD_MAX_BYTES));
  const verdict = checkHead(head, { extension, sizeBytes: file.length });
  const said = verdict.outcome === "refused" ? `refuses (${verdict.reason}: ${verdict.message})` : verdict.outcome;
  const fullSaid = full.ok ? "accepts" : `refuses (${full.reason}: ${full.message})`;
  const disagree =
    (verdict.outcome === "refused" && (full.ok || full.reason !== verdict.reason)) ||
    (head.length === file.length && full.ok === (verdict.outcome === "refused"));
  if (disagree) {
    throw new Error(`the head check of ${head.length} of ${file.length} bytes ${said}; the verifier ${fullSaid}`);
  }
  return verdict;
}
