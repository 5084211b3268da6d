// Builders for test files: safetensors from tensors and metadata, pickles written opcode by opcode, and ZIP
// archives laid out the way torch.save writes them.
import { crc32, deflateRawSync } from "node:zlib";

const encoder = new TextEncoder();

// ---- safetensors -------------------------------------------------------------------------------------------------

const DTYPE_BYTES: Record<string, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
};

export interface TensorSpec {
  name: string;
  dtype: string;
  shape: number[];
}

/** Deterministic filler that never contains JSON whitespace, so a header that runs into data cannot parse. */
export function fillerBytes(length: number, seed = 0): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = 40 + ((i * 131 + seed * 17 + 7) % 200);
  return bytes;
}

export function tensorBytes(spec: TensorSpec): number {
  const size = DTYPE_BYTES[spec.dtype];
  if (size === undefined) throw new Error(`builder does not know dtype ${spec.dtype}`);
  return spec.shape.reduce((a, b) => a * b, 1) * size;
}

/** Header object as safetensors writes it: __metadata__ first, tensors in the given order and laid out in it. */
export function safetensorsHeader(tensors: TensorSpec[], metadata?: Record<string, string>): Record<string, unknown> {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const tensor of tensors) {
    const end = offset + tensorBytes(tensor);
    header[tensor.name] = { dtype: tensor.dtype, shape: tensor.shape, data_offsets: [offset, end] };
    offset = end;
  }
  return header;
}

/** 8-byte little-endian length, the header (space-padded to a multiple of 8), then the data. */
export function assembleSafetensors(
  header: string | Uint8Array,
  data: Uint8Array,
  lengthOverride?: bigint,
): Uint8Array {
  let headerBytes = typeof header === "string" ? encoder.encode(header) : header;
  if (typeof header === "string" && headerBytes.length % 8 !== 0) {
    headerBytes = encoder.encode(header + " ".repeat(8 - (headerBytes.length % 8)));
  }
  const out = new Uint8Array(8 + headerBytes.length + data.length);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  out.set(data, 8 + headerBytes.length);
  return out;
}

export function buildSafetensors(tensors: TensorSpec[], metadata?: Record<string, string>): Uint8Array {
  const header = safetensorsHeader(tensors, metadata);
  const dataLength = tensors.reduce((sum, t) => sum + tensorBytes(t), 0);
  return assembleSafetensors(JSON.stringify(header), fillerBytes(dataLength));
}

// ---- pickle ------------------------------------------------------------------------------------------------------

/** Writes pickle opcodes one by one; every method appends exactly the bytes of one opcode and its argument. */
export class PickleWriter {
  private readonly out: number[] = [];

  bytes(): Uint8Array {
    return Uint8Array.from(this.out);
  }

  raw(...bytes: number[]): this {
    this.out.push(...bytes);
    return this;
  }

  private u16(value: number): number[] {
    return [value & 0xff, (value >>> 8) & 0xff];
  }

  private u32(value: number): number[] {
    return [value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, (value >>> 24) & 0xff];
  }

  private u64(value: number): number[] {
    return [...this.u32(value % 0x100000000), ...this.u32(Math.floor(value / 0x100000000))];
  }

  private line(text: string): number[] {
    return [...Buffer.from(`${text}\n`, "latin1")];
  }

