import { ByteQueue } from "../byte-queue.js";
import { indexOfBytes, latin1Text } from "../bytes.js";
import type { Crc32 } from "../crc32.js";
import { bytesText, quote } from "../describe.js";
import { FormatError } from "../format-error.js";
import { decodeUtf8 } from "../pickle-strings.js";
import { CentralDirectory } from "./central-directory.js";
import { NEED_MORE, parseExtraFields, type ZipEntry } from "./entry.js";
import {
  EXTRA_ALIGNMENT_PADDING,
  EXTRA_ZIP64,
  FLAG_DATA_DESCRIPTOR,
  FLAG_ENCRYPTED,
  FLAG_MASKED_HEADERS,
  FLAG_STRONG_ENCRYPTION,
  FLAG_UTF8_NAME,
  LOCAL_HEADER_SIZE,
  METHOD_DEFLATED,
  METHOD_STORED,
  SIG_CENTRAL_HEADER,
  SIG_END,
  SIG_LOCAL_HEADER,
  SIG_ZIP64_END,
  SIG_ZIP64_LOCATOR,
  u16,
  u32,
  U32_MAX,
  u64,
} from "./fields.js";

// torch.save writes a ZIP whose entries are STORED, with general-purpose flag bit 3 set: the local header carries
// zero sizes and a data descriptor follows each entry's bytes. A stream cannot know where such an entry ends, so
// the reader takes the first descriptor signature whose recorded sizes equal the bytes seen so far (and, for
// stored entries, whose CRC-32 matches them). After the last entry the central directory must agree with what the
// stream showed (see CentralDirectory).

const DESCRIPTOR_SIGNATURE = new Uint8Array([0x50, 0x4b, 0x07, 0x08]);
// A checkpoint has one entry per storage (at most 100,000 tensors) plus a few records.
const MAX_ENTRIES = 100_016;
const MAX_TOTAL_NAME_BYTES = 16 * 1024 * 1024;
/** Bytes of a new chunk joined with carried-over bytes before the chunk is read in place. */
const JOIN_BYTES = 4096;

/** What the reader tells its owner about each entry as its bytes stream past. */
export interface ZipEntryHandler {
  /** A local header was read; `entry` has the header's sizes (zero when a data descriptor follows). */
  onEntryStart(entry: ZipEntry): void;
  /** Bytes of the current entry's data, as stored (compressed when the method is not STORED). */
  onEntryData(bytes: Uint8Array): void;
  /** The entry ended; `entry` has its final CRC-32 and sizes. */
  onEntryEnd(entry: ZipEntry): void;
}

/** An entry whose data a reader skipped (see ZipStreamReader.skipData). */
export interface SkippedEntry {
  entry: ZipEntry;
  /** Data bytes skipped. */
  length: number;
  /** The CRC-32 taken for them. */
  crc: number;
  /** Bytes of the data descriptor after the data; 0 when the entry has none. */
  descriptorLength: number;
}

interface OpenEntry extends ZipEntry {
  descriptorLength: number;
  remaining: number;
  dataLength: number;
  runningCrc: number;
}

type State = "record" | "data" | "search" | "done";

/** Reads a ZIP archive as a stream of chunks (any chunking), handing each entry's bytes to a handler. */
export class ZipStreamReader {
  private readonly queue = new ByteQueue();
  /** Absolute offset of the first byte not yet consumed. */
  private fileOffset = 0;
  private state: State = "record";
  private readonly entryList: ZipEntry[] = [];
  private readonly central = new CentralDirectory(this.entryList, (detail) => this.fail(detail));
  private current: OpenEntry | undefined;
  private nameBytesTotal = 0;

  constructor(
    private readonly handler: ZipEntryHandler,
    /** zlib.crc32 on Node (native), portableCrc32 elsewhere. */
    private readonly crc32: Crc32,
  ) {}

  /** Entries read so far, in archive order. */
  get entries(): readonly ZipEntry[] {
    return this.entryList;
  }

