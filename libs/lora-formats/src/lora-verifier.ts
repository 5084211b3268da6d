import { createHash, type Hash } from "node:crypto";
import type { ContentReader } from "./content-reader.js";
import { bytesText } from "./describe.js";
import { DETECT_TYPE_PREFIX_BYTES, detectType } from "./detect-type.js";
import { FormatError } from "./format-error.js";
import { extractLoraMetadata } from "./lora-metadata.js";
import { SafetensorsStreamReader } from "./safetensors-stream-reader.js";
import { isTarHeader, TAR_BLOCK_BYTES } from "./tar-header.js";
import { TorchCheckpointReader } from "./torch-checkpoint.js";
import type { FileFormatName, RejectReason, VerificationResult, VerifierOptions } from "./types.js";
import { UnsafePickleError } from "./unsafe-pickle-error.js";

const DESCRIBED_TYPES: Record<string, string> = {
  safetensors: "a safetensors file",
  zip: "a ZIP archive (PyTorch .pt)",
  pickle: "a Python pickle (PyTorch .pt)",
  png: "a PNG image",
  jpeg: "a JPEG image",
  gif: "a GIF image",
  webp: "a WebP image",
  gzip: "a gzip archive",
  bzip2: "a bzip2 archive",
  xz: "an xz archive",
  zstd: "a zstd archive",
  "7z": "a 7-Zip archive",
  rar: "a RAR archive",
  gguf: "a GGUF model",
  numpy: "a NumPy array file",
  hdf5: "an HDF5 file",
  pdf: "a PDF document",
  elf: "a Linux executable",
  exe: "a Windows executable",
  text: "a text file",
  unknown: "of an unknown type",
};