  proto(version: number): this {
    return this.raw(0x80, version);
  }
  frame(length: number): this {
    return this.raw(0x95, ...this.u64(length));
  }
  mark(): this {
    return this.raw(0x28);
  }
  stop(): this {
    return this.raw(0x2e);
  }
  pop(): this {
    return this.raw(0x30);
  }
  popMark(): this {
    return this.raw(0x31);
  }
  dup(): this {
    return this.raw(0x32);
  }
  none(): this {
    return this.raw(0x4e);
  }
  newTrue(): this {
    return this.raw(0x88);
  }
  newFalse(): this {
    return this.raw(0x89);
  }
  int(value: number): this {
    return this.raw(0x49, ...this.line(String(value)));
  }
  binInt(value: number): this {
    return this.raw(0x4a, ...this.u32(value));
  }
  binInt1(value: number): this {
    return this.raw(0x4b, value);
  }
  binInt2(value: number): this {
    return this.raw(0x4d, ...this.u16(value));
  }
  long1(bytes: number[]): this {
    return this.raw(0x8a, bytes.length, ...bytes);
  }
  binFloat(value: number): this {
    const b = Buffer.alloc(8);
    b.writeDoubleBE(value);
    return this.raw(0x47, ...b);
  }
  shortBinUnicode(text: string): this {
    const b = [...Buffer.from(text, "utf8")];
    if (b.length > 255) throw new Error("SHORT_BINUNICODE holds at most 255 bytes");
    return this.raw(0x8c, b.length, ...b);
  }
  binUnicode(text: string): this {
    const b = [...Buffer.from(text, "utf8")];
    return this.raw(0x58, ...this.u32(b.length), ...b);
  }
  binUnicode8(text: string): this {
    const b = [...Buffer.from(text, "utf8")];
    return this.raw(0x8d, ...this.u64(b.length), ...b);
  }
  /** Protocol 0 UNICODE; `rawText` is written as is (raw-unicode-escape). */
  unicode(rawText: string): this {
    return this.raw(0x56, ...this.line(rawText));
  }
  /** Protocol 0 STRING; `literal` is the quoted Python literal, e.g. "'os'". */
  string(literal: string): this {
    return this.raw(0x53, ...this.line(literal));
  }
  binString(text: string): this {
    const b = [...Buffer.from(text, "latin1")];
    return this.raw(0x54, ...this.u32(b.length), ...b);
  }
  shortBinString(text: string): this {
    const b = [...Buffer.from(text, "latin1")];
    return this.raw(0x55, b.length, ...b);
  }
  shortBinBytes(bytes: number[]): this {
    return this.raw(0x43, bytes.length, ...bytes);
  }
  binBytes(bytes: number[]): this {
    return this.raw(0x42, ...this.u32(bytes.length), ...bytes);
  }
  global(module: string, name: string): this {
    return this.raw(0x63, ...this.line(module), ...this.line(name));
  }
  inst(module: string, name: string): this {
    return this.raw(0x69, ...this.line(module), ...this.line(name));
  }
  stackGlobal(): this {
    return this.raw(0x93);
  }
  memoize(): this {
    return this.raw(0x94);
  }
  put(index: number): this {
    return this.raw(0x70, ...this.line(String(index)));
  }
  binPut(index: number): this {
    return this.raw(0x71, index);
  }
  longBinPut(index: number): this {
    return this.raw(0x72, ...this.u32(index));
  }
  get(index: number): this {
    return this.raw(0x67, ...this.line(String(index)));
  }
  binGet(index: number): this {
    return this.raw(0x68, index);
  }
  longBinGet(index: number): this {
    return this.raw(0x6a, ...this.u32(index));
  }
  emptyTuple(): this {
    return this.raw(0x29);
  }
  tuple(): this {
    return this.raw(0x74);
  }
  tuple1(): this {
    return this.raw(0x85);
  }
  tuple2(): this {
    return this.raw(0x86);
  }
  tuple3(): this {
    return this.raw(0x87);
  }
  emptyList(): this {
    return this.raw(0x5d);
  }
  append(): this {
    return this.raw(0x61);
  }
  appends(): this {
    return this.raw(0x65);
  }
  emptyDict(): this {
    return this.raw(0x7d);
  }
  setItem(): this {
    return this.raw(0x73);
  }
  setItems(): this {
    return this.raw(0x75);
  }
  reduce(): this {
    return this.raw(0x52);
  }
  build(): this {
    return this.raw(0x62);
  }
  newObj(): this {
    return this.raw(0x81);
  }
  obj(): this {
    return this.raw(0x6f);
  }
  persId(id: string): this {
    return this.raw(0x50, ...this.line(id));
  }
  binPersId(): this {
    return this.raw(0x51);
  }
  ext1(code: number): this {
    return this.raw(0x82, code);
  }
  ext2(code: number): this {
    return this.raw(0x83, ...this.u16(code));
  }
  ext4(code: number): this {
    return this.raw(0x84, ...this.u32(code));
  }
}