  /** True once the end of central directory record was read. */
  get done(): boolean {
    return this.state === "done";
  }

  /** The entry whose data is streaming, if any. */
  get currentEntry(): ZipEntry | undefined {
    return this.current;
  }

  /** Offset in the file of the next byte to feed. */
  get offset(): number {
    return this.fileOffset + this.queue.length;
  }

  /**
   * Right after a STORED entry's local header was read, before any of its data: takes its `length` data bytes as
   * read without seeing them, with `crc` (its central directory CRC-32) for their CRC-32. The next bytes fed are
   * its data descriptor, if it has one. The skipped bytes must be checked later with {@link SkippedEntryCheck},
   * which reads them as this reader would have.
   */
  skipData(length: number, crc: number): SkippedEntry {
    const entry = this.current;
    if (
      !entry ||
      entry.method !== METHOD_STORED ||
      entry.dataLength !== 0 ||
      this.queue.length !== 0 ||
      (this.state !== "search" && this.state !== "data")
    ) {
      throw new Error("ZipStreamReader.skipData() is only allowed at the start of a stored entry's data");
    }
    const usesDescriptor = this.state === "search";
    const skipped: SkippedEntry = {
      entry: { ...entry },
      length,
      crc,
      descriptorLength: usesDescriptor ? entry.descriptorLength : 0,
    };
    this.fileOffset += length;
    entry.dataLength = length;
    entry.runningCrc = crc;
    if (!usesDescriptor) {
      if (length !== entry.remaining) this.fail(`entry ${quote(entry.name)} does not have the size its header records`);
      entry.remaining = 0;
      this.closeEntry(entry.crc, entry.compressedSize, entry.uncompressedSize);
    }
    return skipped;
  }

  /** Continues the entry `skipped` describes from its first data byte (see SkippedEntryCheck). */
  private resume(skipped: SkippedEntry): void {
    const entry = skipped.entry as OpenEntry;
    this.current = { ...entry, dataLength: 0, runningCrc: 0, remaining: entry.compressedSize };
    this.fileOffset = entry.dataOffset;
    this.state = skipped.descriptorLength > 0 ? "search" : "data";
  }

  /** A reader that reads a skipped entry's data and descriptor; used by SkippedEntryCheck. */
  static resuming(skipped: SkippedEntry, handler: ZipEntryHandler, crc32: Crc32): ZipStreamReader {
    const reader = new ZipStreamReader(handler, crc32);
    reader.resume(skipped);
    return reader;
  }

  update(chunk: Uint8Array): void {
    if (this.queue.length > 0) {
      // Bytes carried over (a partial record, or a few that might start a data descriptor) are joined with the
      // head of this chunk only; once they are consumed the chunk is read in place rather than copied whole.
      const head = Math.min(chunk.length, JOIN_BYTES);
      this.queue.append(chunk.subarray(0, head));
      this.queue.discard(this.pump(this.queue.view()));
      if (this.queue.length > head) {
        this.queue.append(chunk.subarray(head));
        this.queue.discard(this.pump(this.queue.view()));
        return;
      }
      const from = head - this.queue.length;
      this.queue.discard(this.queue.length);
      chunk = chunk.subarray(from);
    }
    const used = this.pump(chunk);
    this.queue.append(chunk.subarray(used));
  }

  /** Throws FormatError unless the archive ended with its end of central directory record. */
  finish(): void {
    if (this.state === "done") return;
    const entry = this.current;
    if (this.state === "search" && entry) {
      this.fail(`no data descriptor matching the bytes of entry ${quote(entry.name)} was found (corrupt or truncated)`);
    }
    if (this.state === "data" && entry) this.fail(`the file ends inside entry ${quote(entry.name)} (truncated)`);
    this.fail("the file ends before the end-of-central-directory record (truncated)");
  }

