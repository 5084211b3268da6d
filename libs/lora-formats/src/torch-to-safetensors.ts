import { createHash, type Hash } from "node:crypto";
import type { FileHandle } from "node:fs/promises";
import { open } from "node:fs/promises";
import { quote } from "./describe.js";
import { FormatError } from "./format-error.js";
import type { SafetensorsDtype } from "./safetensors-dtypes.js";
import type { SafetensorsHeaderLayout } from "./safetensors-header.js";
import { SafetensorsStreamReader } from "./safetensors-stream-reader.js";
import { type TorchCheckpoint, TorchCheckpointReader } from "./torch-checkpoint.js";
import { isContiguous, type StateDictTensor, viewExtent } from "./torch-state-dict.js";
import type { PyTensor } from "./torch-values.js";

// Converts a verified torch checkpoint into the safetensors file machines receive, streaming: same tensor names,
// dtypes, shapes and bytes (shared storages and non-contiguous views materialised in C order), the state dict's
// other values as JSON in __metadata__. Pass 1 reads the checkpoint once in order, with every check of
// TorchCheckpointReader, hashing each storage record; pass 2 reads each tensor's bytes by offset and emits header
// and data. The output is re-read as it is emitted by the strict SafetensorsStreamReader, and each tensor's sha256
// in it (at the offsets the re-read header gives) must equal the source's: the sha256 pass 1 took of its storage
// record when the tensor is that whole record, else the sha256 of the bytes pass 2 gathered. So a source that
// changes between the passes fails the conversion too.

/** Where the checkpoint's bytes come from: a blob read by range, a file, a buffer. */
export interface RandomAccessSource {
  readonly size: number;
  /** Exactly `length` bytes at `offset` (the last read may be asked for fewer bytes than remain). */
  read(offset: number, length: number): Promise<Uint8Array>;
}

export interface ConvertedTensor {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** [begin, end) in the output's data section. */
  dataOffsets: [number, number];
  /** sha256 (hex) of the tensor's bytes, set once the stream has passed it. */
  sha256: string;
}

export interface ConversionOptions {
  /** Bytes per read and per emitted chunk; default 4 MiB. */
  chunkBytes?: number;
}

const DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024;
/** Bytes read ahead during pass 2 (at least one read is always in flight, a chunk or one view's span). */
const READ_AHEAD_BYTES = 16 * 1024 * 1024;

interface ReadJob {
  offset: number;
  length: number;
  /** A non-contiguous view's storage span, to gather from. */
  view: boolean;
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
}