export interface StateDictTensor {
  name: string;
  storage: string;
  key: string;
  numel: number;
  shape: number[];
}

/**
 * A state dict pickled the way torch.save does: OrderedDict, tensors rebuilt by _rebuild_tensor_v2 over storages
 * named by BINPERSID tuples, globals written once and fetched back from the memo. Protocol 2 uses GLOBAL + BINPUT;
 * protocol 4 uses STACK_GLOBAL over memoized strings. `legacy` adds the sixth persistent-id field of the old format.
 */
export function stateDictPickle(
  tensors: StateDictTensor[],
  options: { protocol?: 2 | 4; legacy?: boolean } = {},
): Uint8Array {
  const protocol = options.protocol ?? 2;
  const w = new PickleWriter().proto(protocol);
  let memo = 0;
  const memoOf = new Map<string, number>();
  const remember = (): void => {
    if (protocol >= 4) w.memoize();
    else if (memo < 256) w.binPut(memo);
    else w.longBinPut(memo);
    memo++;
  };
  const pushGlobal = (module: string, name: string): void => {
    const key = `${module}.${name}`;
    const known = memoOf.get(key);
    if (known !== undefined) {
      if (known < 256) w.binGet(known);
      else w.longBinGet(known);
      return;
    }
    if (protocol >= 4) {
      w.shortBinUnicode(module);
      remember();
      w.shortBinUnicode(name);
      remember();
      w.stackGlobal();
    } else {
      w.global(module, name);
    }
    memoOf.set(key, memo);
    remember();
  };
  const pushString = (text: string): void => {
    w.binUnicode(text);
    remember();
  };

  pushGlobal("collections", "OrderedDict");
  w.emptyTuple().reduce();
  remember();
  w.mark();
  for (const tensor of tensors) {
    pushString(tensor.name);
    pushGlobal("torch._utils", "_rebuild_tensor_v2");
    w.mark(); // args
    w.mark(); // persistent id
    pushString("storage");
    pushGlobal("torch", tensor.storage);
    pushString(tensor.key);
    pushString("cpu");
    w.binInt(tensor.numel);
    if (options.legacy) w.none();
    w.tuple();
    remember();
    w.binPersId();
    w.binInt1(0); // storage offset
    w.mark();
    for (const dim of tensor.shape) w.binInt(dim);
    w.tuple();
    remember();
    w.mark();
    let stride = 1;
    const strides: number[] = [];
    for (let i = tensor.shape.length - 1; i >= 0; i--) {
      strides.unshift(stride);
      stride *= tensor.shape[i] ?? 1;
    }
    for (const s of strides) w.binInt(s);
    w.tuple();
    remember();
    w.newFalse();
    pushGlobal("collections", "OrderedDict");
    w.emptyTuple().reduce();
    remember();
    w.tuple();
    remember();
    w.reduce();
    remember();
  }
  w.setItems();
  // state_dict()._metadata, set on the OrderedDict by BUILD
  w.emptyDict();
  remember();
  w.shortBinUnicode("_metadata");
  w.emptyDict();
  w.setItem();
  w.build();
  return w.stop().bytes();
}

export const LORA_TENSORS: StateDictTensor[] = [
  { name: "lora_unet_down.lora_down.weight", storage: "FloatStorage", key: "0", numel: 8 * 32, shape: [8, 32] },
  { name: "lora_unet_down.lora_up.weight", storage: "FloatStorage", key: "1", numel: 32 * 8, shape: [32, 8] },
  { name: "lora_unet_down.alpha", storage: "HalfStorage", key: "2", numel: 1, shape: [] },
];