  fail(detail: string): never {
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
    const here = this.fileOffset + pos;
    let next: number;
    switch (u32(buf, pos)) {
      case SIG_LOCAL_HEADER:
        return this.readLocalHeader(buf, pos);
      case SIG_CENTRAL_HEADER:
        return this.central.readCentralHeader(buf, pos, this.fileOffset);
      case SIG_ZIP64_END:
        return this.central.readZip64End(buf, pos, this.fileOffset);
      case SIG_ZIP64_LOCATOR:
        return this.central.readZip64Locator(buf, pos);
      case SIG_END:
        next = this.central.readEnd(buf, pos, this.fileOffset);
        if (this.central.done) this.state = "done";
        return next;
      default:
        return this.fail(`unexpected bytes at offset ${here} where a ZIP record should start`);
    }
  }

  private readLocalHeader(buf: Uint8Array, pos: number): number {
    if (this.central.started) this.fail(`a local file header follows the central directory`);
    if (buf.length - pos < LOCAL_HEADER_SIZE) return NEED_MORE;
    const nameLength = u16(buf, pos + 26);
    const extraLength = u16(buf, pos + 28);
    const total = LOCAL_HEADER_SIZE + nameLength + extraLength;
    if (buf.length - pos < total) return NEED_MORE;

    const flags = u16(buf, pos + 6);
    const method = u16(buf, pos + 8);
    const nameBytes = buf.slice(pos + LOCAL_HEADER_SIZE, pos + LOCAL_HEADER_SIZE + nameLength);
    const name = this.decodeName(nameBytes, flags);
    if (this.entryList.length >= MAX_ENTRIES) this.fail(`it has more than ${MAX_ENTRIES} entries`);
    this.nameBytesTotal += nameLength;
    if (this.nameBytesTotal > MAX_TOTAL_NAME_BYTES)
      this.fail(`its entry names exceed ${bytesText(MAX_TOTAL_NAME_BYTES)}`);
    if (flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION | FLAG_MASKED_HEADERS)) {
      this.fail(`entry ${quote(name)} is encrypted`);
    }
    if (method !== METHOD_STORED && method !== METHOD_DEFLATED) {
      this.fail(`entry ${quote(name)} uses compression method ${method}; only stored and deflated entries are read`);
    }
    const extra = parseExtraFields(buf.subarray(pos + LOCAL_HEADER_SIZE + nameLength, pos + total), name, (d) =>
      this.fail(d),
    );
    for (const id of extra.keys()) {
      if (id !== EXTRA_ZIP64 && id !== EXTRA_ALIGNMENT_PADDING) {
        this.fail(
          `entry ${quote(name)} has extra field 0x${id.toString(16).padStart(4, "0")}, which torch.save does not write`,
        );
      }
    }
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
    const entry: OpenEntry = {
      name,
      nameBytes,
      offset: this.fileOffset + pos,
      dataOffset: this.fileOffset + pos + total,
      flags,
      method,
      crc: u32(buf, pos + 14),
      compressedSize,
      uncompressedSize,
      // Sizes in the descriptor are 8 bytes wide exactly when the entry has a ZIP64 extra field.
      descriptorLength: zip64 ? 24 : 16,
      remaining: compressedSize,
      dataLength: 0,
      runningCrc: 0,
    };
    this.current = entry;
    this.handler.onEntryStart(entry);
    if (usesDescriptor) this.state = "search";
    else if (compressedSize === 0) this.closeEntry(entry.crc, 0, uncompressedSize);
    else this.state = "data";
    return pos + total;
  }

  private decodeName(nameBytes: Uint8Array, flags: number): string {
    if (nameBytes.length === 0) this.fail(`an entry has an empty name`);
    const name = flags & FLAG_UTF8_NAME ? decodeUtf8(nameBytes) : latin1Text(nameBytes);
    if (name.includes("\0")) this.fail(`entry name ${quote(name)} contains a NUL character`);
    return name;
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
    const length = entry.descriptorLength;
    let from = pos;
    for (;;) {
      const at = indexOfBytes(buf, DESCRIPTOR_SIGNATURE, from);
      if (at === -1 || at + length > buf.length) {
        // Hold back what could be the start of a descriptor until more bytes arrive.
        const keepFrom = at === -1 ? Math.max(from, buf.length - 3) : at;
        if (keepFrom > from) this.consumeData(buf.subarray(from, keepFrom));
        return keepFrom > pos ? keepFrom : NEED_MORE;
      }
      const sizeIfEnd = entry.dataLength + (at - from);
      const crcIfEnd = entry.method === METHOD_STORED ? this.crc32(buf.subarray(from, at), entry.runningCrc) : 0;
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
    if (entry.method === METHOD_STORED) entry.runningCrc = crcAfter ?? this.crc32(bytes, entry.runningCrc);
    entry.dataLength += bytes.length;
    this.handler.onEntryData(bytes);
  }

  private closeEntry(crc: number, compressedSize: number, uncompressedSize: number): void {
    const entry = this.current as OpenEntry;
    if (entry.method === METHOD_STORED) {
      if (compressedSize !== entry.dataLength || uncompressedSize !== entry.dataLength) {
        this.fail(`entry ${quote(entry.name)} does not have the size its header records`);
      }
      if (entry.runningCrc !== crc) this.fail(`entry ${quote(entry.name)} fails its CRC-32 check (corrupt)`);
    }
    const closed: ZipEntry = {
      name: entry.name,
      nameBytes: entry.nameBytes,
      offset: entry.offset,
      dataOffset: entry.dataOffset,
      flags: entry.flags,
      method: entry.method,
      crc,
      compressedSize,
      uncompressedSize,
    };
    this.handler.onEntryEnd(closed);
    this.entryList.push(closed);
    this.current = undefined;
    this.state = "record";
  }
}

