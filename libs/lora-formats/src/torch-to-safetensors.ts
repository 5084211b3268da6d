import { createHash, type Hash } from "node:crypto";
import { crc32 } from "node:zlib";
import { readCheckpointByRange, readExactly } from "./checkpoint-by-range.js";
import { quote } from "./describe.js";
import { FormatError } from "./format-error.js";
import type { RandomAccessSource } from "./random-access-source.js";
import type { SafetensorsDtype } from "./safetensors-dtypes.js";
import type { SafetensorsHeaderLayout } from "./safetensors-header.js";
import { SafetensorsStreamReader } from "./safetensors-stream-reader.js";
import type { TorchCheckpoint } from "./torch-checkpoint.js";
import { isContiguous, type StateDictTensor, viewExtent } from "./torch-state-dict.js";
import type { PyTensor } from "./torch-values.js";
import { SkippedEntryCheck } from "./zip/stream-reader.js";

export { bufferSource, fileSource, type RandomAccessSource } from "./random-access-source.js";

// Converts a verified torch checkpoint into the safetensors file machines receive, streaming: same tensor names,
// dtypes, shapes and bytes (shared storages and non-contiguous views materialised in C order), the state dict's
// other values as JSON in __metadata__.
//
// Pass 1 (open) reads the checkpoint by range with every check of TorchCheckpointReader except what lies in the
// storages' bytes: the central directory, each local header and data descriptor, data.pkl and the small records
// (checkpoint-by-range.ts). Pass 2 (chunks) reads each tensor's bytes by offset and emits header and data; a
// storage record's bytes are read whole once, with the tensor that is that record, and checked as the stream pass
// checks them — the CRC-32 the archive records, the data descriptor right after them (SkippedEntryCheck); a storage
// no such tensor covers is read once more for that check alone. A source that changes between the passes therefore
// fails: its storage bytes no longer match their CRC-32, and anything else it could change was read only once.
// The output is re-read as it is emitted by the strict SafetensorsStreamReader: its header must give every tensor the
// name, dtype, shape and offsets planned, and each tensor's sha256 is taken over the bytes at those offsets.

export interface ConvertedTensor {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** [begin, end) in the output's data section. */
  dataOffsets: [number, number];
  /** sha256 (hex) of the tensor's bytes in the output; only with the option `tensorSha256`. */
  sha256?: string;
}

export interface ConversionOptions {
  /** Bytes per read and per emitted chunk; default 4 MiB. */
  chunkBytes?: number;
  /**
   * Also take each tensor's sha256 in the output (ConvertedTensor.sha256), for tools and tests. Off by default: it
   * doubles the hashing, and the output's own sha256 is what a reader checks.
   */
  tensorSha256?: boolean;
}

const DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024;
/** Bytes read ahead during pass 2 (at least one read is always in flight, a chunk or one view's span). */
const READ_AHEAD_BYTES = 16 * 1024 * 1024;

interface ReadJob {
  offset: number;
  length: number;
  /** A non-contiguous view's storage span, to gather from. */
  view: boolean;
  /** Of the bytes read, the first `emit` are output (the rest is a storage record's data descriptor). */
  emit: number;
  /** Index of the tensor (in output order) the bytes are for; the number of tensors for a check's read alone. */
  tensor: number;
  /** The check of a storage record these bytes belong to; `last` when they end it. */
  check?: SkippedEntryCheck;
  last?: boolean;
}

/** The reference's writer sorts by dtype alignment (the order of its Dtype enum, descending), then by name. */
const DTYPE_ORDER: readonly SafetensorsDtype[] = [
  "BOOL",
  "F4",
  "F6_E2M3",
  "F6_E3M2",
  "U8",
  "I8",
  "F8_E5M2",
  "F8_E4M3",
  "F8_E8M0",
  "F8_E4M3FNUZ",
  "F8_E5M2FNUZ",
  "I16",
  "U16",
  "F16",
  "BF16",
  "I32",
  "U32",
  "F32",
  "C64",
  "F64",
  "I64",
  "U64",
];

