import { concatBytes, indexOfBytes, lastIndexOfBytes, readUint16LE, readUint32LE } from "./bytes.js";
import { bytesText } from "./describe.js";
import { isZipStart } from "./detect-type.js";
import { FormatError } from "./format-error.js";
import { PickleScanner } from "./pickle-scanner.js";
import { isTarHeader, TAR_BLOCK_BYTES } from "./tar-header.js";

// A safetensors file is handed to machines; it must not also be a file some other loader would open as something
// else. The checks follow those loaders:
// - torch.load reads any file whose first four bytes are a ZIP local header as a checkpoint (_is_zipfile) and
//   unpickles its data.pkl; a legal header length (0x04034b50 = 67,324,752) gives exactly those bytes;
// - otherwise torch.load tries the file as a tar archive (tarfile.open checks only the first block's checksum),
//   then unpickles it from byte 0 (the legacy format's first pickle);
// - zipfile and other ZIP readers look for an end-of-central-directory record in the last 64 KiB and follow it to
//   a central directory, wherever in the file (say, inside tensor bytes) it lies.
// Random tensor data cannot pass these by chance (each needs specific bytes at specific places), so a file that
// does was built to.

const EOCD_SIGNATURE = new Uint8Array([0x50, 0x4b, 0x05, 0x06]);
const CENTRAL_SIGNATURE = new Uint8Array([0x50, 0x4b, 0x01, 0x02]);
const EOCD_BYTES = 22;
/** Where readers look for the end record: its 22 bytes plus a comment of up to 65,535. */
const TAIL_BYTES = EOCD_BYTES + 0xffff;
const MAX_CENTRAL_POSITIONS = 10_000;
/** A pickle walk from byte 0 that has not failed after this many bytes is treated as a pickle. */
const MAX_PICKLE_WALK_BYTES = 1024 * 1024;

export class PolyglotGuard {
  private size = 0;
  private readonly first = new Uint8Array(TAR_BLOCK_BYTES);
  private firstLength = 0;
  private pickle: PickleScanner | undefined = new PickleScanner({ maxBytes: MAX_PICKLE_WALK_BYTES });
  /** The last up to TAIL_BYTES bytes of the file, in a buffer reused for every chunk. */
  private readonly tail = new Uint8Array(TAIL_BYTES);
  private tailLength = 0;
  /** Offsets of central directory signatures seen anywhere in the file (few in real data). */
  private readonly centralAt = new Set<number>();
  private centralOverflow = false;
  /** The last up to 3 bytes of the previous chunk, so signatures across chunk boundaries are found. */
  private carry: Uint8Array = new Uint8Array(0);

  update(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    if (this.firstLength < TAR_BLOCK_BYTES) {
      const take = Math.min(TAR_BLOCK_BYTES - this.firstLength, bytes.length);
      this.first.set(bytes.subarray(0, take), this.firstLength);
      this.firstLength += take;
      if (this.firstLength >= 4 && isZipStart(this.first)) {
        throw polyglot("its first bytes are a ZIP local file header, so torch.load would open it as a checkpoint");
      }
    }
    this.walkPickle(bytes);
    this.findCentralSignatures(bytes);
    this.keepTail(bytes);
    this.size += bytes.length;
  }

  finish(): void {
    this.checkTarHeader();
    if (this.pickle) {
      try {
        this.pickle.finish();
        this.pickleFound();
      } catch (error) {
        if (!(error instanceof FormatError)) throw error;
        if (this.pickle.globals.length > 0) this.pickleFound();
      }
    }
    this.checkEndRecord();
  }

  /**
   * For a file known to be `totalBytes` long whose start is what was fed so far: throws now when the checks of
   * its first bytes already fail (a tar header in its first 512 bytes; a pickle walk that reached its limit while
   * the file goes on). The end record needs the file's last bytes and waits for finish().
   */
  expectEnd(totalBytes: number): void {
    this.checkTarHeader();
    if (this.pickle && this.pickle.bytesConsumed >= MAX_PICKLE_WALK_BYTES && totalBytes > this.size) {
      this.pickleFound();
    }
  }

