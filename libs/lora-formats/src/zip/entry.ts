import { quote } from "../describe.js";

/** Returned by record parsers when the bytes at hand are not enough to act on. */
export const NEED_MORE = -1;

/** One archive entry as its local header and data (or data descriptor) showed it. */
export interface ZipEntry {
  name: string;
  nameBytes: Uint8Array;
  /** Offset of its local header in the file. */
  offset: number;
  /** Offset of its first data byte in the file. */
  dataOffset: number;
  /** General-purpose bit flags of its local header. */
  flags: number;
  method: number;
  crc: number;
  compressedSize: number;
  uncompressedSize: number;
}

/** Parses an extra-field block into id → payload; throws (through `fail`) on a malformed or repeated field. */
export function parseExtraFields(
  extra: Uint8Array,
  name: string,
  fail: (detail: string) => never,
): Map<number, Uint8Array> {
  const fields = new Map<number, Uint8Array>();
  let at = 0;
  while (at < extra.length) {
    if (at + 4 > extra.length) fail(`entry ${quote(name)} has a malformed extra field`);
    const id = (extra[at] as number) | ((extra[at + 1] as number) << 8);
    const size = (extra[at + 2] as number) | ((extra[at + 3] as number) << 8);
    if (at + 4 + size > extra.length) fail(`entry ${quote(name)} has a malformed extra field`);
    if (fields.has(id)) fail(`entry ${quote(name)} repeats extra field 0x${id.toString(16)}`);
    fields.set(id, extra.subarray(at + 4, at + 4 + size));
    at += 4 + size;
  }
  return fields;
}