interface PlannedTensor extends ConvertedTensor {
  tensor: PyTensor;
  bytes: number;
  /** Set when this tensor is its storage record's bytes and reads them for that record's check. */
  checks?: string;
}

/**
 * One conversion: `open` verifies the checkpoint and plans the output (its size is known before a byte is
 * written); `chunks()` produces it once. Errors: FormatError (not a valid checkpoint, or one safetensors cannot
 * hold: INVALID_FILE_FORMAT), UnsafePickleError (UNSAFE_PICKLE), errors of the source, and a FormatError at the
 * end of `chunks()` if a storage's bytes fail their check or the re-read output differs from the plan (nothing
 * produced may then be kept).
 */
export class TorchToSafetensors {
  private consumed = false;
  private outputSha256: string | undefined;

  private constructor(
    private readonly source: RandomAccessSource,
    private readonly checkpoint: TorchCheckpoint,
    private readonly planned: PlannedTensor[],
    private readonly header: Buffer,
    private readonly chunkBytes: number,
    private readonly tensorSha256: boolean,
    /** The `__metadata__` written: the state dict's non-tensor values as JSON. */
    readonly metadata: Readonly<Record<string, string>>,
  ) {}

  static async open(source: RandomAccessSource, options: ConversionOptions = {}): Promise<TorchToSafetensors> {
    const chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    const first = await source.read(0, Math.min(4, source.size));
    if (!(first[0] === 0x50 && first[1] === 0x4b && first[2] === 0x03 && first[3] === 0x04)) {
      throw new FormatError("The file is not a PyTorch checkpoint in torch.save's ZIP format.");
    }
    const checkpoint = await readCheckpointByRange(source, chunkBytes);
    const planned = plan(checkpoint.layout.tensors);
    // A tensor that is a skipped storage record's bytes, whole and in order, reads them through the record's check.
    for (const tensor of planned) {
      const key = tensor.tensor.storage.key;
      if (isWholeStorage(tensor.tensor) && checkpoint.skippedStorages.has(key)) tensor.checks = key;
    }
    const header = encodeHeader(planned, checkpoint.layout.metadata);
    return new TorchToSafetensors(
      source,
      checkpoint,
      planned,
      header,
      chunkBytes,
      options.tensorSha256 ?? false,
      checkpoint.layout.metadata,
    );
  }

  /** Size of the safetensors file `chunks()` produces. */
  get sizeBytes(): number {
    return this.header.length + (this.planned.at(-1)?.dataOffsets[1] ?? 0);
  }

  /** The tensors in output order; with `tensorSha256`, each `sha256` is set once `chunks()` has completed. */
  get tensors(): readonly ConvertedTensor[] {
    return this.planned.map(({ name, dtype, shape, dataOffsets, sha256 }) => ({
      name,
      dtype,
      shape,
      dataOffsets,
      sha256,
    }));
  }

  /** sha256 (hex) of the whole output, once `chunks()` has completed. */
  get sha256(): string | undefined {
    return this.outputSha256;
  }

