import { createHash, type Hash } from "node:crypto";
import { crc32 } from "node:zlib";
import { ContentCheck, type Rejection } from "./content-check.js";
import { bytesText } from "./describe.js";
import { extractLoraMetadata } from "./lora-metadata.js";
import { SafetensorsStreamReader } from "./safetensors-stream-reader.js";
import { TorchCheckpointReader } from "./torch-checkpoint.js";
import type { VerificationResult, VerifierOptions } from "./types.js";

export type { Rejection } from "./content-check.js";

/**
 * Verifies one uploaded LoRA as its bytes stream past, once: size limit, checksums, magic bytes, the safetensors
 * header or the pickle scan of a .pt, and metadata extraction. Memory stays bounded by the safetensors header
 * (≤ 100 MB) and small parser state; the data itself is only hashed.
 *
 * update() never throws on hostile input. Once the content is known to be invalid, parsing stops and later chunks
 * are only hashed, so sha256 and sizeBytes always cover every byte fed. Callers that want to stop reading early
 * may watch {@link rejection} (FILE_TOO_LARGE is decided as soon as the running size passes the limit).
 */
export class LoraVerifier {
  private readonly options: Required<Pick<VerifierOptions, "expectedExtension" | "maxSizeBytes">> &
    Pick<VerifierOptions, "expectedSizeBytes" | "expectedSha256">;
  private readonly hash: Hash = createHash("sha256");
  private readonly content: ContentCheck;
  private size = 0;
  private finished = false;
  private tooLargeMessage: string | undefined;
  private sizeMismatchMessage: string | undefined;

  constructor(opts: VerifierOptions) {
    if (opts.expectedExtension !== "safetensors" && opts.expectedExtension !== "pt") {
      throw new TypeError(`expectedExtension must be "safetensors" or "pt"`);
    }
    if (!Number.isSafeInteger(opts.maxSizeBytes) || opts.maxSizeBytes <= 0) {
      throw new RangeError("maxSizeBytes must be a positive integer");
    }
    if (
      opts.expectedSizeBytes !== undefined &&
      (!Number.isSafeInteger(opts.expectedSizeBytes) || opts.expectedSizeBytes < 0)
    ) {
      throw new RangeError("expectedSizeBytes must be a non-negative integer");
    }
    if (opts.expectedSha256 !== undefined && !/^[0-9a-fA-F]{64}$/.test(opts.expectedSha256)) {
      throw new TypeError("expectedSha256 must be 64 hexadecimal characters");
    }
    this.options = {
      expectedExtension: opts.expectedExtension,
      maxSizeBytes: opts.maxSizeBytes,
      expectedSizeBytes: opts.expectedSizeBytes,
      expectedSha256: opts.expectedSha256?.toLowerCase(),
    };
    this.content = new ContentCheck({
      expectedExtension: opts.expectedExtension,
      torchReader: () => new TorchCheckpointReader(crc32),
    });
  }

  /** Bytes fed so far. */
  get bytesSeen(): number {
    return this.size;
  }

  /** The rejection already certain from the bytes fed so far, if any. */
  get rejection(): Rejection | undefined {
    return this.verdict();
  }

  update(chunk: Uint8Array): void {
    if (this.finished) throw new Error("LoraVerifier.update() called after finish()");
    if (chunk.length === 0) return;
    this.hash.update(chunk);
    this.size += chunk.length;
    const { maxSizeBytes, expectedSizeBytes } = this.options;
    if (this.size > maxSizeBytes && !this.tooLargeMessage) {
      this.tooLargeMessage = `The file exceeds the size limit of ${bytesText(maxSizeBytes)}.`;
      this.content.stop();
    }
    if (expectedSizeBytes !== undefined && this.size > expectedSizeBytes && !this.sizeMismatchMessage) {
      this.sizeMismatchMessage = `The file is larger than the ${bytesText(expectedSizeBytes)} announced for it.`;
    }
    this.content.update(chunk);
  }

  finish(): VerificationResult {
    if (this.finished) throw new Error("LoraVerifier.finish() called twice");
    this.finished = true;
    this.content.finish();
    const sha256 = this.hash.digest("hex");
    const checksumMessage = this.checksumMessage(sha256);
    const unsafe = this.content.unsafe;
    const verdict = this.verdict(checksumMessage);
    const reader = this.content.reader;
    const layout = reader instanceof SafetensorsStreamReader ? reader.layout : undefined;
    const result: VerificationResult = {
      ok: verdict === undefined,
      sizeBytes: this.size,
      sha256,
      detectedType: this.content.detectedType,
      unsafeGlobals: unsafe?.global ? [unsafe.global] : [],
      tensorCount: reader?.tensorCount ?? 0,
    };
    if (verdict) {
      result.reason = verdict.reason;
      result.message = verdict.message;
    }
    if (this.content.format) result.format = this.content.format;
    if (layout) result.metadata = extractLoraMetadata(layout.metadata);
    return result;
  }

  // Precedence: a found exploit is always reported; then the size limit (parsing stops there), then checksum
  // disagreements (the bytes are not what the client sent, so format findings would mislead), then format errors.
  private verdict(checksumMessage = this.sizeMismatchMessage): Rejection | undefined {
    const found = this.content.rejection;
    if (found?.reason === "UNSAFE_PICKLE") return found;
    if (this.tooLargeMessage) return { reason: "FILE_TOO_LARGE", message: this.tooLargeMessage };
    if (checksumMessage) return { reason: "CHECKSUM_MISMATCH", message: checksumMessage };
    return found;
  }

  private checksumMessage(sha256: string): string | undefined {
    const { expectedSizeBytes, expectedSha256 } = this.options;
    const problems: string[] = [];
    if (expectedSizeBytes !== undefined && expectedSizeBytes !== this.size) {
      problems.push(`The file is ${bytesText(this.size)} but ${bytesText(expectedSizeBytes)} were announced.`);
    }
    if (expectedSha256 !== undefined && expectedSha256 !== sha256) {
      problems.push(`Its SHA-256 is ${sha256} but ${expectedSha256} was announced.`);
    }
    if (problems.length === 0) return undefined;
    return `${problems.join(" ")} The upload is incomplete or corrupted; upload the file again.`;
  }
}
