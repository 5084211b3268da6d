import { quote } from "../describe.js";
import { NEED_MORE, parseExtraFields, type ZipEntry } from "./entry.js";
import {
  CENTRAL_HEADER_SIZE,
  END_RECORD_SIZE,
  EXTRA_ZIP64,
  FLAG_ENCRYPTED,
  FLAG_STRONG_ENCRYPTION,
  sameBytes,
  u16,
  U16_MAX,
  u32,
  U32_MAX,
  u64,
  ZIP64_END_MIN_SIZE,
  ZIP64_LOCATOR_SIZE,
} from "./fields.js";

const MAX_ZIP64_END_SIZE = ZIP64_END_MIN_SIZE + 64 * 1024;

/**
 * The records after the last entry: central directory headers, the ZIP64 end record and locator, and the end of
 * central directory record. Loaders (miniz inside torch) follow the central directory, not the local headers, so
 * every record must agree exactly with what the stream showed — same entries in the same order, names, offsets,
 * methods, sizes, CRCs — and the end records must point at that directory and close the file. Any disagreement
 * means a loader could read bytes that were not checked.
 */
export class CentralDirectory {
  private start = -1;
  private end = -1;
  private count = 0;
  private zip64EndOffset = -1;
  private expectLocator = false;
  private closed = false;

  constructor(
    private readonly entries: readonly ZipEntry[],
    private readonly fail: (detail: string) => never,
  ) {}

  /** True once the end of central directory record was read. */
  get done(): boolean {
    return this.closed;
  }

  /** True once the first central directory header was read: no local header may follow. */
  get started(): boolean {
    return this.start >= 0;
  }

