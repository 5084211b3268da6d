import { SAFETENSORS_MAX_HEADER_BYTES } from "./safetensors-limits.js";

/** How many leading bytes detectType looks at; callers should pass at least this many when the file has them. */
export const DETECT_TYPE_PREFIX_BYTES = 16;

interface Signature {
  type: string;
  /** [offset, bytes] pairs that must all match. */
  parts: readonly (readonly [number, readonly number[]])[];
}

const ascii = (text: string): number[] => Array.from(text, (ch) => ch.charCodeAt(0));

// Checked in order; the safetensors test runs first because a legal header length can begin with 0x80 0x02,
// which would otherwise read as a pickle PROTO opcode.
const SIGNATURES: readonly Signature[] = [
  { type: "zip", parts: [[0, [0x50, 0x4b, 0x03, 0x04]]] },
  { type: "zip", parts: [[0, [0x50, 0x4b, 0x05, 0x06]]] },
  { type: "zip", parts: [[0, [0x50, 0x4b, 0x07, 0x08]]] },
  { type: "png", parts: [[0, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]]] },
  { type: "jpeg", parts: [[0, [0xff, 0xd8, 0xff]]] },
  { type: "gif", parts: [[0, ascii("GIF87a")]] },
  { type: "gif", parts: [[0, ascii("GIF89a")]] },
  {
    type: "webp",
    parts: [
      [0, ascii("RIFF")],
      [8, ascii("WEBP")],
    ],
  },
  { type: "gzip", parts: [[0, [0x1f, 0x8b]]] },
  { type: "bzip2", parts: [[0, ascii("BZh")]] },
  { type: "xz", parts: [[0, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]]] },
  { type: "zstd", parts: [[0, [0x28, 0xb5, 0x2f, 0xfd]]] },
  { type: "7z", parts: [[0, [0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c]]] },
  { type: "rar", parts: [[0, [0x52, 0x61, 0x72, 0x21, 0x1a, 0x07]]] },
  { type: "gguf", parts: [[0, ascii("GGUF")]] },
  { type: "numpy", parts: [[0, [0x93, ...ascii("NUMPY")]]] },
  { type: "hdf5", parts: [[0, [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]]] },
  { type: "pdf", parts: [[0, ascii("%PDF-")]] },
  { type: "elf", parts: [[0, [0x7f, 0x45, 0x4c, 0x46]]] },
  { type: "exe", parts: [[0, ascii("MZ")]] },
];

function matches(bytes: Uint8Array, sig: Signature): boolean {
  return sig.parts.every(
    ([offset, expected]) =>
      bytes.length >= offset + expected.length && expected.every((b, i) => bytes[offset + i] === b),
  );
}

function looksLikeSafetensors(bytes: Uint8Array): boolean {
  // The reference lets JSON whitespace precede the header's "{".
  const at8 = bytes[8];
  if (bytes.length < 9 || (at8 !== 0x7b && at8 !== 0x20 && at8 !== 0x09 && at8 !== 0x0a && at8 !== 0x0d)) return false;
  const view = new DataView(bytes.buffer, bytes.byteOffset, 8);
  const high = view.getUint32(4, true);
  const low = view.getUint32(0, true);
  return high === 0 && low >= 2 && low <= SAFETENSORS_MAX_HEADER_BYTES;
}

function looksLikeText(bytes: Uint8Array): boolean {
  return bytes.every((b) => b === 0x09 || b === 0x0a || b === 0x0d || (b >= 0x20 && b < 0x7f));
}

/**
 * Names the kind of content from its first bytes (pass at least {@link DETECT_TYPE_PREFIX_BYTES}).
 * Returns "safetensors", "zip", "pickle", "png", "jpeg", "gif", "webp", "gzip", "bzip2", "xz", "zstd", "7z",
 * "rar", "gguf", "numpy", "hdf5", "pdf", "elf", "exe", "text", "empty" or "unknown".
 */
export function detectType(firstBytes: Uint8Array): string {
  if (firstBytes.length === 0) return "empty";
  if (looksLikeSafetensors(firstBytes)) return "safetensors";
  for (const sig of SIGNATURES) if (matches(firstBytes, sig)) return sig.type;
  // Protocol 2+ pickles open with PROTO (0x80) and a protocol number; torch.save writes protocol 2.
  if (firstBytes[0] === 0x80 && (firstBytes.length === 1 || (firstBytes[1] ?? 0xff) <= 5)) return "pickle";
  if (looksLikeText(firstBytes.subarray(0, DETECT_TYPE_PREFIX_BYTES))) return "text";
  return "unknown";
}

/** torch.load's own test (serialization._is_zipfile): the first four bytes are a local file header's signature. */
export function isZipStart(bytes: Uint8Array): boolean {
  return bytes[0] === 0x50 && bytes[1] === 0x4b && bytes[2] === 0x03 && bytes[3] === 0x04;
}