/** torch's legacy (non-zip) format: five pickles, then each storage as an 8-byte element count and its bytes. */
export function legacyTorchFile(mainPickle: Uint8Array, storages: Uint8Array[]): Uint8Array {
  const magic = new PickleWriter().proto(2).long1([0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]).stop();
  const version = new PickleWriter().proto(2).binInt2(1001).stop();
  const sysInfo = new PickleWriter()
    .proto(2)
    .emptyDict()
    .binPut(0)
    .mark()
    .shortBinUnicode("protocol_version")
    .binInt2(1001)
    .shortBinUnicode("little_endian")
    .newTrue()
    .shortBinUnicode("type_sizes")
    .emptyDict()
    .binPut(1)
    .mark()
    .shortBinUnicode("short")
    .binInt1(2)
    .shortBinUnicode("int")
    .binInt1(4)
    .shortBinUnicode("long")
    .binInt1(4)
    .setItems()
    .setItems()
    .stop();
  const keys = new PickleWriter().proto(2).emptyList().binPut(0).mark();
  storages.forEach((_, i) => keys.shortBinUnicode(String(i)));
  keys.appends().stop();
  const parts: Uint8Array[] = [magic.bytes(), version.bytes(), sysInfo.bytes(), mainPickle, keys.bytes()];
  for (const storage of storages) {
    const count = Buffer.alloc(8);
    count.writeBigUInt64LE(BigInt(storage.length));
    parts.push(count, storage);
  }
  return Buffer.concat(parts);
}

// ---- ZIP ---------------------------------------------------------------------------------------------------------

export interface ZipEntrySpec {
  name: string;
  data: Uint8Array;
  /** default "stored" */
  method?: "stored" | "deflated";
  /** default true: zero sizes in the local header and a data descriptor after the data, as torch writes */
  descriptor?: boolean;
  /** write ZIP64 extra fields and a 24-byte descriptor */
  zip64?: boolean;
}

export interface CentralRecord {
  name: string;
  offset: number;
  crc: number;
  compressedSize: number;
  uncompressedSize: number;
  method: number;
}

export interface ZipOptions {
  /** add ZIP64 end record and locator */
  zip64End?: boolean;
  comment?: string;
  /** edit central directory records before they are written */
  editCentral?: (records: CentralRecord[]) => void;
  /** extra local-entry bytes, written verbatim before the central directory */
  rawBeforeCentral?: Uint8Array;
}

const u16 = (v: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v);
  return b;
};
const u32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
};
const u64 = (v: number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b;
};

/** One local file record (header, data, optional descriptor) starting at `offset`; padded like torch to 64 bytes. */
export function localRecord(entry: ZipEntrySpec, offset: number): { bytes: Buffer; record: CentralRecord } {
  const method = entry.method === "deflated" ? 8 : 0;
  const descriptor = entry.descriptor ?? true;
  const stored = method === 8 ? deflateRawSync(entry.data) : Buffer.from(entry.data);
  const crc = crc32(entry.data);
  const name = Buffer.from(entry.name, "utf8");
  const zip64Extra = entry.zip64
    ? Buffer.concat([u16(1), u16(16), u64(entry.data.length), u64(stored.length)])
    : Buffer.alloc(0);
  const unpadded = 30 + name.length + zip64Extra.length + 4;
  const padding = (64 - (unpadded % 64)) % 64;
  const fb = Buffer.concat([u16(0x4246), u16(padding), Buffer.alloc(padding, 0x5a)]);
  const extra = Buffer.concat([zip64Extra, fb]);
  const sizeField = (v: number): Buffer => (entry.zip64 ? u32(0xffffffff) : u32(v));
  const header = Buffer.concat([
    u32(0x04034b50),
    u16(entry.zip64 ? 45 : 20),
    u16(descriptor ? 0x0808 : 0x0800),
    u16(method),
    u16(0),
    u16(0x21),
    u32(descriptor ? 0 : crc),
    descriptor ? u32(0) : sizeField(stored.length),
    descriptor ? u32(0) : sizeField(entry.data.length),
    u16(name.length),
    u16(extra.length),
    name,
    extra,
  ]);
  const tail = descriptor
    ? entry.zip64
      ? Buffer.concat([u32(0x08074b50), u32(crc), u64(stored.length), u64(entry.data.length)])
      : Buffer.concat([u32(0x08074b50), u32(crc), u32(stored.length), u32(entry.data.length)])
    : Buffer.alloc(0);
  return {
    bytes: Buffer.concat([header, stored, tail]),
    record: {
      name: entry.name,
      offset,
      crc,
      compressedSize: stored.length,
      uncompressedSize: entry.data.length,
      method,
    },
  };
}

