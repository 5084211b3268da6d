import type { ContentReader } from "./content-reader.js";
import { DETECT_TYPE_PREFIX_BYTES, detectType, isZipStart } from "./detect-type.js";
import { FormatError } from "./format-error.js";
import { SafetensorsStreamReader } from "./safetensors-stream-reader.js";
import { isTarHeader, TAR_BLOCK_BYTES } from "./tar-header.js";
import type { FileFormatName, RejectReason } from "./types.js";
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

export interface ContentCheckOptions {
  /** The extension the file was uploaded under; the content must match it. */
  expectedExtension: "safetensors" | "pt";
  /**
   * Reads a .pt that starts as a ZIP (TorchCheckpointReader on Node). Without it such a file is only checked as
   * far as its first bytes, and {@link ContentCheck.reading} stays false after them.
   */
  torchReader?: () => ContentReader;
}

/**
 * The content rules of a LoRA file, fed its bytes in order: the first bytes against the extension, then the
 * format's reader (the safetensors header and polyglot checks, or a .pt's ZIP and pickle). No hashing and no size
 * limits (the verifier adds those) and no Node built-ins, so the same rules run in a browser on a file's first
 * bytes. update() never throws on hostile input: the first problem is kept and parsing stops there.
 */
export class ContentCheck {
  /** The first bytes: type detection reads 16 of them, a .pt that is not a ZIP is described from 512 (tar). */
  private readonly prefix = new Uint8Array(TAR_BLOCK_BYTES);
  private prefixLength = 0;
  private readerValue: ContentReader | undefined;
  private formatValue: FileFormatName | undefined;
  private decided = false;
  private parsing = true;
  private invalidMessage: string | undefined;
  private unsafeError: UnsafePickleError | undefined;

  constructor(private readonly options: ContentCheckOptions) {
    if (options.expectedExtension !== "safetensors" && options.expectedExtension !== "pt") {
      throw new TypeError(`expectedExtension must be "safetensors" or "pt"`);
    }
  }

  /** The format's reader, once the first bytes chose it. */
  get reader(): ContentReader | undefined {
    return this.readerValue;
  }

  /** Set once the content was recognised as one of the accepted containers. */
  get format(): FileFormatName | undefined {
    return this.formatValue;
  }

  /** What the first bytes fed look like (see detectType). */
  get detectedType(): string {
    return detectType(this.prefix.subarray(0, this.prefixLength));
  }

  /** The unsafe pickle construct found, if any. */
  get unsafe(): UnsafePickleError | undefined {
    return this.unsafeError;
  }

  /** True while the bytes fed are still being parsed: nothing wrong found yet and a reader reads them. */
  get reading(): boolean {
    return this.parsing && (!this.decided || this.readerValue !== undefined);
  }

  /** The first problem found, if any: an unsafe pickle, else malformed content. */
  get rejection(): Rejection | undefined {
    if (this.unsafeError) {
      return {
        reason: "UNSAFE_PICKLE",
        message: `${this.unsafeError.message} Only plain tensor state dicts are accepted — convert the LoRA to .safetensors.`,
      };
    }
    if (this.invalidMessage) return { reason: "INVALID_FILE_FORMAT", message: this.invalidMessage };
    return undefined;
  }

  /** Stops parsing (e.g. past the size limit); later bytes are ignored. */
  stop(): void {
    this.parsing = false;
  }

  update(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
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
      if (rest.length > 0) this.readerValue?.update(rest);
    });
  }

  /** The end of the file. */
  finish(): void {
    if (!this.parsing) return;
    this.guard(() => {
      if (!this.decided) this.decide();
      this.readerValue?.finish();
    });
  }

  /**
   * Runs `check` as the reader's own work (its FormatError or UnsafePickleError becomes the rejection), for checks
   * a caller can make early, such as what the declared size already decides.
   */
  judge(check: (reader: ContentReader | undefined) => void): void {
    if (!this.parsing) return;
    this.guard(() => check(this.readerValue));
  }

  private guard(work: () => void): void {
    try {
      work();
    } catch (error) {
      this.parsing = false;
      if (error instanceof UnsafePickleError) {
        this.unsafeError = error;
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
    if (this.options.expectedExtension === "safetensors") {
      // Unrecognised content still goes to the parser, whose message says exactly what is wrong with the header.
      if (detected !== "safetensors" && detected !== "unknown" && detected !== "text") {
        throw new FormatError(`The file is named .safetensors but its content is ${described}.`);
      }
      this.readerValue = new SafetensorsStreamReader();
      if (detected === "safetensors") this.formatValue = "safetensors";
    } else if (isZipStart(prefix)) {
      this.formatValue = "torch_zip";
      this.readerValue = this.options.torchReader?.();
    } else {
      throw new FormatError(notTorchZipMessage(prefix, detected, described));
    }
    this.readerValue?.update(prefix);
  }
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