  /** The safetensors bytes, in chunks of at most `chunkBytes`. Can be iterated once. */
  async *chunks(): AsyncGenerator<Uint8Array> {
    if (this.consumed) throw new Error("TorchToSafetensors.chunks() can be iterated once");
    this.consumed = true;
    const check = new OutputCheck(this.header.length, this.tensorSha256);
    check.update(this.header);
    yield this.header;
    // Reads are issued up to READ_AHEAD_BYTES ahead, so the source works while the bytes before are hashed and
    // passed on (many small tensors would otherwise wait for one read after another).
    const reads = this.reads();
    const pending: { bytes: Promise<Uint8Array>; job: ReadJob }[] = [];
    let ahead = 0;
    const fill = () => {
      while (pending.length === 0 || ahead < READ_AHEAD_BYTES) {
        const next = reads.next();
        if (next.done) return;
        const read = readExactly(this.source, next.value.offset, next.value.length);
        read.catch(() => {}); // awaited in turn below; this only keeps an early failure from going unobserved
        pending.push({ bytes: read, job: next.value });
        ahead += next.value.length;
      }
    };
    const nextRead = async (): Promise<{ bytes: Uint8Array; job: ReadJob } | undefined> => {
      if (pending.length === 0) fill();
      const next = pending.shift();
      if (!next) return undefined;
      ahead -= next.job.length;
      const bytes = await next.bytes;
      fill();
      const { check: storageCheck, last } = next.job;
      if (storageCheck) {
        storageCheck.update(bytes);
        if (last) storageCheck.finish();
      }
      return { bytes: next.job.emit < bytes.length ? bytes.subarray(0, next.job.emit) : bytes, job: next.job };
    };
    // Each read belongs to a tensor (by index in output order; the storage checks no tensor made come last).
    let current = 0;
    for (let read = await nextRead(); read; read = await nextRead()) {
      for (; current < read.job.tensor; current++) check.endTensor(this.planned[current] as PlannedTensor);
      const tensor = this.planned[current];
      if (!tensor || read.bytes.length === 0) continue;
      const pieces = read.job.view
        ? gather(read.bytes, tensor.tensor, tensor.tensor.storage.elementBytes, this.chunkBytes)
        : [read.bytes];
      for (const piece of pieces) {
        check.update(piece);
        yield piece;
      }
    }
    for (; current < this.planned.length; current++) check.endTensor(this.planned[current] as PlannedTensor);
    this.outputSha256 = check.finish(this.planned);
  }

  /** Every read of pass 2, in order: the tensors', then those of the storage checks no tensor made. */
  private *reads(): Generator<ReadJob> {
    for (let index = 0; index < this.planned.length; index++) {
      yield* this.jobsOf(this.planned[index] as PlannedTensor, index);
    }
    const checked = new Set(this.planned.map((t) => t.checks));
    // A record that only views, or a slice of it, reach is read once more for its check alone.
    for (const [key, skipped] of this.checkpoint.skippedStorages) {
      if (!checked.has(key)) {
        yield* this.storageJobs(
          skipped.entry.dataOffset,
          new SkippedEntryCheck(skipped, crc32),
          0,
          this.planned.length,
        );
      }
    }
  }

  /**
   * The reads that produce one tensor: a contiguous tensor in chunks (with its record's data descriptor when it
   * reads the record for its check); a view (transpose, strided slice) as the span of storage it reaches (bounded
   * when the checkpoint was verified), gathered in C order.
   */
  private *jobsOf(tensor: PlannedTensor, index: number): Generator<ReadJob> {
    const t = tensor.tensor;
    const entry = this.checkpoint.storageEntries.get(t.storage.key);
    if (!entry) throw new FormatError(`Storage ${quote(t.storage.key)} is missing.`);
    if (tensor.checks !== undefined) {
      const skipped = this.checkpoint.skippedStorages.get(tensor.checks);
      if (skipped) {
        yield* this.storageJobs(entry.dataOffset, new SkippedEntryCheck(skipped, crc32), tensor.bytes, index);
        return;
      }
    }
    const element = t.storage.elementBytes;
    const { first, count } = viewExtent(t);
    if (count === 0n) return;
    const start = entry.dataOffset + Number(first) * element;
    if (!isContiguous(t)) {
      const length = Number(count) * element;
      yield { offset: start, length, view: true, emit: length, tensor: index };
      return;
    }
    const total = Number(t.numel) * element;
    for (let done = 0; done < total; done += this.chunkBytes) {
      const length = Math.min(this.chunkBytes, total - done);
      yield { offset: start + done, length, view: false, emit: length, tensor: index };
    }
  }

