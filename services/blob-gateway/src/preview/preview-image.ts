import { createHash } from "node:crypto";
import { ErrorReason } from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";
import sharp from "sharp";

/** The largest image accepted as a preview. */
export const MAX_PREVIEW_INPUT_BYTES = 2 * 1024 * 1024;
/** Decoded pixels above this are refused from the header alone, before any pixel is decoded. */
export const MAX_PREVIEW_PIXELS = 25_000_000;
/** Neither side may be longer (a 1×25,000,000 strip is no preview). */
export const MAX_PREVIEW_SIDE = 12_000;
/** The stored image's longer side at most. */
export const PREVIEW_SIDE = 1024;

// No cache of decoded images between calls, and one libvips thread per image: previews are small and rare,
// and the gateway's CPU belongs to verification.
sharp.cache(false);
sharp.concurrency(1);

export type PreviewFormat = "png" | "jpeg" | "webp";

export interface CheckedPreview {
  /** The re-encoded WebP: no byte of the input survives, nor its metadata. */
  webp: Buffer;
  width: number;
  height: number;
  sha256: string;
  sourceFormat: PreviewFormat;
  sourceWidth: number;
  sourceHeight: number;
}

/** What the first bytes say: PNG's signature, JPEG's SOI marker, or a RIFF WebP container. */
export function sniffImage(bytes: Uint8Array): PreviewFormat | undefined {
  const at = (offset: number, ascii: string) =>
    bytes.length >= offset + ascii.length && [...ascii].every((c, i) => bytes[offset + i] === c.charCodeAt(0));
  if (bytes.length >= 8 && bytes[0] === 0x89 && at(1, "PNG\r\n\x1a\n")) return "png";
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return "jpeg";
  if (at(0, "RIFF") && at(8, "WEBP")) return "webp";
  return undefined;
}

function invalidImage(message: string, metadata: Record<string, string | number> = {}) {
  return invalidArgument(ErrorReason.INVALID_IMAGE, message, { field: "image", ...metadata });
}

/** libvips' message without its stack of details: "VipsJpeg: Premature end of input file". */
function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split("\n")[0]!.trim();
}

/**
 * Checks a preview image and re-encodes it. In order: the size in bytes; the
 * format by its first bytes (PNG, JPEG or WebP, nothing else reaches the
 * decoder: no SVG, GIF, TIFF, HEIF); the header's format and dimensions
 * (refused above the pixel limit before decoding, so a small file that
 * would inflate to gigabytes never does); then a full decode that fails on
 * any warning (a truncated or corrupt file), oriented, scaled to at most
 * PREVIEW_SIDE and written as a new WebP without metadata, so nothing
 * appended or hidden in the input (a polyglot) is stored.
 */
export async function checkPreviewImage(bytes: Uint8Array): Promise<CheckedPreview> {
  if (bytes.length === 0) throw invalidImage("the image is empty");
  if (bytes.length > MAX_PREVIEW_INPUT_BYTES) {
    throw invalidArgument(
      ErrorReason.FILE_TOO_LARGE,
      `the image has ${bytes.length} bytes; a preview may have at most ${MAX_PREVIEW_INPUT_BYTES} (2 MiB)`,
      { field: "image", size_bytes: bytes.length, max_bytes: MAX_PREVIEW_INPUT_BYTES },
    );
  }
  const sourceFormat = sniffImage(bytes);
  if (!sourceFormat) {
    throw invalidImage("the image must be a PNG, JPEG or WebP file (its first bytes are none of them)");
  }
  const decoder = (limitInputPixels: number | false) =>
    sharp(bytes, { limitInputPixels, failOn: "warning", sequentialRead: true, pages: 1 });
  let meta: sharp.Metadata;
  try {
    // The header only (no pixel is decoded), without libvips' own limit so the refusal below can give the size.
    meta = await decoder(false).metadata();
  } catch (err) {
    throw invalidImage(`the image cannot be read: ${firstLine(err)}`, { detected_format: sourceFormat });
  }
  if (meta.format !== sourceFormat) {
    throw invalidImage(`the image starts like ${sourceFormat} but is ${meta.format ?? "something else"}`, {
      detected_format: sourceFormat,
    });
  }
  const { width = 0, height = 0 } = meta;
  if (width < 1 || height < 1) throw invalidImage("the image has no pixels");
  if (width * height > MAX_PREVIEW_PIXELS || width > MAX_PREVIEW_SIDE || height > MAX_PREVIEW_SIDE) {
    throw invalidImage(
      `the image is ${width}×${height} pixels; a preview may have at most ${MAX_PREVIEW_PIXELS.toLocaleString("en")} ` +
        `pixels and ${MAX_PREVIEW_SIDE} on a side`,
      { width, height, max_pixels: MAX_PREVIEW_PIXELS, max_side: MAX_PREVIEW_SIDE },
    );
  }
  let out: { data: Buffer; info: sharp.OutputInfo };
  try {
    out = await decoder(MAX_PREVIEW_PIXELS)
      .rotate()
      .resize({ width: PREVIEW_SIDE, height: PREVIEW_SIDE, fit: "inside", withoutEnlargement: true })
      .webp({ quality: 82 })
      .toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw invalidImage(`the image cannot be decoded: ${firstLine(err)}`, { detected_format: sourceFormat });
  }
  return {
    webp: out.data,
    width: out.info.width,
    height: out.info.height,
    sha256: createHash("sha256").update(out.data).digest("hex"),
    sourceFormat,
    sourceWidth: width,
    sourceHeight: height,
  };
}
