import {
  CENTRAL_HEADER_SIZE,
  END_RECORD_SIZE,
  EXTRA_ZIP64,
  SIG_CENTRAL_HEADER,
  SIG_END,
  SIG_ZIP64_END,
  SIG_ZIP64_LOCATOR,
  u16,
  U16_MAX,
  u32,
  U32_MAX,
  u64,
  ZIP64_END_MIN_SIZE,
  ZIP64_LOCATOR_SIZE,
} from "./fields.js";

// Where a ZIP's entries are, from its end records and central directory, to plan ranged reads. Nothing here is
// trusted: the ZipStreamReader checks every record when the bytes are fed to it, so an archive whose records do
// not describe it is refused there. Anything unexpected here only means "no plan" (read the file in order).

/** Bytes at the end of a file that hold the end record, the ZIP64 locator and a ZIP64 end record. */
export const ZIP_TAIL_BYTES = END_RECORD_SIZE + ZIP64_LOCATOR_SIZE + ZIP64_END_MIN_SIZE;
/** Largest central directory planned from (100,016 entries with 16 MiB of names fit). */
const MAX_CENTRAL_DIRECTORY_BYTES = 64 * 1024 * 1024;

export interface CentralDirectoryLocation {
  start: number;
  end: number;
}

export interface IndexedEntry {
  localOffset: number;
  compressedSize: number;
  crc: number;
  nameLength: number;
}

/** The central directory's place from the last ZIP_TAIL_BYTES of a file of `size` bytes (no archive comment). */
export function locateCentralDirectory(tail: Uint8Array, size: number): CentralDirectoryLocation | undefined {
  const end = tail.length - END_RECORD_SIZE;
  if (end < 0 || u32(tail, end) !== SIG_END) return undefined;
  let count = u16(tail, end + 10);
  let length = u32(tail, end + 12);
  let start = u32(tail, end + 16);
  if (count === U16_MAX || length === U32_MAX || start === U32_MAX) {
    const locator = end - ZIP64_LOCATOR_SIZE;
    if (locator < 0 || u32(tail, locator) !== SIG_ZIP64_LOCATOR) return undefined;
    const record = u64(tail, locator + 8);
    const at = record - (size - tail.length);
    if (at < 0 || at + ZIP64_END_MIN_SIZE > locator || u32(tail, at) !== SIG_ZIP64_END) return undefined;
    count = u64(tail, at + 32);
    length = u64(tail, at + 40);
    start = u64(tail, at + 48);
  }
  if (count === 0 || length > MAX_CENTRAL_DIRECTORY_BYTES || start + length > size) return undefined;
  return { start, end: start + length };
}

/** Each entry's local header offset, stored size and CRC-32, in central directory order. */
export function indexCentralDirectory(directory: Uint8Array): IndexedEntry[] | undefined {
  const entries: IndexedEntry[] = [];
  for (let pos = 0; pos < directory.length;) {
    if (directory.length - pos < CENTRAL_HEADER_SIZE || u32(directory, pos) !== SIG_CENTRAL_HEADER) return undefined;
    const nameLength = u16(directory, pos + 28);
    const extraLength = u16(directory, pos + 30);
    const total = CENTRAL_HEADER_SIZE + nameLength + extraLength + u16(directory, pos + 32);
    if (directory.length - pos < total) return undefined;
    let compressedSize = u32(directory, pos + 20);
    let localOffset = u32(directory, pos + 42);
    if (compressedSize === U32_MAX || localOffset === U32_MAX || u32(directory, pos + 24) === U32_MAX) {
      // ZIP64 values follow in this order, each only where its field holds the placeholder.
      const zip64 = zip64Field(
        directory.subarray(
          pos + CENTRAL_HEADER_SIZE + nameLength,
          pos + CENTRAL_HEADER_SIZE + nameLength + extraLength,
        ),
      );
      if (!zip64) return undefined;
      let at = 0;
      const wide = (): number | undefined => (at + 8 <= zip64.length ? u64(zip64, (at += 8) - 8) : undefined);
      if (u32(directory, pos + 24) === U32_MAX && wide() === undefined) return undefined;
      if (compressedSize === U32_MAX) compressedSize = wide() ?? -1;
      if (localOffset === U32_MAX) localOffset = wide() ?? -1;
      if (compressedSize < 0 || localOffset < 0) return undefined;
    }
    entries.push({ localOffset, compressedSize, crc: u32(directory, pos + 16), nameLength });
    pos += total;
  }
  return entries;
}

function zip64Field(extra: Uint8Array): Uint8Array | undefined {
  for (let at = 0; at + 4 <= extra.length;) {
    const id = u16(extra, at);
    const size = u16(extra, at + 2);
    if (id === EXTRA_ZIP64) return extra.subarray(at + 4, at + 4 + size);
    at += 4 + size;
  }
  return undefined;
}
