// The Python values a torch state-dict pickle can build under the weights-only grammar (torch-pickle.ts).
// Python int → bigint, float → number, str → string, None → null, bool → boolean; everything else a class below.

/** The storage classes torch.save names in persistent ids for dense tensors, with element size and safetensors dtype. */
export const TORCH_STORAGE_TYPES: Readonly<Record<string, { bytes: number; safetensors: string | undefined }>> = {
  DoubleStorage: { bytes: 8, safetensors: "F64" },
  FloatStorage: { bytes: 4, safetensors: "F32" },
  HalfStorage: { bytes: 2, safetensors: "F16" },
  BFloat16Storage: { bytes: 2, safetensors: "BF16" },
  LongStorage: { bytes: 8, safetensors: "I64" },
  IntStorage: { bytes: 4, safetensors: "I32" },
  ShortStorage: { bytes: 2, safetensors: "I16" },
  CharStorage: { bytes: 1, safetensors: "I8" },
  ByteStorage: { bytes: 1, safetensors: "U8" },
  BoolStorage: { bytes: 1, safetensors: "BOOL" },
  ComplexFloatStorage: { bytes: 8, safetensors: "C64" },
  // complex128 has no safetensors dtype: torch loads it, conversion refuses it.
  ComplexDoubleStorage: { bytes: 16, safetensors: undefined },
};

/** dtype objects a state dict may hold as values (`str(dtype)` in torch's allow-list), by attribute name. */
export const TORCH_DTYPE_NAMES: ReadonlySet<string> = new Set([
  "float16",
  "float32",
  "float64",
  "bfloat16",
  "int8",
  "int16",
  "int32",
  "int64",
  "uint8",
  "bool",
  "complex32",
  "complex64",
  "complex128",
]);

/** An allow-listed global: a class, function or dtype object, identified by "module.name". */
export class PyGlobal {
  /** "module.name". */
  readonly label: string;
  /** "module\nname": the pair, unambiguous (a name may contain dots). */
  readonly pair: string;
  constructor(
    readonly module: string,
    readonly name: string,
  ) {
    this.label = `${module}.${name}`;
    this.pair = `${module}\n${name}`;
  }
}

export class PyTuple {
  constructor(readonly items: PyValue[]) {}
}

export class PyList {
  readonly items: PyValue[] = [];
}

type DictEntry = { key: PyValue; value: PyValue };
const NO_ENTRIES: ReadonlyMap<string, DictEntry> = new Map();

/** dict or collections.OrderedDict; keys kept in insertion order as Python does. */
export class PyDict {
  // Created on the first item: every tensor carries an empty OrderedDict of hooks.
  private map: Map<string, DictEntry> | undefined;
  /** Items by hash key (see hashKey), in insertion order. */
  get entries(): ReadonlyMap<string, DictEntry> {
    return this.map ?? NO_ENTRIES;
  }
  set(hash: string, entry: DictEntry): void {
    (this.map ??= new Map()).set(hash, entry);
  }
  /** Attribute state set by BUILD (an OrderedDict's `_metadata`); not part of the mapping. */
  attributes: PyDict | undefined;
  constructor(readonly ordered: boolean) {}
}

export class PySet {}

/** What a persistent id ('storage', storage_type, key, location, numel) loads: one record of the archive. */
export class PyStorage {
  readonly elementBytes: number;
  /** The record's size in bytes as a number (≥ 2^53 only for sizes no record can have). */
  readonly byteCount: number;
  constructor(
    readonly key: string,
    readonly storageType: string,
    readonly location: string,
    /** Elements of the storage's dtype. */
    readonly numel: bigint,
  ) {
    this.elementBytes = (TORCH_STORAGE_TYPES[storageType] as { bytes: number }).bytes;
    this.byteCount = Number(numel) * this.elementBytes;
  }
  get byteLength(): bigint {
    return this.numel * BigInt(this.elementBytes);
  }
}

/** A strided view over a storage, as `_rebuild_tensor_v2` builds it. */
export class PyTensor {
  constructor(
    readonly storage: PyStorage,
    readonly storageOffset: bigint,
    readonly shape: bigint[],
    readonly stride: bigint[],
    readonly parameter: boolean,
  ) {}
  get numel(): bigint {
    return this.shape.reduce((a, b) => a * b, 1n);
  }
}

export class PySize {
  constructor(readonly dims: bigint[]) {}
}

export type PyValue =
  | null
  | boolean
  | bigint
  | number
  | string
  | PyGlobal
  | PyTuple
  | PyList
  | PyDict
  | PySet
  | PyStorage
  | PyTensor
  | PySize;

/** A short description of a value's type, for messages. */
export function describePy(value: PyValue): string {
  if (value === null) return "None";
  if (typeof value === "boolean") return "a bool";
  if (typeof value === "bigint") return "an int";
  if (typeof value === "number") return "a float";
  if (typeof value === "string") return "a str";
  if (value instanceof PyGlobal) return value.label;
  if (value instanceof PyTuple) return "a tuple";
  if (value instanceof PyList) return "a list";
  if (value instanceof PyDict) return value.ordered ? "an OrderedDict" : "a dict";
  if (value instanceof PySet) return "a set";
  if (value instanceof PyStorage) return "a storage";
  if (value instanceof PyTensor) return value.parameter ? "an nn.Parameter" : "a tensor";
  return "a torch.Size";
}

const objectIds = new WeakMap<object, number>();
let nextObjectId = 0;

/**
 * Marks the keys of values other than str. A str from a pickle is decoded UTF-8 and never holds a lone surrogate, so
 * a str is its own key and no other value's key can equal one.
 */
const NOT_STR = "\udc00";

/**
 * The dict key Python would use for a value: equal keys (1, True, 1.0) map to the same string; unhashable values
 * (list, dict, set) return undefined.
 */
export function hashKey(value: PyValue): string | undefined {
  if (typeof value === "string") return value;
  if (value === null) return `${NOT_STR}n`;
  if (typeof value === "boolean") return `${NOT_STR}i${value ? 1 : 0}`;
  if (typeof value === "bigint") return `${NOT_STR}i${value}`;
  if (typeof value === "number") return Number.isInteger(value) ? `${NOT_STR}i${BigInt(value)}` : `${NOT_STR}f${value}`;
  if (value instanceof PyTuple || value instanceof PySize) {
    const items = value instanceof PyTuple ? value.items : value.dims;
    const parts: string[] = [];
    for (const item of items) {
      const key = hashKey(item);
      if (key === undefined) return undefined;
      parts.push(key);
    }
    return `${NOT_STR}t${JSON.stringify(parts)}`;
  }
  if (value instanceof PyList || value instanceof PyDict || value instanceof PySet) return undefined;
  // Globals, storages and tensors hash by identity.
  let id = objectIds.get(value);
  if (id === undefined) {
    id = nextObjectId++;
    objectIds.set(value, id);
  }
  return `${NOT_STR}o${id}`;
}
