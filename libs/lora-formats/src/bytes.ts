// Byte helpers on plain Uint8Array, so the parsers run unchanged in Node and in a browser (no node: import).
// Where Node's Buffer exists it does the two hot jobs natively — searching a signature in every data byte and
// decoding many short header strings — which keeps the verifier as fast as before (the portable loops cost it a
// third more time on tensor data and twice as much on a 50,000-tensor header); a browser only ever judges a file's
// first MiB with the portable code.

interface NodeBuffer {
  indexOf(value: Uint8Array, byteOffset?: number): number;
  toString(encoding: "utf8" | "latin1", start: number, end: number): string;
}
const NodeBuffer = (globalThis as { Buffer?: { from(b: ArrayBufferLike, offset: number, length: number): NodeBuffer } })
  .Buffer;
const asNodeBuffer = (bytes: Uint8Array): NodeBuffer | undefined =>
  NodeBuffer?.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);

// ignoreBOM keeps a leading U+FEFF as a character: a string's bytes are decoded exactly as they are.
const utf8 = new TextDecoder("utf-8", { ignoreBOM: true });
const strictUtf8 = () => new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Steps of the validity check, so a 100 MB header is never decoded into one string. */
const UTF8_CHECK_STEP = 1024 * 1024;

/** A decoder of UTF-8 slices [start, end) of `bytes` (the caller has checked they are valid). */
export function utf8Slicer(bytes: Uint8Array): (start: number, end: number) => string {
  const buffer = asNodeBuffer(bytes);
  if (buffer) return (start, end) => buffer.toString("utf8", start, end);
  return (start, end) => utf8.decode(bytes.subarray(start, end));
}

/** Bytes [start, end) as latin1 characters, one per byte (ISO-8859-1, not the WHATWG "latin1" of windows-1252). */
export function latin1Text(bytes: Uint8Array, start = 0, end = bytes.length): string {
  let out = "";
  for (let at = start; at < end; at += LATIN1_STEP) {
    out += String.fromCharCode(...bytes.subarray(at, Math.min(end, at + LATIN1_STEP)));
  }
  return out;
}

/** Characters per String.fromCharCode call, well below engines' argument limits. */
const LATIN1_STEP = 8192;

/** A decoder of latin1 slices [start, end) of `bytes`. */
export function latin1Slicer(bytes: Uint8Array): (start: number, end: number) => string {
  const buffer = asNodeBuffer(bytes);
  if (buffer) return (start, end) => buffer.toString("latin1", start, end);
  return (start, end) => latin1Text(bytes, start, end);
}

/** True when the bytes are well-formed UTF-8 (WHATWG's decoder: no overlongs, surrogates or values above U+10FFFF). */
export function isUtf8(bytes: Uint8Array): boolean {
  const decoder = strictUtf8();
  try {
    for (let at = 0; at < bytes.length; at += UTF8_CHECK_STEP) {
      decoder.decode(bytes.subarray(at, at + UTF8_CHECK_STEP), { stream: true });
    }
    decoder.decode();
    return true;
  } catch {
    return false;
  }
}

/** The first index >= from where `needle` (non-empty) occurs in `haystack`, or -1. */
export function indexOfBytes(haystack: Uint8Array, needle: Uint8Array, from = 0): number {
  const buffer = asNodeBuffer(haystack);
  if (buffer) return buffer.indexOf(needle, from);
  const first = needle[0] as number;
  const last = haystack.length - needle.length;
  for (let at = haystack.indexOf(first, from); at !== -1 && at <= last; at = haystack.indexOf(first, at + 1)) {
    if (startsAt(haystack, needle, at)) return at;
  }
  return -1;
}

/** The last index <= from where `needle` (non-empty) occurs in `haystack`, or -1. */
export function lastIndexOfBytes(haystack: Uint8Array, needle: Uint8Array, from = haystack.length): number {
  const first = needle[0] as number;
  const start = Math.min(from, haystack.length - needle.length);
  if (start < 0) return -1;
  let at = haystack.lastIndexOf(first, start);
  for (; at !== -1; at = at === 0 ? -1 : haystack.lastIndexOf(first, at - 1)) {
    if (startsAt(haystack, needle, at)) return at;
  }
  return -1;
}

function startsAt(haystack: Uint8Array, needle: Uint8Array, at: number): boolean {
  for (let i = 1; i < needle.length; i++) if (haystack[at + i] !== needle[i]) return false;
  return true;
}

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

export function readUint16LE(bytes: Uint8Array, at: number): number {
  return (bytes[at] as number) | ((bytes[at + 1] as number) << 8);
}

export function readUint32LE(bytes: Uint8Array, at: number): number {
  return (
    ((bytes[at] as number) | ((bytes[at + 1] as number) << 8) | ((bytes[at + 2] as number) << 16)) +
    (bytes[at + 3] as number) * 0x1000000
  );
}
