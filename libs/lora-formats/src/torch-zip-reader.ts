import { crc32, inflateRawSync } from "node:zlib";
import { ByteQueue } from "./byte-queue.js";
import { type ContentReader, mergeUnique } from "./content-reader.js";
import { bytesText, quote } from "./describe.js";
import { FormatError } from "./format-error.js";
import { DEFAULT_MAX_PICKLE_BYTES, PickleScanner } from "./pickle-scanner.js";
import { decodeLatin1, decodeUtf8 } from "./pickle-strings.js";
import {
  CENTRAL_HEADER_SIZE,
  END_RECORD_SIZE,
  EXTRA_ZIP64,
  FLAG_DATA_DESCRIPTOR,
  FLAG_ENCRYPTED,
  FLAG_MASKED_HEADERS,
  FLAG_STRONG_ENCRYPTION,
  FLAG_UTF8_NAME,
  LOCAL_HEADER_SIZE,
  METHOD_DEFLATED,
  METHOD_STORED,
  sameBytes,
  SIG_CENTRAL_HEADER,
  SIG_END,
  SIG_LOCAL_HEADER,
  SIG_ZIP64_END,
  SIG_ZIP64_LOCATOR,
  u16,
  U16_MAX,
  u32,
  U32_MAX,
  u64,
  ZIP64_END_MIN_SIZE,
  ZIP64_LOCATOR_SIZE,
} from "./zip-fields.js";

// torch.save writes a ZIP whose entries are STORED, with general-purpose flag bit 3 set: the local header carries
// zero sizes and a data descriptor follows each entry's bytes. A stream cannot know where such an entry ends, so
// the reader takes the first descriptor signature whose recorded sizes equal the bytes seen so far (and, for
// stored entries, whose CRC-32 matches them). Loaders (miniz inside torch) never read local headers in sequence:
// they follow the central directory. So after the last entry the central directory is parsed too and every record
// must agree exactly — same entries, order, names, offsets, sizes, CRCs — with what the stream showed, and the
// end records must close the file. Any disagreement means a loader could see bytes we did not scan: rejected.

const NEED_MORE = -1;
const DESCRIPTOR_SIGNATURE = Buffer.from([0x50, 0x4b, 0x07, 0x08]);
const MAX_ENTRIES = 100_000;
const MAX_TOTAL_NAME_BYTES = 16 * 1024 * 1024;
const MAX_ZIP64_END_SIZE = ZIP64_END_MIN_SIZE + 64 * 1024;
// A DEFLATED pickle is buffered and inflated in one go; a state-dict pickle is kilobytes, these are generous.
const MAX_COMPRESSED_PICKLE_BYTES = DEFAULT_MAX_PICKLE_BYTES;
const MAX_INFLATED_PICKLE_BYTES = DEFAULT_MAX_PICKLE_BYTES;
/** Bounds the scan time of archives holding many pickles. */
const MAX_TOTAL_PICKLE_BYTES = 2 * DEFAULT_MAX_PICKLE_BYTES;

interface ZipEntry {
  name: string;
  nameBytes: Uint8Array;
  offset: number;
  method: number;
  crc: number;
  compressedSize: number;
  uncompressedSize: number;
}

interface OpenEntry extends ZipEntry {
  descriptorLength: number;
  remaining: number;
  dataLength: number;
  runningCrc: number;
  scanner: PickleScanner | undefined;
  compressedPickle: Uint8Array[] | undefined;
  compressedPickleBytes: number;
}

type State = "record" | "data" | "search" | "done";

export class TorchZipReader implements ContentReader {
  private readonly queue = new ByteQueue();
  /** Absolute offset of the first byte not yet consumed. */
  private fileOffset = 0;
  private state: State = "record";
  private readonly entries: ZipEntry[] = [];
  private current: OpenEntry | undefined;
  private nameBytesTotal = 0;
  private centralStart = -1;
  private centralEnd = -1;
  private centralCount = 0;
  private zip64EndOffset = -1;
  private expectLocator = false;
  private readonly unsafe: string[] = [];
  private readonly sources: string[] = [];
  private tensors = 0;
  private pickleBytes = 0;