  /** A storage record's bytes and data descriptor in chunks, through its check; the first `emitBytes` are output. */
  private *storageJobs(
    dataOffset: number,
    storageCheck: SkippedEntryCheck,
    emitBytes: number,
    tensor: number,
  ): Generator<ReadJob> {
    const total = storageCheck.totalBytes;
    for (let done = 0; done < total; done += this.chunkBytes) {
      let length = Math.min(this.chunkBytes, total - done);
      // Keep the descriptor in the last read rather than a read of its own.
      if (total - done - length > 0 && total - done - length <= storageCheck.skipped.descriptorLength) {
        length = total - done;
      }
      yield {
        offset: dataOffset + done,
        length,
        view: false,
        emit: Math.max(0, Math.min(length, emitBytes - done)),
        check: storageCheck,
        last: done + length === total,
        tensor,
      };
      if (done + length === total) return;
    }
  }
}

function isWholeStorage(tensor: PyTensor): boolean {
  return tensor.storageOffset === 0n && tensor.numel === tensor.storage.numel && isContiguous(tensor);
}

function plan(tensors: readonly StateDictTensor[]): PlannedTensor[] {
  const order = (dtype: string) => DTYPE_ORDER.indexOf(dtype as SafetensorsDtype);
  const sorted = [...tensors].sort(
    (a, b) => order(b.dtype) - order(a.dtype) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
  );
  let offset = 0;
  return sorted.map(({ name, dtype, tensor }) => {
    const bytes = Number(tensor.numel) * tensor.storage.elementBytes;
    const planned: PlannedTensor = {
      name,
      dtype: dtype as SafetensorsDtype,
      shape: tensor.shape.map(Number),
      dataOffsets: [offset, offset + bytes],
      tensor,
      bytes,
    };
    offset += bytes;
    return planned;
  });
}

/** The header as the reference's writer lays it out: `__metadata__` first, tensors in data order, space-padded to 8. */
function encodeHeader(tensors: readonly PlannedTensor[], metadata: Record<string, string>): Buffer {
  const parts: string[] = [];
  if (Object.keys(metadata).length > 0) parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  for (const t of tensors) {
    parts.push(
      `${JSON.stringify(t.name)}:{"dtype":"${t.dtype}","shape":[${t.shape.join(",")}],"data_offsets":[${t.dataOffsets[0]},${t.dataOffsets[1]}]}`,
    );
  }
  let json = Buffer.from(`{${parts.join(",")}}`, "utf8");
  let padded = Math.ceil(json.length / 8) * 8;
  // A header length whose bytes read "PK\x03\x04" would make the file a polyglot: pad once more.
  if (padded === 0x04034b50) padded += 8;
  json = Buffer.concat([json, Buffer.alloc(padded - json.length, 0x20)]);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([length, json]);
}

/** Copies a strided view out of the storage span it reaches, element by element in C order (runs when the last stride is 1). */
function* gather(span: Uint8Array, tensor: PyTensor, element: number, chunkBytes: number): Generator<Uint8Array> {
  const shape = tensor.shape.map(Number);
  const stride = tensor.stride.map(Number);
  const dims = shape.length;
  const run = dims > 0 && stride[dims - 1] === 1 ? (shape[dims - 1] as number) : 1;
  const runBytes = run * element;
  const outer = Number(tensor.numel) / run;
  const index = new Array<number>(dims).fill(0);
  const chunkRuns = Math.max(1, Math.floor(chunkBytes / runBytes));
  let out = new Uint8Array(Math.min(outer, chunkRuns) * runBytes);
  let fill = 0;
  for (let r = 0; r < outer; r++) {
    let at = 0;
    for (let d = 0; d < dims; d++) at += (index[d] as number) * (stride[d] as number);
    if (run > 1) out.set(span.subarray(at * element, at * element + runBytes), fill);
    else for (let b = 0; b < element; b++) out[fill + b] = span[at * element + b] as number;
    fill += runBytes;
    // Advance the index over all dimensions but the run's.
    for (let d = run > 1 ? dims - 2 : dims - 1; d >= 0; d--) {
      index[d] = (index[d] as number) + 1;
      if ((index[d] as number) < (shape[d] as number)) break;
      index[d] = 0;
    }
    if (fill === out.length) {
      yield out;
      out = new Uint8Array(Math.min(outer - r - 1, chunkRuns) * runBytes);
      fill = 0;
    }
  }
  if (fill > 0) yield out.subarray(0, fill);
}

