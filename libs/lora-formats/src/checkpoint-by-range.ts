import { crc32 } from "node:zlib";
import type { RandomAccessSource } from "./random-access-source.js";
import { type TorchCheckpoint, TorchCheckpointReader } from "./torch-checkpoint.js";
import {
  indexCentralDirectory,
  type IndexedEntry,
  locateCentralDirectory,
  ZIP_TAIL_BYTES,
} from "./zip/central-directory-index.js";
import { LOCAL_HEADER_SIZE, u16 } from "./zip/fields.js";

// Reads a checkpoint from a random-access source with every check of TorchCheckpointReader, without reading the
// storage records' bytes: the central directory says where each local header is; the reader is fed every byte of
// the file in order except each storage's data, which it skips with the CRC-32 the central directory records for
// it (TorchCheckpointReader.skipStorageData). The skipped bytes are checked when they are read later (the converter
// feeds them to SkippedEntryCheck as it reads them). Reads are planned from the central directory and merged when
// close together, so a file of many small records is read in large pieces and a LoRA's headers in small ones.

/**
 * Two planned reads closer than this are merged into one, reading the bytes between: a read of that many bytes costs
 * about what one more request costs (a ranged GET of blob storage, or a file read).
 */
const MERGE_GAP_BYTES = 32 * 1024;
/** Bytes planned after a local header's fixed part: its name and extra fields (torch pads to 64 bytes). */
const HEADER_ROOM_BYTES = 512;
/** Entries smaller than this are planned whole (small records, and data.pkl is always whole). */
const SMALL_ENTRY_BYTES = 64 * 1024;
/** A merged read is at most this large, unless one planned range alone is larger. */
const MAX_READ_BYTES = 8 * 1024 * 1024;
/** Planned reads run this far ahead of the bytes being fed. */
const READ_AHEAD_BYTES = 16 * 1024 * 1024;
const READS_IN_FLIGHT = 8;

/** Pass 1 of a conversion: the checkpoint, with its storages' bytes skipped (see `skippedStorages`). */
export async function readCheckpointByRange(source: RandomAccessSource, chunkBytes: number): Promise<TorchCheckpoint> {
  const reader = new TorchCheckpointReader(crc32);
  const entries = await indexEntries(source);
  const reads = new PlannedReads(source, planReads(entries ?? [], source.size));
  let at = 0;
  const feedTo = async (end: number): Promise<void> => {
    while (at < end) {
      const length = Math.min(end - at, chunkBytes);
      reader.update(await reads.bytes(at, length));
      at += length;
    }
  };
  for (const entry of entries ?? []) {
    // Out of order or beyond the file: feed the rest as it is, and let the reader say what is wrong.
    if (entry.localOffset < at || entry.localOffset + LOCAL_HEADER_SIZE > source.size) break;
    const head = await reads.bytes(entry.localOffset, LOCAL_HEADER_SIZE);
    const dataStart = entry.localOffset + LOCAL_HEADER_SIZE + u16(head, 26) + u16(head, 28);
    if (dataStart > source.size) break;
    await feedTo(dataStart);
    const dataEnd = dataStart + entry.compressedSize;
    if (dataEnd <= source.size && reader.skipStorageData(entry.compressedSize, entry.crc)) at = dataEnd;
  }
  await feedTo(source.size);
  reader.finish();
  return reader.checkpoint as TorchCheckpoint;
}

async function indexEntries(source: RandomAccessSource): Promise<IndexedEntry[] | undefined> {
  if (source.size < ZIP_TAIL_BYTES) return undefined;
  const tail = await readExactly(source, source.size - ZIP_TAIL_BYTES, ZIP_TAIL_BYTES);
  const location = locateCentralDirectory(tail, source.size);
  if (!location) return undefined;
  return indexCentralDirectory(await readExactly(source, location.start, location.end - location.start));
}

interface Range {
  start: number;
  end: number;
}

/** The ranges pass 1 feeds: local headers (with the previous entry's descriptor), small entries whole, the end. */
export function planReads(entries: readonly IndexedEntry[], size: number): Range[] {
  const wanted: Range[] = [];
  entries.forEach((entry, i) => {
    const next = entries[i + 1]?.localOffset ?? size;
    const whole = i === 0 || entry.compressedSize < SMALL_ENTRY_BYTES;
    const end = whole ? next : entry.localOffset + LOCAL_HEADER_SIZE + entry.nameLength + HEADER_ROOM_BYTES;
    // 24 bytes before: the previous entry's data descriptor (ZIP64 form at most).
    wanted.push({ start: Math.max(0, entry.localOffset - 24), end: Math.min(end, size) });
  });
  const last = entries.at(-1);
  const tailStart = last ? last.localOffset + LOCAL_HEADER_SIZE + last.compressedSize : 0;
  wanted.push({ start: Math.min(tailStart, size), end: size });
  wanted.sort((a, b) => a.start - b.start);
  const merged: Range[] = [];
  for (const range of wanted) {
    const previous = merged.at(-1);
    if (
      previous &&
      range.start - previous.end <= MERGE_GAP_BYTES &&
      Math.max(previous.end, range.end) - previous.start <= MAX_READ_BYTES
    ) {
      previous.end = Math.max(previous.end, range.end);
    } else if (previous && range.start < previous.end) {
      previous.end = Math.max(previous.end, range.end);
    } else {
      merged.push({ ...range });
    }
  }
  return merged;
}

/**
 * Serves byte ranges from planned reads issued in order, up to READ_AHEAD_BYTES ahead; a range no planned read
 * covers (the plan is a guess from records not yet checked) is read on its own. Requests must move forward.
 */
class PlannedReads {
  private readonly pending: (Promise<Uint8Array> | undefined)[] = [];
  private cursor = 0;
  private started = 0;
  private aheadBytes = 0;

  constructor(
    private readonly source: RandomAccessSource,
    private readonly ranges: readonly Range[],
  ) {}

  async bytes(offset: number, length: number): Promise<Uint8Array> {
    while (this.cursor < this.ranges.length && (this.ranges[this.cursor] as Range).end <= offset) {
      this.release(this.cursor++);
    }
    const range = this.ranges[this.cursor];
    this.fill();
    if (!range || range.start > offset || range.end < offset + length) return readExactly(this.source, offset, length);
    const bytes = await (this.pending[this.cursor] as Promise<Uint8Array>);
    return bytes.subarray(offset - range.start, offset - range.start + length);
  }

  private fill(): void {
    if (this.started < this.cursor) this.started = this.cursor;
    while (
      this.started < this.ranges.length &&
      (this.started === this.cursor ||
        (this.aheadBytes < READ_AHEAD_BYTES && this.started - this.cursor < READS_IN_FLIGHT))
    ) {
      const range = this.ranges[this.started] as Range;
      const read = readExactly(this.source, range.start, range.end - range.start);
      read.catch(() => {}); // awaited when its bytes are asked for; this only keeps an early failure observed
      this.pending[this.started] = read;
      this.aheadBytes += range.end - range.start;
      this.started++;
    }
  }

  private release(index: number): void {
    if (this.pending[index]) {
      const range = this.ranges[index] as Range;
      this.aheadBytes -= range.end - range.start;
      this.pending[index] = undefined;
    }
  }
}

/** Exactly `length` bytes at `offset`, or an error naming the short read. */
export async function readExactly(source: RandomAccessSource, offset: number, length: number): Promise<Uint8Array> {
  const bytes = await source.read(offset, length);
  if (bytes.length !== length) throw new Error(`the source returned ${bytes.length} of ${length} bytes at ${offset}`);
  return bytes;
}