function centralRecord(r: CentralRecord, zip64: boolean): Buffer {
  const name = Buffer.from(r.name, "utf8");
  const extra = zip64
    ? Buffer.concat([u16(1), u16(24), u64(r.uncompressedSize), u64(r.compressedSize), u64(r.offset)])
    : Buffer.alloc(0);
  const field = (v: number): Buffer => (zip64 ? u32(0xffffffff) : u32(v));
  return Buffer.concat([
    u32(0x02014b50),
    u16(0x031e),
    u16(zip64 ? 45 : 20),
    u16(0x0808),
    u16(r.method),
    u16(0),
    u16(0x21),
    u32(r.crc),
    field(r.compressedSize),
    field(r.uncompressedSize),
    u16(name.length),
    u16(extra.length),
    u16(0),
    u16(0),
    u16(0),
    u32(0),
    field(r.offset),
    name,
    extra,
  ]);
}

export function buildZip(entries: ZipEntrySpec[], options: ZipOptions = {}): Uint8Array {
  const parts: Buffer[] = [];
  const records: CentralRecord[] = [];
  let offset = 0;
  for (const entry of entries) {
    const { bytes, record } = localRecord(entry, offset);
    parts.push(bytes);
    records.push(record);
    offset += bytes.length;
  }
  if (options.rawBeforeCentral) {
    parts.push(Buffer.from(options.rawBeforeCentral));
    offset += options.rawBeforeCentral.length;
  }
  options.editCentral?.(records);
  const centralStart = offset;
  const central = Buffer.concat(records.map((r, i) => centralRecord(r, entries[i]?.zip64 ?? false)));
  parts.push(central);
  offset += central.length;
  if (options.zip64End) {
    const zip64EndOffset = offset;
    parts.push(
      Buffer.concat([
        u32(0x06064b50),
        u64(44),
        u16(0x031e),
        u16(45),
        u32(0),
        u32(0),
        u64(records.length),
        u64(records.length),
        u64(central.length),
        u64(centralStart),
      ]),
      Buffer.concat([u32(0x07064b50), u32(0), u64(zip64EndOffset), u32(1)]),
    );
  }
  const comment = Buffer.from(options.comment ?? "", "latin1");
  parts.push(
    Buffer.concat([
      u32(0x06054b50),
      u16(0),
      u16(0),
      u16(options.zip64End ? 0xffff : records.length),
      u16(options.zip64End ? 0xffff : records.length),
      u32(options.zip64End ? 0xffffffff : central.length),
      u32(options.zip64End ? 0xffffffff : centralStart),
      u16(comment.length),
      comment,
    ]),
  );
  return Buffer.concat(parts);
}

/** A torch.save-style archive around `dataPkl` with one data entry per storage. */
export function torchZip(
  dataPkl: Uint8Array,
  storages: Uint8Array[],
  options: ZipOptions & {
    entry?: Omit<ZipEntrySpec, "name" | "data">;
    pklEntry?: Omit<ZipEntrySpec, "name" | "data">;
  } = {},
): Uint8Array {
  const common = options.entry ?? {};
  return buildZip(
    [
      { name: "archive/data.pkl", data: dataPkl, ...common, ...options.pklEntry },
      { name: "archive/.format_version", data: encoder.encode("1"), ...common },
      { name: "archive/.storage_alignment", data: encoder.encode("64"), ...common },
      { name: "archive/byteorder", data: encoder.encode("little"), ...common },
      ...storages.map((data, i) => ({ name: `archive/data/${i}`, data, ...common })),
      { name: "archive/version", data: encoder.encode("3\n"), ...common },
      {
        name: "archive/.data/serialization_id",
        data: encoder.encode("1234567890123456789012345678901234567890"),
        ...common,
      },
    ],
    options,
  );
}

export function loraStorages(): Uint8Array[] {
  return LORA_TENSORS.map((t, i) => fillerBytes(t.numel * (t.storage === "HalfStorage" ? 2 : 4), i));
}

// ---- feeding -----------------------------------------------------------------------------------------------------

export function* chunked(bytes: Uint8Array, size: number): Generator<Uint8Array> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

/** Seeded PRNG (mulberry32) so fuzz failures reproduce. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