/**
 * Reads the data of an entry that a ZipStreamReader skipped, and its data descriptor, exactly as that reader would
 * have read them in the stream: the entry ends at the first descriptor whose sizes and CRC-32 match the bytes before
 * it, which must be where the skipped length ended, and its CRC-32 must be the one recorded for it.
 */
export class SkippedEntryCheck {
  private readonly reader: ZipStreamReader;
  private closed: ZipEntry | undefined;
  private fed = 0;

  constructor(
    readonly skipped: SkippedEntry,
    crc32: Crc32,
  ) {
    this.reader = ZipStreamReader.resuming(
      skipped,
      {
        onEntryStart: () => {},
        onEntryData: () => {},
        onEntryEnd: (entry) => {
          this.closed = entry;
        },
      },
      crc32,
    );
  }

  /** Bytes to feed in all: the data, then the descriptor. */
  get totalBytes(): number {
    return this.skipped.length + this.skipped.descriptorLength;
  }

  /** The entry's data bytes in order, followed by its descriptor's bytes. */
  update(bytes: Uint8Array): void {
    this.fed += bytes.length;
    if (this.fed > this.totalBytes) throw new Error("SkippedEntryCheck fed more than the entry's data and descriptor");
    this.reader.update(bytes);
  }

  /** Throws FormatError unless the entry ended exactly after its data, with the recorded CRC-32. */
  finish(): void {
    const { entry, length } = this.skipped;
    if (this.closed === undefined) {
      this.reader.fail(
        this.skipped.descriptorLength > 0
          ? `no data descriptor matching the bytes of entry ${quote(entry.name)} was found (corrupt or truncated)`
          : `the file ends inside entry ${quote(entry.name)} (truncated)`,
      );
    }
    if (this.closed.compressedSize !== length) {
      this.reader.fail(`entry ${quote(entry.name)} does not have the size its central directory records`);
    }
    if (this.closed.crc !== this.skipped.crc)
      this.reader.fail(`entry ${quote(entry.name)} fails its CRC-32 check (corrupt)`);
  }
}
