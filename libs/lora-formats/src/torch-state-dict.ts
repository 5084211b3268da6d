import { quote } from "./describe.js";
import { FormatError } from "./format-error.js";
import {
  describePy,
  PyDict,
  PyGlobal,
  PyList,
  PySet,
  PySize,
  PyStorage,
  PyTensor,
  PyTuple,
  type PyValue,
  TORCH_STORAGE_TYPES,
} from "./torch-values.js";

// How a loaded state dict maps onto safetensors: every tensor becomes a tensor named by its path (dict keys and
// list indices joined by "."), every value without tensors inside becomes one `__metadata__` entry holding it as
// JSON. An OrderedDict's attribute state (`_metadata`, module versions for load_state_dict) is not carried over,
// as safetensors' own converters do.

/** Total size of the JSON kept in `__metadata__`; a LoRA's non-tensor values are bytes, not megabytes. */
export const MAX_METADATA_JSON_BYTES = 8 * 1024 * 1024;
/**
 * A non-contiguous view (a transpose, a strided slice) is materialised from the part of its storage it spans, held
 * in memory; larger ones are refused rather than read element by element. Contiguous tensors of any size stream.
 */
export const MAX_VIEW_EXTENT_BYTES = 64 * 1024 * 1024;
/** Nesting of dicts, lists and tuples; a checkpoint nests a few levels. */
const MAX_DEPTH = 256;

export interface StateDictTensor {
  name: string;
  /** The safetensors dtype. */
  dtype: string;
  tensor: PyTensor;
}

export interface StateDictLayout {
  /** In the order of the pickle's dicts. */
  tensors: StateDictTensor[];
  metadata: Record<string, string>;
}

/** Throws FormatError when the state dict has no safetensors form (a dtype, key or value safetensors cannot hold). */
export function layoutStateDict(root: PyValue): StateDictLayout {
  return new Layout().run(root);
}

class Layout {
  private readonly tensors: StateDictTensor[] = [];
  private readonly metadata = new Map<string, string>();
  private readonly names = new Set<string>();
  private jsonBytes = 0;
  private readonly holdsTensor = new Map<object, boolean>();

  run(root: PyValue): StateDictLayout {
    if (!(root instanceof PyDict))
      this.refuse(`the checkpoint holds ${describePy(root)}, not a state dict (a dict of tensors)`);
    this.walk(root, "", new Set(), 0);
    return { tensors: this.tensors, metadata: Object.fromEntries(this.metadata) };
  }

  private refuse(detail: string): never {
    throw new FormatError(
      `The checkpoint cannot be converted to safetensors: ${detail}. Convert it with your own tools or save only the tensors.`,
    );
  }

  private walk(value: PyValue, path: string, open: Set<object>, depth: number): void {
    if (depth > MAX_DEPTH) this.refuse(`it nests values deeper than ${MAX_DEPTH} levels`);
    if (value instanceof PyTensor) return this.addTensor(path, value);
    if (!this.containsTensor(value, new Set())) return this.addMetadata(path, value);
    if (open.has(value as object)) this.refuse(`the value at ${quote(path)} contains itself`);
    open.add(value as object);
    if (value instanceof PyDict) {
      for (const { key, value: item } of value.entries.values()) {
        if (typeof key !== "string")
          this.refuse(`a dict ${path ? `at ${quote(path)} ` : ""}has a key that is ${describePy(key)}`);
        this.walk(item, path ? `${path}.${key}` : key, open, depth + 1);
      }
    } else {
      const items = (value as PyList | PyTuple).items;
      items.forEach((item, i) => this.walk(item, path ? `${path}.${i}` : String(i), open, depth + 1));
    }
    open.delete(value as object);
  }

  private claim(name: string): void {
    if (name === "__metadata__") this.refuse(`a value is named "__metadata__", which safetensors reserves`);
    if (this.names.has(name))
      this.refuse(`two values are both named ${quote(name)} once nested keys are joined with "."`);
    this.names.add(name);
  }

  private addTensor(name: string, tensor: PyTensor): void {
    this.claim(name);
    const dtype = TORCH_STORAGE_TYPES[tensor.storage.storageType]?.safetensors;
    if (!dtype)
      this.refuse(`tensor ${quote(name)} is of ${tensor.storage.storageType}, which has no safetensors dtype`);
    this.tensors.push({ name, dtype, tensor });
  }

  private addMetadata(name: string, value: PyValue): void {
    this.claim(name);
    const json = this.toJson(value, name, new Set(), 0);
    this.jsonBytes += json.length + name.length;
    if (this.jsonBytes > MAX_METADATA_JSON_BYTES) this.refuse("its non-tensor values exceed 8 MiB as JSON");
    this.metadata.set(name, json);
  }