  readCentralHeader(buf: Uint8Array, pos: number, fileOffset: number): number {
    if (this.entries.length === 0) this.fail("it has no entries");
    if (this.end >= 0) this.fail("a central directory header follows the end records");
    if (buf.length - pos < CENTRAL_HEADER_SIZE) return NEED_MORE;
    const nameLength = u16(buf, pos + 28);
    const extraLength = u16(buf, pos + 30);
    const commentLength = u16(buf, pos + 32);
    const total = CENTRAL_HEADER_SIZE + nameLength + extraLength + commentLength;
    if (buf.length - pos < total) return NEED_MORE;
    if (this.start < 0) this.start = fileOffset + pos;

    const local = this.entries[this.count];
    if (!local) this.fail(`the central directory lists more entries than the archive holds`);
    const name = local.name;
    const extra = parseExtraFields(
      buf.subarray(pos + CENTRAL_HEADER_SIZE + nameLength, pos + CENTRAL_HEADER_SIZE + nameLength + extraLength),
      name,
      this.fail,
    );
    for (const id of extra.keys()) {
      if (id !== EXTRA_ZIP64)
        this.fail(`the central directory entry for ${quote(name)} has extra field 0x${id.toString(16)}`);
    }
    // An entry comment is never written by torch and could hide bytes a backwards-scanning reader would parse.
    if (commentLength !== 0) this.fail(`the central directory entry for ${quote(name)} has a comment`);
    const zip64 = extra.get(EXTRA_ZIP64) ?? new Uint8Array(0);
    let zip64At = 0;
    // ZIP64 values appear, in this order, only for fields that hold their 0xFFFF… placeholder.
    const widen = (value: number, placeholder: number, width: 4 | 8): number => {
      if (value !== placeholder) return value;
      if (zip64At + width > zip64.length)
        this.fail(`the central directory entry for ${quote(name)} lacks ZIP64 fields`);
      const wide = width === 8 ? u64(zip64, zip64At) : u32(zip64, zip64At);
      zip64At += width;
      return wide;
    };
    const uncompressedSize = widen(u32(buf, pos + 24), U32_MAX, 8);
    const compressedSize = widen(u32(buf, pos + 20), U32_MAX, 8);
    const localOffset = widen(u32(buf, pos + 42), U32_MAX, 8);
    const diskStart = widen(u16(buf, pos + 34), U16_MAX, 4);

    const mismatch = (field: string): never =>
      this.fail(`the central directory entry for ${quote(name)} disagrees with its local header (${field})`);
    if (!sameBytes(buf.subarray(pos + CENTRAL_HEADER_SIZE, pos + CENTRAL_HEADER_SIZE + nameLength), local.nameBytes)) {
      mismatch("name");
    }
    if (localOffset !== local.offset) mismatch("offset");
    if (u16(buf, pos + 10) !== local.method) mismatch("compression method");
    if (u32(buf, pos + 16) !== local.crc) mismatch("CRC-32");
    if (compressedSize !== local.compressedSize) mismatch("compressed size");
    if (uncompressedSize !== local.uncompressedSize) mismatch("size");
    if (diskStart !== 0) mismatch("disk number");
    if (u16(buf, pos + 8) !== local.flags) mismatch("flags");
    if (u16(buf, pos + 8) & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION)) mismatch("encryption flag");
    this.count++;
    return pos + total;
  }

  readZip64End(buf: Uint8Array, pos: number, fileOffset: number): number {
    if (this.start < 0 || this.zip64EndOffset >= 0) this.fail("its ZIP64 end record is out of place");
    if (buf.length - pos < 12) return NEED_MORE;
    const total = 12 + u64(buf, pos + 4);
    if (total < ZIP64_END_MIN_SIZE || total > MAX_ZIP64_END_SIZE) this.fail("its ZIP64 end record has a bad size");
    if (buf.length - pos < total) return NEED_MORE;
    const here = fileOffset + pos;
    this.end = here;
    this.zip64EndOffset = here;
    if (u32(buf, pos + 16) !== 0 || u32(buf, pos + 20) !== 0) this.fail("it spans several disks");
    if (u64(buf, pos + 24) !== this.count || u64(buf, pos + 32) !== this.count) {
      this.fail("its ZIP64 end record counts a different number of entries than the central directory holds");
    }
    if (u64(buf, pos + 40) !== here - this.start || u64(buf, pos + 48) !== this.start) {
      this.fail("its ZIP64 end record places the central directory elsewhere");
    }
    this.expectLocator = true;
    return pos + total;
  }

  readZip64Locator(buf: Uint8Array, pos: number): number {
    if (!this.expectLocator) this.fail("its ZIP64 locator is out of place");
    if (buf.length - pos < ZIP64_LOCATOR_SIZE) return NEED_MORE;
    const disks = u32(buf, pos + 16);
    if (u32(buf, pos + 4) !== 0 || u64(buf, pos + 8) !== this.zip64EndOffset || disks > 1) {
      this.fail("its ZIP64 locator does not point at the ZIP64 end record");
    }
    this.expectLocator = false;
    return pos + ZIP64_LOCATOR_SIZE;
  }

  readEnd(buf: Uint8Array, pos: number, fileOffset: number): number {
    if (this.entries.length === 0) this.fail("it has no entries");
    if (this.start < 0) this.fail("it has no central directory");
    if (this.expectLocator) this.fail("its ZIP64 end record has no locator");
    if (buf.length - pos < END_RECORD_SIZE) return NEED_MORE;
    if (this.end < 0) this.end = fileOffset + pos;
    const zip64 = this.zip64EndOffset >= 0;
    const agrees = (value: number, actual: number, placeholder: number): boolean =>
      value === actual || (zip64 && value === placeholder);
    if (!agrees(u16(buf, pos + 4), 0, U16_MAX) || !agrees(u16(buf, pos + 6), 0, U16_MAX)) {
      this.fail("it spans several disks");
    }
    if (!agrees(u16(buf, pos + 8), this.count, U16_MAX) || !agrees(u16(buf, pos + 10), this.count, U16_MAX)) {
      this.fail("its end record counts a different number of entries than the central directory holds");
    }
    if (
      !agrees(u32(buf, pos + 12), this.end - this.start, U32_MAX) ||
      !agrees(u32(buf, pos + 16), this.start, U32_MAX)
    ) {
      this.fail("its end record places the central directory elsewhere");
    }
    // A comment could hide a second end record that a backwards-scanning reader would find first.
    if (u16(buf, pos + 20) !== 0) this.fail("it has an archive comment, which is not accepted");
    if (this.count !== this.entries.length) {
      this.fail(`its central directory lists ${this.count} entries but the archive holds ${this.entries.length}`);
    }
    this.closed = true;
    return pos + END_RECORD_SIZE;
  }
}