/**
 * Re-reads the output with the strict safetensors reader as it is produced (optionally hashing each tensor's bytes
 * by the offsets the re-read header gives); finish() checks that header against the plan and that every tensor's
 * bytes were emitted exactly at its offsets.
 */
class OutputCheck {
  private readonly reader = new SafetensorsStreamReader();
  private readonly whole = createHash("sha256");
  private size = 0;
  private layout: SafetensorsHeaderLayout | undefined;
  private byOffset: { name: string; end: number; hash: Hash }[] = [];
  private next = 0;
  private misplaced: string | undefined;

  constructor(
    private readonly dataStart: number,
    private readonly hashTensors: boolean,
  ) {}

  update(bytes: Uint8Array): void {
    this.reader.update(bytes);
    this.whole.update(bytes);
    const start = this.size;
    this.size += bytes.length;
    if (!this.layout && this.reader.layout) {
      this.layout = this.reader.layout;
      if (this.hashTensors) {
        this.byOffset = this.layout.tensors.map((t) => ({
          name: t.name,
          end: t.dataOffsets[1],
          hash: createHash("sha256"),
        }));
      }
    }
    if (this.layout && this.hashTensors) this.hashData(bytes, start);
  }

  /** Called when the converter has emitted every byte of `tensor`: the output must be at its planned end. */
  endTensor(tensor: PlannedTensor): void {
    if (this.size !== this.dataStart + tensor.dataOffsets[1]) this.misplaced ??= tensor.name;
  }

  private hashData(bytes: Uint8Array, start: number): void {
    const end = start + bytes.length;
    for (let at = Math.max(start, this.dataStart); at < end;) {
      const tensor = this.byOffset[this.next];
      if (!tensor) break;
      const take = Math.min(this.dataStart + tensor.end - at, end - at);
      if (take <= 0) {
        this.next++;
        continue;
      }
      tensor.hash.update(bytes.subarray(at - start, at - start + take));
      at += take;
    }
  }

  /**
   * Throws FormatError if the output is no valid safetensors file, its header differs from the plan, or a tensor's
   * bytes were not emitted at its offsets; returns the output's sha256 (and sets each tensor's, when asked).
   */
  finish(planned: PlannedTensor[]): string {
    this.reader.finish();
    if (this.misplaced !== undefined) {
      throw new FormatError(`The converted file's tensor ${quote(this.misplaced)} is not where its header places it.`);
    }
    const reread = new Map((this.layout?.tensors ?? []).map((t) => [t.name, t]));
    if (reread.size !== planned.length) {
      throw new FormatError("The converted file holds other tensors than the checkpoint.");
    }
    const hashes = new Map(this.byOffset.map((t) => [t.name, t.hash.digest("hex")]));
    for (const tensor of planned) {
      const info = reread.get(tensor.name);
      if (
        !info ||
        info.dtype !== tensor.dtype ||
        info.dataOffsets[0] !== tensor.dataOffsets[0] ||
        info.dataOffsets[1] !== tensor.dataOffsets[1] ||
        info.shape.length !== tensor.shape.length ||
        info.shape.some((d, i) => d !== tensor.shape[i])
      ) {
        throw new FormatError(`The converted file's tensor ${quote(tensor.name)} differs from the checkpoint's.`);
      }
      if (this.hashTensors) tensor.sha256 = hashes.get(tensor.name);
    }
    return this.whole.digest("hex");
  }
}
