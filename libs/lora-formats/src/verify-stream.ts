import { LoraVerifier } from "./lora-verifier.js";
import type { VerificationResult, VerifierOptions } from "./types.js";

/**
 * Verifies a stream of chunks (e.g. an Azure blob download). Reads to the end so the hash covers the whole file,
 * except that it stops as soon as the file exceeds maxSizeBytes; sizeBytes and sha256 then cover the bytes read.
 * Errors of the source itself propagate.
 */
export async function verifyStream(
  source: AsyncIterable<Uint8Array>,
  opts: VerifierOptions,
): Promise<VerificationResult> {
  const verifier = new LoraVerifier(opts);
  for await (const chunk of source) {
    verifier.update(chunk);
    if (verifier.rejection?.reason === "FILE_TOO_LARGE") break;
  }
  return verifier.finish();
}
