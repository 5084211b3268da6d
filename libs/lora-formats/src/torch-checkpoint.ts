import { concatBytes, latin1Text } from "./bytes.js";
import type { ContentReader } from "./content-reader.js";
import type { Crc32 } from "./crc32.js";
import { bytesText, quote } from "./describe.js";
import { FormatError } from "./format-error.js";
import { isDecimalKey, MAX_TORCH_PICKLE_BYTES, readTorchPickle, type TorchPickle } from "./torch-pickle.js";
import { layoutStateDict, type StateDictLayout } from "./torch-state-dict.js";
import type { ZipEntry } from "./zip/entry.js";
import { METHOD_STORED } from "./zip/fields.js";
import { type SkippedEntry, ZipStreamReader } from "./zip/stream-reader.js";

// torch.load opens a checkpoint with PyTorchStreamReader (caffe2/serialize/inline_container.cc, miniz): the folder
// of the first entry is the archive's prefix and records are looked up as <prefix>/<name>. torch.save (1.6 and
// later; torch/serialization.py _save) writes, all STORED and in this order: data.pkl, then on newer versions
// .format_version, .storage_alignment and byteorder, then data/<key> for each storage, version, and on newer
// versions .data/serialization_id. Anything else in the archive is something no loader of a state dict reads —
// so something we did not check — and is refused.

/** The small records besides data.pkl and the storages, and what each may hold. */
const METADATA_RECORDS: Readonly<Record<string, RegExp>> = {
  version: /^[0-9]{1,4}\n?$/,
  ".data/version": /^[0-9]{1,4}\n?$/,
  byteorder: /^little$/,
  ".format_version": /^[0-9]{1,4}\n?$/,
  ".storage_alignment": /^[0-9]{1,6}\n?$/,
  ".data/serialization_id": /^[0-9]{1,64}\n?$/,
};
const MAX_METADATA_RECORD_BYTES = 64;

/** A verified checkpoint, as the converter needs it. */
export interface TorchCheckpoint {
  prefix: string;
  pickle: TorchPickle;
  layout: StateDictLayout;
  /** The archive entry of each storage, by key. */
  storageEntries: Map<string, ZipEntry>;
  /**
   * Storage records whose bytes the reader skipped (see skipStorageData), by key: their CRC-32 and data descriptor
   * are still to be checked, with SkippedEntryCheck.
   */
  skippedStorages: Map<string, SkippedEntry>;
}

type Role = { kind: "pickle" } | { kind: "storage"; key: string } | { kind: "record"; name: string };

/**
 * Reads a .pt file as torch.save writes it since torch 1.6: a ZIP archive holding one state-dict pickle and its
 * storages, nothing else. The pickle is buffered (≤ 32 MiB) and evaluated under the weights-only grammar when its
 * entry ends; every storage record must be one its persistent ids reference, with exactly the bytes that storage
 * needs.
 */
export class TorchCheckpointReader implements ContentReader {
  readonly unsafeGlobals: readonly string[] = [];
  readonly unsafeSources: readonly string[] = [];
  private readonly zip: ZipStreamReader;
  private prefix = "";
  /** `prefix` and "/": what every other entry's name starts with. */
  private folder = "";
  private role: Role | undefined;
  private parts: Uint8Array[] = [];
  private partsBytes = 0;
  private pickle: TorchPickle | undefined;
  private layoutValue: StateDictLayout | undefined;
  private readonly seenNames = new Set<string>();
  private readonly storageEntries = new Map<string, ZipEntry>();
  private readonly records = new Set<string>();
  private readonly skippedStorages = new Map<string, SkippedEntry>();

  /** `crc32`: zlib.crc32 on Node (native), portableCrc32 elsewhere. */
  constructor(crc32: Crc32) {
    this.zip = new ZipStreamReader(
      {
        onEntryStart: (entry) => this.startEntry(entry),
        onEntryData: (bytes) => this.entryData(bytes),
        onEntryEnd: (entry) => this.endEntry(entry),
      },
      crc32,
    );
  }

  get tensorCount(): number {
    return this.layoutValue?.tensors.length ?? 0;
  }

  /** The checkpoint, once the whole archive was read and found valid. */
  get checkpoint(): TorchCheckpoint | undefined {
    if (!this.pickle || !this.layoutValue || !this.zip.done) return undefined;
    return {
      prefix: this.prefix,
      pickle: this.pickle,
      layout: this.layoutValue,
      storageEntries: this.storageEntries,
      skippedStorages: this.skippedStorages,
    };
  }

  /**
   * Right after a storage record's local header: takes its `length` data bytes as read without seeing them, with
   * `crc` (the CRC-32 its central directory entry records); the next bytes fed are its data descriptor. For a reader
   * over a random-access source, which checks those bytes later (`checkpoint.skippedStorages`). Returns false, and
   * skips nothing, anywhere else.
   */
  skipStorageData(length: number, crc: number): boolean {
    const entry = this.zip.currentEntry;
    if (this.role?.kind !== "storage" || !entry || entry.method !== METHOD_STORED || length <= 0) return false;
    if (this.zip.offset !== entry.dataOffset) return false;
    const key = this.role.key;
    this.skippedStorages.set(key, this.zip.skipData(length, crc));
    return true;
  }

  update(chunk: Uint8Array): void {
    this.zip.update(chunk);
  }