export interface Rejection {
  reason: RejectReason;
  message: string;
}

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
  private size = 0;
  /** The first bytes: type detection reads 16 of them, a .pt that is not a ZIP is described from 512 (tar). */
  private readonly prefix = new Uint8Array(TAR_BLOCK_BYTES);
  private prefixLength = 0;
  private reader: ContentReader | undefined;
  private format: FileFormatName | undefined;
  private decided = false;
  private parsing = true;
  private finished = false;
  private invalidMessage: string | undefined;
  private unsafe: UnsafePickleError | undefined;
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
      this.parsing = false;
    }
    if (expectedSizeBytes !== undefined && this.size > expectedSizeBytes && !this.sizeMismatchMessage) {
      this.sizeMismatchMessage = `The file is larger than the ${bytesText(expectedSizeBytes)} announced for it.`;
    }
    let rest = chunk;
    if (!this.decided) {
      const take = Math.min(this.prefix.length - this.prefixLength, chunk.length);
      this.prefix.set(chunk.subarray(0, take), this.prefixLength);
      this.prefixLength += take;
      rest = chunk.subarray(take);
      if (!this.canDecide()) return;
    }
    if (!this.parsing) return;
    this.guard(() => {
      if (!this.decided) this.decide();
      if (rest.length > 0) this.reader?.update(rest);
    });
  }

  finish(): VerificationResult {
    if (this.finished) throw new Error("LoraVerifier.finish() called twice");
    this.finished = true;
    if (this.parsing) {
      this.guard(() => {
        if (!this.decided) this.decide();
        this.reader?.finish();
      });
    }
    const sha256 = this.hash.digest("hex");
    const checksumMessage = this.checksumMessage(sha256);
    const unsafeGlobals = this.unsafe?.global ? [this.unsafe.global] : [];
    const verdict = this.verdict(checksumMessage);
    const layout = this.reader instanceof SafetensorsStreamReader ? this.reader.layout : undefined;
    const result: VerificationResult = {
      ok: verdict === undefined,
      sizeBytes: this.size,
      sha256,
      detectedType: detectType(this.prefix.subarray(0, this.prefixLength)),
      unsafeGlobals,
      tensorCount: this.reader?.tensorCount ?? 0,
    };
    if (verdict) {
      result.reason = verdict.reason;
      result.message = verdict.message;
    }
    if (this.format) result.format = this.format;
    if (layout) result.metadata = extractLoraMetadata(layout.metadata);
    return result;
  }

  // Precedence: a found exploit is always reported; then the size limit (parsing stops there), then checksum
  // disagreements (the bytes are not what the client sent, so format findings would mislead), then format errors.
  private verdict(checksumMessage = this.sizeMismatchMessage): Rejection | undefined {
    if (this.unsafe) return { reason: "UNSAFE_PICKLE", message: this.unsafeMessage(this.unsafe) };
    if (this.tooLargeMessage) return { reason: "FILE_TOO_LARGE", message: this.tooLargeMessage };
    if (checksumMessage) return { reason: "CHECKSUM_MISMATCH", message: checksumMessage };
    if (this.invalidMessage) return { reason: "INVALID_FILE_FORMAT", message: this.invalidMessage };
    return undefined;
  }

  private unsafeMessage(error: UnsafePickleError): string {
    return `${error.message} Only plain tensor state dicts are accepted — convert the LoRA to .safetensors.`;
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

  private guard(work: () => void): void {
    try {
      work();
    } catch (error) {
      this.parsing = false;
      if (error instanceof UnsafePickleError) {
        this.unsafe = error;
        return;
      }
      this.invalidMessage =
        error instanceof FormatError
          ? error.message
          : `The file could not be verified: ${error instanceof Error ? error.message : String(error)}`;
    }
  }

  /** A .pt that is not a ZIP is refused, but described from its first 512 bytes (a tar header needs them all). */
  private canDecide(): boolean {
    if (this.prefixLength === this.prefix.length) return true;
    if (this.prefixLength < DETECT_TYPE_PREFIX_BYTES) return false;
    return this.options.expectedExtension === "safetensors" || isZipStart(this.prefix);
  }

  /** Picks the reader for the content, given the uploaded extension; throws FormatError on a mismatch. */
  private decide(): void {
    this.decided = true;
    const prefix = this.prefix.subarray(0, this.prefixLength);
    const detected = detectType(prefix);
    const described = DESCRIBED_TYPES[detected] ?? `a ${detected} file`;
    if (detected === "empty") throw new FormatError("The file is empty.");
    let reader: ContentReader;
    if (this.options.expectedExtension === "safetensors") {
      // Unrecognised content still goes to the parser, whose message says exactly what is wrong with the header.
      if (detected !== "safetensors" && detected !== "unknown" && detected !== "text") {
        throw new FormatError(`The file is named .safetensors but its content is ${described}.`);
      }
      reader = new SafetensorsStreamReader();
      if (detected === "safetensors") this.format = "safetensors";
    } else if (isZipStart(prefix)) {
      reader = new TorchCheckpointReader();
      this.format = "torch_zip";
    } else {
      throw new FormatError(notTorchZipMessage(prefix, detected, described));
    }
    this.reader = reader;
    reader.update(prefix);
  }
}

/** torch.load's own test (serialization._is_zipfile): the first four bytes are a local file header's signature. */
function isZipStart(bytes: Uint8Array): boolean {
  return bytes[0] === 0x50 && bytes[1] === 0x4b && bytes[2] === 0x03 && bytes[3] === 0x04;
}

const RESAVE = "Re-save it with torch.save (torch 1.6 or later), or convert it to .safetensors.";

function notTorchZipMessage(prefix: Uint8Array, detected: string, described: string): string {
  const only = "only the ZIP format torch.save has written by default since torch 1.6 is accepted";
  if (isTarHeader(prefix)) {
    return `The file is named .pt but it is a tar archive (torch's pre-1.6 legacy format, whose members are unpickled without restriction); ${only}. ${RESAVE}`;
  }
  if (detected === "pickle") {
    return `The file is named .pt but it is a raw pickle (torch's legacy format, written by torch before 1.6 or with _use_new_zipfile_serialization=False); ${only}. ${RESAVE}`;
  }
  if (detected === "zip") {
    return `The file is named .pt but it does not start with a ZIP local file header, so torch.load would not read it as a checkpoint; ${only}. ${RESAVE}`;
  }
  if (detected === "safetensors") {
    return `The file is named .pt but its content is ${described}, not a PyTorch checkpoint. Upload it with the .safetensors extension.`;
  }
  return `The file is named .pt but its content is ${described}, not a PyTorch checkpoint. ${RESAVE}`;
}
