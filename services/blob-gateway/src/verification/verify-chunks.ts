import { type VerificationResult, type VerifierOptions, verifyStream } from "@emprops/lora-formats";
import type { AppContext } from "../context.js";

/** A failure while reading the blob, as opposed to a failure of the verifier itself. */
export class StorageReadError extends Error {
  constructor(override readonly cause: unknown) {
    super(cause instanceof Error ? cause.message : String(cause));
    this.name = "StorageReadError";
  }
}

async function* tagReadErrors(chunks: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  try {
    yield* chunks;
  } catch (err) {
    throw new StorageReadError(err);
  }
}

/** Streams a blob's bytes through the verifier: one pass, nothing kept but the verifier's own state. */
export function verifyChunks(chunks: AsyncIterable<Uint8Array>, opts: VerifierOptions): Promise<VerificationResult> {
  return verifyStream(tagReadErrors(chunks), opts);
}

/** The verdict for a blob larger than the limit, decided from its size alone (nothing is read). */
export function tooLarge(sizeBytes: number, maxSizeBytes: number): VerificationResult {
  return {
    ok: false,
    reason: "FILE_TOO_LARGE",
    message: `the file is ${sizeBytes} bytes; the limit is ${maxSizeBytes} bytes`,
    sizeBytes,
    sha256: "",
    detectedType: "unknown",
    unsafeGlobals: [],
    tensorCount: 0,
  };
}

/** What a verification was for: VerifyBlob, UploadBlob, CommitUpload, or a shared LoRA before signing its URL. */
export type VerificationSource = "verify" | "upload" | "commit" | "shared";

/** Counts a verdict and logs a rejection. */
export function recordVerification(
  ctx: AppContext,
  source: VerificationSource,
  path: string,
  r: VerificationResult,
): void {
  const status = r.ok ? "safe" : "rejected";
  ctx.metrics.verifications.add(1, { source, status, reason: r.reason ?? "" });
  ctx.metrics.verifiedBytes.add(r.sizeBytes, { source });
  if (!r.ok) {
    ctx.logger.info(
      { blob_path: path, source, reason: r.reason, detected_type: r.detectedType, unsafe_globals: r.unsafeGlobals },
      `blob rejected: ${r.message ?? r.reason}`,
    );
  }
}