  get unsafeGlobals(): readonly string[] {
    const pending = this.current?.scanner?.unsafeGlobals ?? [];
    if (pending.length === 0) return this.unsafe;
    const merged = [...this.unsafe];
    mergeUnique(merged, pending);
    return merged;
  }

  get unsafeSources(): readonly string[] {
    const current = this.current;
    if (!current?.scanner?.unsafeGlobals.length || this.sources.includes(current.name)) return this.sources;
    return [...this.sources, current.name];
  }

  get tensorCount(): number {
    return this.tensors;
  }

  /** Names of the entries read so far, in archive order. */
  get entryNames(): string[] {
    return this.entries.map((entry) => entry.name);
  }

  update(chunk: Uint8Array): void {
    if (this.queue.length === 0) {
      const used = this.pump(chunk);
      this.queue.append(chunk.subarray(used));
    } else {
      this.queue.append(chunk);
      this.queue.discard(this.pump(this.queue.view()));
    }
  }

  finish(): void {
    if (this.state !== "done") {
      const entry = this.current;
      if (this.state === "search" && entry) {
        this.fail(
          `no data descriptor matching the bytes of entry ${quote(entry.name)} was found (corrupt or truncated)`,
        );
      }
      if (this.state === "data" && entry) this.fail(`the file ends inside entry ${quote(entry.name)} (truncated)`);
      this.fail("the file ends before the end-of-central-directory record (truncated)");
    }
    this.checkTorchLayout();
  }

  private fail(detail: string): never {
    throw new FormatError(`The ZIP archive is invalid: ${detail}.`);
  }

  private pump(buf: Uint8Array): number {
    let pos = 0;
    for (;;) {
      const next = this.step(buf, pos);
      if (next === NEED_MORE) break;
      pos = next;
    }
    this.fileOffset += pos;
    return pos;
  }

  /** Returns the new position, or NEED_MORE when nothing can be done with the bytes available. */
  private step(buf: Uint8Array, pos: number): number {
    switch (this.state) {
      case "record":
        return this.readRecord(buf, pos);
      case "data":
        return this.readKnownData(buf, pos);
      case "search":
        return this.searchDescriptor(buf, pos);
      default:
        if (pos < buf.length) this.fail(`unexpected data after the end-of-central-directory record`);
        return NEED_MORE;
    }
  }

  private readRecord(buf: Uint8Array, pos: number): number {
    if (buf.length - pos < 4) return NEED_MORE;
    const signature = u32(buf, pos);
    switch (signature) {
      case SIG_LOCAL_HEADER:
        return this.readLocalHeader(buf, pos);
      case SIG_CENTRAL_HEADER:
        return this.readCentralHeader(buf, pos);
      case SIG_ZIP64_END:
        return this.readZip64End(buf, pos);
      case SIG_ZIP64_LOCATOR:
        return this.readZip64Locator(buf, pos);
      case SIG_END:
        return this.readEnd(buf, pos);
      default:
        return this.fail(`unexpected bytes at offset ${this.fileOffset + pos} where a ZIP record should start`);
    }
  }

  // ---- entries -----------------------------------------------------------------------------------------------