  private toJson(value: PyValue, path: string, open: Set<object>, depth: number): string {
    if (depth > MAX_DEPTH) this.refuse(`it nests values deeper than ${MAX_DEPTH} levels`);
    if (value === null) return "null";
    if (typeof value === "boolean" || typeof value === "bigint") return String(value);
    if (typeof value === "string") return JSON.stringify(value);
    if (typeof value === "number") {
      if (!Number.isFinite(value)) this.refuse(`the value at ${quote(path)} is ${value}, which JSON cannot hold`);
      return JSON.stringify(value);
    }
    if (value instanceof PySize) return `[${value.dims.join(",")}]`;
    if (value instanceof PyGlobal) {
      if (value.module === "torch" && !value.name.endsWith("Storage")) return JSON.stringify(value.label);
      return this.refuse(`the value at ${quote(path)} is the class ${value.label}`);
    }
    if (value instanceof PyTensor) return this.refuse(`the value at ${quote(path)} holds itself and a tensor`);
    if (value instanceof PySet || value instanceof PyStorage) {
      return this.refuse(`the value at ${quote(path)} is ${describePy(value)}, which JSON cannot hold`);
    }
    if (open.has(value as object)) this.refuse(`the value at ${quote(path)} contains itself`);
    open.add(value as object);
    let out: string;
    if (value instanceof PyDict) {
      const parts: string[] = [];
      for (const { key, value: item } of value.entries.values()) {
        if (typeof key !== "string") this.refuse(`a dict at ${quote(path)} has a key that is ${describePy(key)}`);
        parts.push(`${JSON.stringify(key)}:${this.toJson(item, `${path}.${key}`, open, depth + 1)}`);
        this.budget(parts);
      }
      out = `{${parts.join(",")}}`;
    } else {
      const parts: string[] = [];
      (value as PyList | PyTuple).items.forEach((item, i) => {
        parts.push(this.toJson(item, `${path}.${i}`, open, depth + 1));
        this.budget(parts);
      });
      out = `[${parts.join(",")}]`;
    }
    open.delete(value as object);
    return out;
  }

  /** Whether a value has a tensor inside; computed once per container (a value shared many times stays cheap). */
  private containsTensor(value: PyValue, open: Set<object>, depth = 0): boolean {
    if (depth > MAX_DEPTH) this.refuse(`it nests values deeper than ${MAX_DEPTH} levels`);
    if (value instanceof PyTensor) return true;
    if (!(value instanceof PyDict || value instanceof PyList || value instanceof PyTuple)) return false;
    const known = this.holdsTensor.get(value);
    if (known !== undefined) return known;
    if (open.has(value)) return false;
    open.add(value);
    let found = false;
    const visit = (item: PyValue): void => {
      // Primitives hold no tensor: skip them without a call, a list may hold millions.
      if (typeof item === "object" && item !== null && this.containsTensor(item, open, depth + 1)) found = true;
    };
    if (value instanceof PyDict) for (const entry of value.entries.values()) visit(entry.value);
    else for (const item of value.items) visit(item);
    open.delete(value);
    this.holdsTensor.set(value, found);
    return found;
  }

  // Shared sub-values are written out each time they occur; this keeps a small pickle from expanding without bound.
  private budget(parts: string[]): void {
    const last = parts[parts.length - 1] as string;
    this.jsonBytes += last.length;
    if (this.jsonBytes > MAX_METADATA_JSON_BYTES) this.refuse("its non-tensor values exceed 8 MiB as JSON");
  }
}

/** torch's is_contiguous(): strides are C order's, ignoring dimensions of size 1; empty tensors are contiguous. */
export function isContiguous(tensor: PyTensor): boolean {
  if (tensor.shape.includes(0n)) return true;
  let expected = 1n;
  for (let d = tensor.shape.length - 1; d >= 0; d--) {
    const size = tensor.shape[d] as bigint;
    if (size !== 1n && tensor.stride[d] !== expected) return false;
    expected *= size;
  }
  return true;
}

/** The elements of its storage a non-empty view reaches: [first, first + count), and their size in bytes. */
export function viewExtent(tensor: PyTensor): { first: bigint; count: bigint; bytes: bigint } {
  if (tensor.shape.includes(0n)) return { first: tensor.storageOffset, count: 0n, bytes: 0n };
  let last = tensor.storageOffset;
  for (let d = 0; d < tensor.shape.length; d++)
    last += ((tensor.shape[d] as bigint) - 1n) * (tensor.stride[d] as bigint);
  const count = last - tensor.storageOffset + 1n;
  return { first: tensor.storageOffset, count, bytes: count * BigInt(tensor.storage.elementBytes) };
}
