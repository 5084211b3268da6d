import { crc32, inflateRawSync } from "node:zlib";
import { type ContentReader, mergeUnique } from "./content-reader.js";
import { bytesText, quote } from "./describe.js";
import { FormatError } from "./format-error.js";
import { DEFAULT_MAX_PICKLE_BYTES, PickleScanner } from "./pickle-scanner.js";
import type { ZipEntry } from "./zip/entry.js";
import { METHOD_DEFLATED, METHOD_STORED } from "./zip/fields.js";
import { ZipStreamReader } from "./zip/stream-reader.js";

// A DEFLATED pickle is buffered and inflated in one go; a state-dict pickle is kilobytes, these are generous.
const MAX_COMPRESSED_PICKLE_BYTES = DEFAULT_MAX_PICKLE_BYTES;
const MAX_INFLATED_PICKLE_BYTES = DEFAULT_MAX_PICKLE_BYTES;
/** Bounds the scan time of archives holding many pickles. */
const MAX_TOTAL_PICKLE_BYTES = 2 * DEFAULT_MAX_PICKLE_BYTES;

interface PickleEntry {
  name: string;
  scanner: PickleScanner | undefined;
  compressed: Uint8Array[] | undefined;
  compressedBytes: number;
}

/**
 * A torch checkpoint (the ZIP archive torch.save writes): the archive is read by {@link ZipStreamReader}, every
 * pickle entry is scanned as it streams, and the layout must be a tensor state dict's.
 */
export class TorchCheckpointReader implements ContentReader {
  private readonly zip = new ZipStreamReader({
    onEntryStart: (entry) => this.startEntry(entry),
    onEntryData: (bytes) => this.entryData(bytes),
    onEntryEnd: (entry) => this.endEntry(entry),
  });
  private pickle: PickleEntry | undefined;
  private readonly unsafe: string[] = [];
  private readonly sources: string[] = [];
  private tensors = 0;
  private pickleBytes = 0;

  get unsafeGlobals(): readonly string[] {
    const pending = this.pickle?.scanner?.unsafeGlobals ?? [];
    if (pending.length === 0) return this.unsafe;
    const merged = [...this.unsafe];
    mergeUnique(merged, pending);
    return merged;
  }

  get unsafeSources(): readonly string[] {
    const current = this.pickle;
    if (!current?.scanner?.unsafeGlobals.length || this.sources.includes(current.name)) return this.sources;
    return [...this.sources, current.name];
  }

  get tensorCount(): number {
    return this.tensors;
  }

  /** Names of the entries read so far, in archive order. */
  get entryNames(): string[] {
    return this.zip.entries.map((entry) => entry.name);
  }

  update(chunk: Uint8Array): void {
    this.zip.update(chunk);
  }

  finish(): void {
    this.zip.finish();
    this.checkTorchLayout();
  }

  private startEntry(entry: ZipEntry): void {
    const isPickle = entry.name.toLowerCase().endsWith(".pkl");
    if (!isPickle) {
      this.pickle = undefined;
      return;
    }
    this.pickle = {
      name: entry.name,
      scanner:
        entry.method === METHOD_STORED ? new PickleScanner({ label: `The pickle ${quote(entry.name)}` }) : undefined,
      compressed: entry.method === METHOD_DEFLATED ? [] : undefined,
      compressedBytes: 0,
    };
  }

  private entryData(bytes: Uint8Array): void {
    const pickle = this.pickle;
    if (!pickle) return;
    if (pickle.scanner) this.feedScanner(pickle.scanner, bytes, pickle.name);
    if (pickle.compressed) {
      pickle.compressedBytes += bytes.length;
      if (pickle.compressedBytes > MAX_COMPRESSED_PICKLE_BYTES) {
        this.zip.fail(
          `the compressed pickle ${quote(pickle.name)} is larger than ${bytesText(MAX_COMPRESSED_PICKLE_BYTES)}`,
        );
      }
      pickle.compressed.push(bytes.slice());
    }
  }

  private endEntry(entry: ZipEntry): void {
    const pickle = this.pickle;
    if (!pickle) return;
    if (pickle.compressed) this.inflatePickle(pickle, entry);
    if (pickle.scanner) {
      pickle.scanner.finish();
      const found = pickle.scanner.unsafeGlobals;
      mergeUnique(this.unsafe, found);
      if (found.length > 0) mergeUnique(this.sources, [pickle.name]);
      this.tensors += pickle.scanner.tensorCount;
    }
    this.pickle = undefined;
  }

  private feedScanner(scanner: PickleScanner, bytes: Uint8Array, name: string): void {
    this.pickleBytes += bytes.length;
    if (this.pickleBytes > MAX_TOTAL_PICKLE_BYTES) {
      this.zip.fail(`its pickles together exceed ${bytesText(MAX_TOTAL_PICKLE_BYTES)}`);
    }
    const used = scanner.done ? 0 : scanner.update(bytes);
    if (used < bytes.length) {
      throw new FormatError(`The pickle ${quote(name)} continues after its STOP opcode; the archive is invalid.`);
    }
  }

  private inflatePickle(pickle: PickleEntry, entry: ZipEntry): void {
    let inflated: Buffer;
    try {
      inflated = inflateRawSync(Buffer.concat(pickle.compressed ?? []), { maxOutputLength: MAX_INFLATED_PICKLE_BYTES });
    } catch {
      return this.zip.fail(
        `the compressed pickle ${quote(pickle.name)} cannot be inflated (corrupt or larger than ${bytesText(MAX_INFLATED_PICKLE_BYTES)})`,
      );
    }
    if (inflated.length !== entry.uncompressedSize || crc32(inflated) !== entry.crc) {
      this.zip.fail(`the compressed pickle ${quote(pickle.name)} does not match its recorded size and CRC-32`);
    }
    pickle.compressed = undefined;
    pickle.scanner = new PickleScanner({ label: `The pickle ${quote(pickle.name)}` });
    this.feedScanner(pickle.scanner, inflated, pickle.name);
  }

  // torch.load finds records under the folder of the first entry, matching names case-insensitively (miniz).
  private checkTorchLayout(): void {
    const entries = this.zip.entries;
    const first = entries[0]?.name ?? "";
    const slash = first.indexOf("/");
    if (slash <= 0) {
      throw new FormatError(
        `This is not a PyTorch checkpoint: its first ZIP entry ${quote(first)} is not in a folder.`,
      );
    }
    const prefix = first.slice(0, slash + 1).toLowerCase();
    const names = entries.map((entry) => entry.name.toLowerCase());
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