/**
 * One conversion: `open` verifies the checkpoint and plans the output (its size is known before a byte is
 * written); `chunks()` produces it once. Errors: FormatError (not a valid checkpoint, or one safetensors cannot
 * hold: INVALID_FILE_FORMAT), UnsafePickleError (UNSAFE_PICKLE), errors of the source, and a FormatError at the
 * end of `chunks()` if the re-read output differs from the source (nothing produced may then be kept).
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
    /** The `__metadata__` written: the state dict's non-tensor values as JSON. */
    readonly metadata: Readonly<Record<string, string>>,
  ) {}

  static async open(source: RandomAccessSource, options: ConversionOptions = {}): Promise<TorchToSafetensors> {
    const chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    const reader = new TorchCheckpointReader({ hashStorages: true });
    const first = await source.read(0, Math.min(4, source.size));
    if (!(first[0] === 0x50 && first[1] === 0x4b && first[2] === 0x03 && first[3] === 0x04)) {
      throw new FormatError("The file is not a PyTorch checkpoint in torch.save's ZIP format.");
    }
    for (let offset = 0; offset < source.size; offset += chunkBytes) {
      reader.update(await source.read(offset, Math.min(chunkBytes, source.size - offset)));
    }
    reader.finish();
    const checkpoint = reader.checkpoint as TorchCheckpoint;
    const planned = plan(checkpoint.layout.tensors);
    const header = encodeHeader(planned, checkpoint.layout.metadata);
    return new TorchToSafetensors(source, checkpoint, planned, header, chunkBytes, checkpoint.layout.metadata);
  }

  /** Size of the safetensors file `chunks()` produces. */
  get sizeBytes(): number {
    return this.header.length + (this.planned.at(-1)?.dataOffsets[1] ?? 0);
  }

  /** The tensors in output order; each `sha256` is filled in as `chunks()` passes it. */
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
    const check = new OutputCheck();
    check.update(this.header);
    yield this.header;
    // Reads are issued up to READ_AHEAD_BYTES ahead, so the source works while the bytes before are hashed and
    // passed on (many small tensors would otherwise wait for one read after another).
    const reads = this.reads();
    const pending: { bytes: Promise<Uint8Array>; length: number }[] = [];
    let ahead = 0;
    const fill = () => {
      while (pending.length === 0 || ahead < READ_AHEAD_BYTES) {
        const next = reads.next();
        if (next.done) return;
        const read = this.read(next.value.offset, next.value.length);
        read.catch(() => {}); // awaited in turn below; this only keeps an early failure from going unobserved
        pending.push({ bytes: read, length: next.value.length });
        ahead += next.value.length;
      }
    };
    fill();
    for (const tensor of this.planned) {
      const whole = this.wholeStorageSha256(tensor.tensor);
      const hash = whole === undefined ? createHash("sha256") : undefined;
      for (const job of this.jobsOf(tensor.tensor)) {
        const next = pending.shift() as { bytes: Promise<Uint8Array>; length: number };
        ahead -= next.length;
        const bytes = await next.bytes;
        fill();
        const pieces = job.view
          ? gather(bytes, tensor.tensor, tensor.tensor.storage.elementBytes, this.chunkBytes)
          : [bytes];
        for (const piece of pieces) {
          hash?.update(piece);
          check.update(piece);
          yield piece;
        }
      }
      tensor.sha256 = whole ?? (hash as Hash).digest("hex");
    }
    this.outputSha256 = check.finish(this.planned);
  }

  /** The sha256 pass 1 took of the tensor's storage record, when the tensor is exactly that record's bytes. */
  private wholeStorageSha256(tensor: PyTensor): string | undefined {
    if (tensor.storageOffset !== 0n || tensor.numel !== tensor.storage.numel || !isContiguous(tensor)) return undefined;
    return this.checkpoint.storageSha256.get(tensor.storage.key);
  }

  /** Every read of the output, in order. */
  private *reads(): Generator<ReadJob> {
    for (const tensor of this.planned) yield* this.jobsOf(tensor.tensor);
  }

  /**
   * The reads that produce one tensor: a contiguous tensor in chunks; a view (transpose, strided slice) as the
   * span of storage it reaches (bounded when the checkpoint was verified), gathered in C order.
   */
  private *jobsOf(tensor: PyTensor): Generator<ReadJob> {
    const entry = this.checkpoint.storageEntries.get(tensor.storage.key);
    if (!entry) throw new FormatError(`Storage ${quote(tensor.storage.key)} is missing.`);
    const element = tensor.storage.elementBytes;
    const { first, count } = viewExtent(tensor);
    if (count === 0n) return;
    const start = entry.dataOffset + Number(first) * element;
    if (!isContiguous(tensor)) {
      yield { offset: start, length: Number(count) * element, view: true };
      return;
    }
    const total = Number(tensor.numel) * element;
    for (let done = 0; done < total; done += this.chunkBytes) {
      yield { offset: start + done, length: Math.min(this.chunkBytes, total - done), view: false };
    }
  }

  private async read(offset: number, length: number): Promise<Uint8Array> {
    const bytes = await this.source.read(offset, length);
    if (bytes.length !== length) throw new Error(`the source returned ${bytes.length} of ${length} bytes at ${offset}`);
    return bytes;
  }
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
      sha256: "",
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
 * Re-reads the output with the strict safetensors reader as it is produced, hashing each tensor's bytes by the
 * offsets the re-read header gives; finish() compares them with the hashes of the bytes gathered from the source.
 */
class OutputCheck {
  private readonly reader = new SafetensorsStreamReader();
  private readonly whole = createHash("sha256");
  private readonly prefix = new Uint8Array(8);
  private size = 0;
  private dataStart = -1;
  private layout: SafetensorsHeaderLayout | undefined;
  private byOffset: { name: string; end: number; hash: Hash }[] = [];
  private next = 0;

  update(bytes: Uint8Array): void {
    this.reader.update(bytes);
    this.whole.update(bytes);
    const start = this.size;
    this.size += bytes.length;
    if (start < 8) this.prefix.set(bytes.subarray(0, 8 - start), start);
    if (this.dataStart < 0 && this.size >= 8) {
      this.dataStart = 8 + Number(new DataView(this.prefix.buffer).getBigUint64(0, true));
    }
    if (!this.layout && this.reader.layout) {
      this.layout = this.reader.layout;
      this.byOffset = this.layout.tensors.map((t) => ({
        name: t.name,
        end: t.dataOffsets[1],
        hash: createHash("sha256"),
      }));
    }
    if (this.layout) this.hashData(bytes, start);
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

  /** Throws FormatError if the output is no valid safetensors file or a tensor's bytes differ; returns its sha256. */
  finish(planned: readonly PlannedTensor[]): string {
    this.reader.finish();
    const hashes = new Map(this.byOffset.map((t) => [t.name, t.hash.digest("hex")]));
    if (hashes.size !== planned.length)
      throw new FormatError("The converted file holds other tensors than the checkpoint.");
    for (const tensor of planned) {
      if (hashes.get(tensor.name) !== tensor.sha256) {
        throw new FormatError(`The converted file's tensor ${quote(tensor.name)} differs from the checkpoint's.`);
      }
    }
    return this.whole.digest("hex");
  }
}

/** A source over bytes in memory. */
export function bufferSource(bytes: Uint8Array): RandomAccessSource {
  return {
    size: bytes.length,
    read: (offset, length) => Promise.resolve(bytes.subarray(offset, offset + length)),
  };
}

/** A source over a file; close it with `close()`. */
export async function fileSource(path: string): Promise<RandomAccessSource & { close(): Promise<void> }> {
  const handle: FileHandle = await open(path, "r");
  const { size } = await handle.stat();
  return {
    size,
    async read(offset, length) {
      const buffer = Buffer.allocUnsafe(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await handle.read(buffer, done, length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return buffer.subarray(0, done);
    },
    close: () => handle.close(),
  };
}
