// The browser-safe entry point (`@emprops/lora-formats/head`): the verifier's own content rules on a file's first
// bytes, so a client and the blob-gateway can refuse a wrong file before any of it is uploaded. Nothing here may
// import a Node built-in; the Studio page's bundle build fails if anything does.
import { ContentCheck } from "./content-check.js";
import { portableCrc32 } from "./crc32.js";
import { SafetensorsStreamReader } from "./safetensors-stream-reader.js";
import { TorchCheckpointReader } from "./torch-checkpoint.js";
import type { RejectReason } from "./types.js";

/** The most a head check reads: the first MiB of a file. */
export const HEAD_MAX_BYTES = 1024 * 1024;

export type HeadVerdict =
  /** The full verifier refuses every file that starts with these bytes and has this size, for this reason. */
  | {
      outcome: "refused";
      reason: RejectReason;
      message: string;
      /** What the first bytes look like (see detectType), as the verifier reports it. */
      detectedType: string;
      /** The import refused, as "module.name", when the reason is UNSAFE_PICKLE and the construct an import. */
      unsafeGlobals: string[];
    }
  /** The safetensors header lies within the head and is valid (or the whole file is the head, and valid). */
  | { outcome: "passed" }
  /** Nothing wrong so far, but the head does not reach the end of the header (or of a .pt's checkpoint). */
  | { outcome: "undecided" };

export interface HeadCheckOptions {
  /** The extension the file is uploaded under. */
  extension: "safetensors" | "pt";
  /** The whole file's size, as the upload declares it. */
  sizeBytes: number;
}

/** How many first bytes of a file of this size a head check takes. */
export function headLength(sizeBytes: number): number {
  return Math.min(sizeBytes, HEAD_MAX_BYTES);
}

/**
 * Judges a file by its first bytes (at most {@link HEAD_MAX_BYTES}, the whole file when it is that small) and its
 * declared size, with the verifier's rules: refused only when the full verification of any file with this start
 * and size refuses it (magic bytes against the extension, the safetensors header's length and, when it lies within
 * the head, its whole content and the data section it needs, a polyglot's first bytes; for a `.pt`, a ZIP read as
 * far as the head goes, so a `data.pkl` within it is judged by the weights-only grammar: an unsafe import is
 * UNSAFE_PICKLE before any block is sent). A file that is all in the head gets the verifier's whole verdict.
 */
export function checkHead(head: Uint8Array, opts: HeadCheckOptions): HeadVerdict {
  if (!Number.isSafeInteger(opts.sizeBytes) || opts.sizeBytes < 0) {
    throw new RangeError("sizeBytes must be a non-negative integer");
  }
  if (head.length > HEAD_MAX_BYTES) throw new RangeError(`a head is at most ${HEAD_MAX_BYTES} bytes`);
  if (head.length > opts.sizeBytes) throw new RangeError("the head is longer than the file");
  const check = new ContentCheck({
    expectedExtension: opts.extension,
    torchReader: () => new TorchCheckpointReader(portableCrc32),
  });
  check.update(head);
  const whole = head.length === opts.sizeBytes;
  if (whole) check.finish();
  else
    check.judge((reader) => (reader instanceof SafetensorsStreamReader ? reader.expectEnd(opts.sizeBytes) : undefined));
  const rejection = check.rejection;
  if (rejection) {
    const unsafeGlobals = check.unsafe?.global ? [check.unsafe.global] : [];
    return { outcome: "refused", ...rejection, detectedType: check.detectedType, unsafeGlobals };
  }
  const reader = check.reader;
  if (whole || (reader instanceof SafetensorsStreamReader && reader.layout)) return { outcome: "passed" };
  return { outcome: "undecided" };
}

export type { RejectReason } from "./types.js";