  private checkTarHeader(): void {
    if (this.firstLength === TAR_BLOCK_BYTES && isTarHeader(this.first)) {
      throw polyglot("its first 512 bytes are a valid tar header, so torch.load would open it as a tar archive");
    }
  }

  private walkPickle(bytes: Uint8Array): void {
    const scanner = this.pickle;
    if (!scanner) return;
    try {
      scanner.update(bytes);
    } catch (error) {
      if (!(error instanceof FormatError)) throw error;
      // Imports happen as the unpickler meets them, before a later error.
      if (scanner.globals.length > 0 || scanner.bytesConsumed >= MAX_PICKLE_WALK_BYTES) this.pickleFound();
      this.pickle = undefined;
      return;
    }
    if (scanner.done || scanner.globals.length > 0) this.pickleFound();
  }

  private pickleFound(): never {
    throw polyglot("its bytes from the start read as a pickle, which torch.load's legacy path would unpickle");
  }

  private findCentralSignatures(bytes: Uint8Array): void {
    if (this.centralOverflow) return;
    // A signature across the chunk boundary: the previous chunk's last 3 bytes and this one's first 3.
    if (this.carry.length > 0) {
      const edge = concatBytes([this.carry, bytes.subarray(0, 3)]);
      const at = indexOfBytes(edge, CENTRAL_SIGNATURE);
      if (at !== -1 && at < this.carry.length) this.addCentral(this.size - this.carry.length + at);
    }
    for (
      let at = indexOfBytes(bytes, CENTRAL_SIGNATURE);
      at !== -1;
      at = indexOfBytes(bytes, CENTRAL_SIGNATURE, at + 1)
    ) {
      if (!this.addCentral(this.size + at)) break;
    }
    const keep = Math.min(3, bytes.length);
    this.carry = concatBytes([this.carry, bytes.subarray(bytes.length - keep)]).subarray(-3);
  }

  /** Records a signature's offset; false once there are too many to track. */
  private addCentral(offset: number): boolean {
    this.centralAt.add(offset);
    if (this.centralAt.size > MAX_CENTRAL_POSITIONS) this.centralOverflow = true;
    return !this.centralOverflow;
  }

  private keepTail(bytes: Uint8Array): void {
    if (bytes.length >= TAIL_BYTES) {
      this.tail.set(bytes.subarray(bytes.length - TAIL_BYTES));
      this.tailLength = TAIL_BYTES;
      return;
    }
    const kept = Math.min(this.tailLength, TAIL_BYTES - bytes.length);
    this.tail.copyWithin(0, this.tailLength - kept, this.tailLength);
    this.tail.set(bytes, kept);
    this.tailLength = kept + bytes.length;
  }

  // Python's zipfile._EndRecData takes the last signature in the tail; a reader then needs a central directory
  // header where the record says (miniz: at its offset; zipfile: at the record's position minus the directory size).
  private checkEndRecord(): void {
    const tail = this.tail.subarray(0, this.tailLength);
    const tailStart = this.size - tail.length;
    let at = lastIndexOfBytes(tail, EOCD_SIGNATURE);
    while (at !== -1) {
      if (at + EOCD_BYTES <= tail.length) {
        const entries = readUint16LE(tail, at + 10);
        const directoryBytes = readUint32LE(tail, at + 12);
        const directoryOffset = readUint32LE(tail, at + 16);
        const position = tailStart + at;
        const candidates = [directoryOffset, position - directoryBytes];
        const found = this.centralOverflow || candidates.some((offset) => this.centralAt.has(offset));
        if (entries > 0 && found) {
          throw polyglot(
            `${bytesText(this.size - position)} before its end hold a ZIP end record pointing at a central directory, so ZIP readers would open it as an archive`,
          );
        }
      }
      if (at === 0) break;
      at = lastIndexOfBytes(tail, EOCD_SIGNATURE, at - 1);
    }
  }
}

function polyglot(detail: string): FormatError {
  return new FormatError(
    `The file is a safetensors file but not only one: ${detail}. Such a file is refused; save the tensors again with safetensors.`,
  );
}