  private readLocalHeader(buf: Uint8Array, pos: number): number {
    if (this.centralStart >= 0) this.fail(`a local file header follows the central directory`);
    if (buf.length - pos < LOCAL_HEADER_SIZE) return NEED_MORE;
    const nameLength = u16(buf, pos + 26);
    const extraLength = u16(buf, pos + 28);
    const total = LOCAL_HEADER_SIZE + nameLength + extraLength;
    if (buf.length - pos < total) return NEED_MORE;

    const flags = u16(buf, pos + 6);
    const method = u16(buf, pos + 8);
    const nameBytes = buf.slice(pos + LOCAL_HEADER_SIZE, pos + LOCAL_HEADER_SIZE + nameLength);
    const name = this.decodeName(nameBytes, flags);
    if (this.entries.length >= MAX_ENTRIES) this.fail(`it has more than ${MAX_ENTRIES} entries`);
    this.nameBytesTotal += nameLength;
    if (this.nameBytesTotal > MAX_TOTAL_NAME_BYTES)
      this.fail(`its entry names exceed ${bytesText(MAX_TOTAL_NAME_BYTES)}`);
    if (flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION | FLAG_MASKED_HEADERS)) {
      this.fail(`entry ${quote(name)} is encrypted`);
    }
    if (method !== METHOD_STORED && method !== METHOD_DEFLATED) {
      this.fail(`entry ${quote(name)} uses compression method ${method}; only stored and deflated entries are read`);
    }
    const extra = this.parseExtra(buf.subarray(pos + LOCAL_HEADER_SIZE + nameLength, pos + total), name);
    const zip64 = extra.get(EXTRA_ZIP64);
    const usesDescriptor = (flags & FLAG_DATA_DESCRIPTOR) !== 0;
    let compressedSize = u32(buf, pos + 18);
    let uncompressedSize = u32(buf, pos + 22);
    if (!usesDescriptor && (compressedSize === U32_MAX || uncompressedSize === U32_MAX)) {
      // A ZIP64 local header must carry both sizes.
      if (!zip64 || zip64.length < 16) this.fail(`entry ${quote(name)} lacks its ZIP64 sizes`);
      uncompressedSize = u64(zip64, 0);
      compressedSize = u64(zip64, 8);
    }
    if (!usesDescriptor && method === METHOD_STORED && compressedSize !== uncompressedSize) {
      this.fail(`stored entry ${quote(name)} has different compressed and uncompressed sizes`);
    }
    const isPickle = name.toLowerCase().endsWith(".pkl");
    const entry: OpenEntry = {
      name,
      nameBytes,
      offset: this.fileOffset + pos,
      method,
      crc: u32(buf, pos + 14),
      compressedSize,
      uncompressedSize,
      // Sizes in the descriptor are 8 bytes wide exactly when the entry has a ZIP64 extra field.
      descriptorLength: zip64 ? 24 : 16,
      remaining: compressedSize,
      dataLength: 0,
      runningCrc: 0,
      scanner:
        isPickle && method === METHOD_STORED ? new PickleScanner({ label: `The pickle ${quote(name)}` }) : undefined,
      compressedPickle: isPickle && method === METHOD_DEFLATED ? [] : undefined,
      compressedPickleBytes: 0,
    };
    this.current = entry;
    if (usesDescriptor) this.state = "search";
    else if (compressedSize === 0) this.closeEntry(entry.crc, 0, uncompressedSize);
    else this.state = "data";
    return pos + total;
  }

  private decodeName(nameBytes: Uint8Array, flags: number): string {
    if (nameBytes.length === 0) this.fail(`an entry has an empty name`);
    const name = flags & FLAG_UTF8_NAME ? decodeUtf8(nameBytes) : decodeLatin1(nameBytes);
    if (name.includes("\0")) this.fail(`entry name ${quote(name)} contains a NUL character`);
    return name;
  }

  private parseExtra(extra: Uint8Array, name: string): Map<number, Uint8Array> {
    const fields = new Map<number, Uint8Array>();
    let at = 0;
    while (at < extra.length) {
      if (at + 4 > extra.length) this.fail(`entry ${quote(name)} has a malformed extra field`);
      const id = u16(extra, at);
      const size = u16(extra, at + 2);
      if (at + 4 + size > extra.length) this.fail(`entry ${quote(name)} has a malformed extra field`);
      if (fields.has(id)) this.fail(`entry ${quote(name)} repeats extra field 0x${id.toString(16)}`);
      fields.set(id, extra.subarray(at + 4, at + 4 + size));
      at += 4 + size;
    }
    return fields;
  }

  private readKnownData(buf: Uint8Array, pos: number): number {
    const entry = this.current as OpenEntry;
    const take = Math.min(entry.remaining, buf.length - pos);
    if (take === 0) return NEED_MORE;
    this.consumeData(buf.subarray(pos, pos + take));
    entry.remaining -= take;
    if (entry.remaining === 0) this.closeEntry(entry.crc, entry.compressedSize, entry.uncompressedSize);
    return pos + take;
  }

  private searchDescriptor(buf: Uint8Array, pos: number): number {
    const entry = this.current as OpenEntry;
    const haystack = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
    const length = entry.descriptorLength;
    let from = pos;
    for (;;) {
      const at = haystack.indexOf(DESCRIPTOR_SIGNATURE, from);
      if (at === -1 || at + length > buf.length) {
        // Hold back what could be the start of a descriptor until more bytes arrive.
        const keepFrom = at === -1 ? Math.max(from, buf.length - 3) : at;
        if (keepFrom > from) this.consumeData(buf.subarray(from, keepFrom));
        return keepFrom > pos ? keepFrom : NEED_MORE;
      }
      const sizeIfEnd = entry.dataLength + (at - from);
      const crcIfEnd = entry.method === METHOD_STORED ? crc32(buf.subarray(from, at), entry.runningCrc) : 0;
      const crc = u32(buf, at + 4);
      const compressed = length === 24 ? u64(buf, at + 8) : u32(buf, at + 8);
      const uncompressed = length === 24 ? u64(buf, at + 16) : u32(buf, at + 12);
      const matches =
        compressed === sizeIfEnd &&
        (entry.method !== METHOD_STORED || (uncompressed === sizeIfEnd && crc === crcIfEnd));
      if (matches) {
        this.consumeData(buf.subarray(from, at), crcIfEnd);
        this.closeEntry(crc, compressed, uncompressed);
        return at + length;
      }
      this.consumeData(buf.subarray(from, at), crcIfEnd);
      this.consumeData(buf.subarray(at, at + 1));
      from = at + 1;
    }
  }

  private consumeData(bytes: Uint8Array, crcAfter?: number): void {
    const entry = this.current as OpenEntry;
    if (bytes.length === 0) return;
    if (entry.method === METHOD_STORED) entry.runningCrc = crcAfter ?? crc32(bytes, entry.runningCrc);
    entry.dataLength += bytes.length;
    if (entry.scanner) this.feedScanner(entry.scanner, bytes, entry.name);
    if (entry.compressedPickle) {
      entry.compressedPickleBytes += bytes.length;
      if (entry.compressedPickleBytes > MAX_COMPRESSED_PICKLE_BYTES) {
        this.fail(
          `the compressed pickle ${quote(entry.name)} is larger than ${bytesText(MAX_COMPRESSED_PICKLE_BYTES)}`,
        );
      }
      entry.compressedPickle.push(bytes.slice());
    }
  }

  private feedScanner(scanner: PickleScanner, bytes: Uint8Array, name: string): void {
    this.pickleBytes += bytes.length;
    if (this.pickleBytes > MAX_TOTAL_PICKLE_BYTES) {
      this.fail(`its pickles together exceed ${bytesText(MAX_TOTAL_PICKLE_BYTES)}`);
    }
    const used = scanner.done ? 0 : scanner.update(bytes);
    if (used < bytes.length) {
      throw new FormatError(`The pickle ${quote(name)} continues after its STOP opcode; the archive is invalid.`);
    }
  }

  private closeEntry(crc: number, compressedSize: number, uncompressedSize: number): void {
    const entry = this.current as OpenEntry;
    if (entry.method === METHOD_STORED) {
      if (compressedSize !== entry.dataLength || uncompressedSize !== entry.dataLength) {
        this.fail(`entry ${quote(entry.name)} does not have the size its header records`);
      }
      if (entry.runningCrc !== crc) this.fail(`entry ${quote(entry.name)} fails its CRC-32 check (corrupt)`);
    }
    if (entry.compressedPickle) this.inflatePickle(entry, crc, uncompressedSize);
    if (entry.scanner) {
      entry.scanner.finish();
      const found = entry.scanner.unsafeGlobals;
      mergeUnique(this.unsafe, found);
      if (found.length > 0) mergeUnique(this.sources, [entry.name]);
      this.tensors += entry.scanner.tensorCount;
    }
    this.entries.push({
      name: entry.name,
      nameBytes: entry.nameBytes,
      offset: entry.offset,
      method: entry.method,
      crc,
      compressedSize,
      uncompressedSize,
    });
    this.current = undefined;
    this.state = "record";
  }

  private inflatePickle(entry: OpenEntry, crc: number, uncompressedSize: number): void {
    let inflated: Buffer;
    try {
      inflated = inflateRawSync(Buffer.concat(entry.compressedPickle ?? []), {
        maxOutputLength: MAX_INFLATED_PICKLE_BYTES,
      });
    } catch {
      return this.fail(
        `the compressed pickle ${quote(entry.name)} cannot be inflated (corrupt or larger than ${bytesText(MAX_INFLATED_PICKLE_BYTES)})`,
      );
    }
    if (inflated.length !== uncompressedSize || crc32(inflated) !== crc) {
      this.fail(`the compressed pickle ${quote(entry.name)} does not match its recorded size and CRC-32`);
    }
    entry.compressedPickle = undefined;
    entry.scanner = new PickleScanner({ label: `The pickle ${quote(entry.name)}` });
    this.feedScanner(entry.scanner, inflated, entry.name);
  }

  // ---- central directory and end records ---------------------------------------------------------------------

  private readCentralHeader(buf: Uint8Array, pos: number): number {
    if (this.entries.length === 0) this.fail("it has no entries");
    if (this.centralEnd >= 0) this.fail("a central directory header follows the end records");
    if (buf.length - pos < CENTRAL_HEADER_SIZE) return NEED_MORE;
    const nameLength = u16(buf, pos + 28);
    const extraLength = u16(buf, pos + 30);
    const commentLength = u16(buf, pos + 32);
    const total = CENTRAL_HEADER_SIZE + nameLength + extraLength + commentLength;
    if (buf.length - pos < total) return NEED_MORE;
    if (this.centralStart < 0) this.centralStart = this.fileOffset + pos;

    const local = this.entries[this.centralCount];
    if (!local) this.fail(`the central directory lists more entries than the archive holds`);
    const name = local.name;
    const extra = this.parseExtra(
      buf.subarray(pos + CENTRAL_HEADER_SIZE + nameLength, pos + CENTRAL_HEADER_SIZE + nameLength + extraLength),
      name,
    );
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
    if (u16(buf, pos + 8) & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION)) mismatch("encryption flag");
    this.centralCount++;
    return pos + total;
  }

  private readZip64End(buf: Uint8Array, pos: number): number {
    if (this.centralStart < 0 || this.zip64EndOffset >= 0) this.fail("its ZIP64 end record is out of place");
    if (buf.length - pos < 12) return NEED_MORE;
    const total = 12 + u64(buf, pos + 4);
    if (total < ZIP64_END_MIN_SIZE || total > MAX_ZIP64_END_SIZE) this.fail("its ZIP64 end record has a bad size");
    if (buf.length - pos < total) return NEED_MORE;
    const here = this.fileOffset + pos;
    this.centralEnd = here;
    this.zip64EndOffset = here;
    if (u32(buf, pos + 16) !== 0 || u32(buf, pos + 20) !== 0) this.fail("it spans several disks");
    if (u64(buf, pos + 24) !== this.centralCount || u64(buf, pos + 32) !== this.centralCount) {
      this.fail("its ZIP64 end record counts a different number of entries than the central directory holds");
    }
    if (u64(buf, pos + 40) !== here - this.centralStart || u64(buf, pos + 48) !== this.centralStart) {
      this.fail("its ZIP64 end record places the central directory elsewhere");
    }
    this.expectLocator = true;
    return pos + total;
  }

  private readZip64Locator(buf: Uint8Array, pos: number): number {
    if (!this.expectLocator) this.fail("its ZIP64 locator is out of place");
    if (buf.length - pos < ZIP64_LOCATOR_SIZE) return NEED_MORE;
    const disks = u32(buf, pos + 16);
    if (u32(buf, pos + 4) !== 0 || u64(buf, pos + 8) !== this.zip64EndOffset || disks > 1) {
      this.fail("its ZIP64 locator does not point at the ZIP64 end record");
    }
    this.expectLocator = false;
    return pos + ZIP64_LOCATOR_SIZE;
  }

  private readEnd(buf: Uint8Array, pos: number): number {
    if (this.entries.length === 0) this.fail("it has no entries");
    if (this.centralStart < 0) this.fail("it has no central directory");
    if (this.expectLocator) this.fail("its ZIP64 end record has no locator");
    if (buf.length - pos < END_RECORD_SIZE) return NEED_MORE;
    if (this.centralEnd < 0) this.centralEnd = this.fileOffset + pos;
    const zip64 = this.zip64EndOffset >= 0;
    const agrees = (value: number, actual: number, placeholder: number): boolean =>
      value === actual || (zip64 && value === placeholder);
    if (!agrees(u16(buf, pos + 4), 0, U16_MAX) || !agrees(u16(buf, pos + 6), 0, U16_MAX)) {
      this.fail("it spans several disks");
    }
    if (
      !agrees(u16(buf, pos + 8), this.centralCount, U16_MAX) ||
      !agrees(u16(buf, pos + 10), this.centralCount, U16_MAX)
    ) {
      this.fail("its end record counts a different number of entries than the central directory holds");
    }
    if (
      !agrees(u32(buf, pos + 12), this.centralEnd - this.centralStart, U32_MAX) ||
      !agrees(u32(buf, pos + 16), this.centralStart, U32_MAX)
    ) {
      this.fail("its end record places the central directory elsewhere");
    }
    // A comment could hide a second end record that a backwards-scanning reader would find first.
    if (u16(buf, pos + 20) !== 0) this.fail("it has an archive comment, which is not accepted");
    if (this.centralCount !== this.entries.length) {
      this.fail(
        `its central directory lists ${this.centralCount} entries but the archive holds ${this.entries.length}`,
      );
    }
    this.state = "done";
    return pos + END_RECORD_SIZE;
  }

  // ---- torch layout ------------------------------------------------------------------------------------------

  // torch.load finds records under the folder of the first entry, matching names case-insensitively (miniz).
  private checkTorchLayout(): void {
    const first = this.entries[0]?.name ?? "";
    const slash = first.indexOf("/");
    if (slash <= 0) {
      throw new FormatError(
        `This is not a PyTorch checkpoint: its first ZIP entry ${quote(first)} is not in a folder.`,
      );
    }
    const prefix = first.slice(0, slash + 1).toLowerCase();
    const names = this.entries.map((entry) => entry.name.toLowerCase());
    if (!names.includes(`${prefix}data.pkl`)) {
      throw new FormatError(
        `This is not a PyTorch checkpoint: the archive has no ${quote(`${first.slice(0, slash + 1)}data.pkl`)}.`,
      );
    }
    if (names.some((name) => name === `${prefix}constants.pkl` || name.startsWith(`${prefix}code/`))) {
      throw new FormatError(
        "This is a TorchScript archive, which carries code; only tensor state dicts saved with torch.save are accepted.",
      );
    }
  }
}