  finish(): void {
    this.zip.finish();
    if (!this.pickle) throw this.notCheckpoint("the archive has no data.pkl");
    for (const key of this.pickle.storages.keys()) {
      if (!this.storageEntries.has(key)) {
        throw this.invalid(
          `its pickle references storage ${quote(key)}, but ${quote(`${this.prefix}/data/${key}`)} is missing`,
        );
      }
    }
    if (!this.records.has("version") && !this.records.has(".data/version")) {
      throw this.invalid(`it has no ${quote(`${this.prefix}/version`)} record`);
    }
  }

  private invalid(detail: string): FormatError {
    return new FormatError(`The PyTorch checkpoint is invalid: ${detail}.`);
  }

  private notCheckpoint(detail: string): FormatError {
    return new FormatError(
      `This is not a PyTorch checkpoint as torch.save writes it: ${detail}. Re-save it with torch.save, or convert it to .safetensors.`,
    );
  }

  private startEntry(entry: ZipEntry): void {
    const name = entry.name;
    if (entry.method !== METHOD_STORED) {
      throw this.invalid(
        `entry ${quote(name)} is compressed (method ${entry.method}); torch.save stores every record uncompressed`,
      );
    }
    const folded = name.toLowerCase();
    // miniz matches record names without regard to case: two names that fold together are one record twice.
    if (this.seenNames.has(folded)) throw this.invalid(`it holds the entry ${quote(name)} twice`);
    this.seenNames.add(folded);
    if (this.zip.entries.length === 0) {
      const slash = name.indexOf("/");
      this.prefix = name.slice(0, Math.max(slash, 0));
      this.folder = `${this.prefix}/`;
      if (slash <= 0 || name.slice(slash + 1) !== "data.pkl" || this.prefix === "." || this.prefix === "..") {
        throw this.notCheckpoint(
          name.toLowerCase() === "constants.pkl" || name.includes("/code/") || name.endsWith("/constants.pkl")
            ? `it is a TorchScript archive, which carries code (its first entry is ${quote(name)})`
            : `its first entry is ${quote(name)}, not <folder>/data.pkl`,
        );
      }
      this.role = { kind: "pickle" };
    } else {
      this.role = this.roleOf(name);
    }
    if (this.role.kind !== "storage") {
      this.parts = [];
      this.partsBytes = 0;
    }
  }

  private roleOf(name: string): Role {
    if (!name.startsWith(this.folder)) {
      throw this.invalid(`entry ${quote(name)} lies outside the archive's folder ${quote(this.prefix)}`);
    }
    const rest = name.slice(this.prefix.length + 1);
    const key = rest.startsWith("data/") && isDecimalKey(rest.slice(5)) ? rest.slice(5) : undefined;
    if (key !== undefined) {
      if (!this.pickle?.storages.has(key)) {
        throw this.invalid(`entry ${quote(name)} is a storage no tensor of its pickle references`);
      }
      return { kind: "storage", key };
    }
    if (Object.prototype.hasOwnProperty.call(METADATA_RECORDS, rest)) return { kind: "record", name: rest };
    if (rest === "constants.pkl" || rest.startsWith("code/")) {
      throw this.notCheckpoint("it is a TorchScript archive, which carries code");
    }
    throw this.invalid(`it holds the entry ${quote(name)}, which torch.save does not write (a hidden member)`);
  }

  private entryData(bytes: Uint8Array): void {
    const role = this.role;
    if (!role) return;
    if (role.kind === "storage") return;
    this.partsBytes += bytes.length;
    const limit = role.kind === "pickle" ? MAX_TORCH_PICKLE_BYTES : MAX_METADATA_RECORD_BYTES;
    if (this.partsBytes > limit) {
      throw role.kind === "pickle"
        ? this.invalid(`its data.pkl is larger than ${bytesText(limit)}; a state dict's pickle is far smaller`)
        : this.invalid(`its record ${quote(role.name)} is larger than ${bytesText(limit)}`);
    }
    this.parts.push(bytes.slice());
  }

  private endEntry(entry: ZipEntry): void {
    const role = this.role;
    this.role = undefined;
    if (!role) return;
    if (role.kind === "storage") {
      const storage = this.pickle?.storages.get(role.key);
      if (storage && entry.uncompressedSize !== storage.byteCount) {
        throw this.invalid(
          `storage ${quote(entry.name)} holds ${bytesText(entry.uncompressedSize)}, but its persistent id ` +
            `(${storage.numel} × ${storage.storageType}) needs ${bytesText(storage.byteLength)}`,
        );
      }
      this.storageEntries.set(role.key, entry);
      return;
    }
    const bytes = concatBytes(this.parts);
    this.parts = [];
    if (role.kind === "pickle") {
      this.pickle = readTorchPickle(bytes, `The pickle ${quote(entry.name)}`);
      this.layoutValue = layoutStateDict(this.pickle.root);
      return;
    }
    if (this.records.has(role.name)) throw this.invalid(`it holds the record ${quote(role.name)} twice`);
    this.records.add(role.name);
    const text = latin1Text(bytes);
    if (!(METADATA_RECORDS[role.name] as RegExp).test(text)) {
      throw this.invalid(
        role.name === "byteorder"
          ? `its byte order is ${quote(text)}; only little-endian checkpoints can be converted`
          : `its record ${quote(role.name)} holds ${quote(text)}`,
      );
    }
  }
}
