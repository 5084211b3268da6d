import { bytesText, hexByte, quote } from "./describe.js";
import { FormatError } from "./format-error.js";
import { dtypeBits, isSafetensorsDtype, type SafetensorsDtype } from "./safetensors-dtypes.js";
import { SAFETENSORS_MAX_HEADER_BYTES } from "./safetensors-limits.js";
import { describeJsonValue, JsonNumber, JsonObject, parseStrictJson, type JsonValue } from "./strict-json.js";

export interface SafetensorsTensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** [begin, end) relative to the start of the data section. */
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  /** Sorted by data offset. */
  tensors: SafetensorsTensorInfo[];
  /** `__metadata__`, or {} when absent. */
  metadata: Record<string, string>;
}

export interface SafetensorsHeaderLayout extends SafetensorsHeader {
  /** Size the data section must have: the end of the last tensor. */
  dataBytes: number;
}

const METADATA_KEY = "__metadata__";
const TENSOR_FIELDS = new Set(["dtype", "shape", "data_offsets"]);
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Validates a header on its own (everything except the data section's length, which a stream only knows at the
 * end) and returns the data section size its tensors need. Throws FormatError.
 */
export function parseSafetensorsHeaderLayout(headerJson: Uint8Array): SafetensorsHeaderLayout {
  if (headerJson.length > SAFETENSORS_MAX_HEADER_BYTES) {
    throw new FormatError(
      `The safetensors header is ${bytesText(headerJson.length)}, above the limit of ${bytesText(SAFETENSORS_MAX_HEADER_BYTES)}.`,
    );
  }
  if (headerJson.length === 0 || headerJson[0] !== 0x7b) {
    const found = headerJson.length === 0 ? "it is empty" : `it starts with byte ${hexByte(headerJson[0] ?? 0)}`;
    throw new FormatError(`The safetensors header must be a JSON object starting with "{", but ${found}.`);
  }
  let text: string;
  try {
    text = utf8.decode(headerJson);
  } catch {
    throw new FormatError("The safetensors header is not valid UTF-8.");
  }
  const root = parseStrictJson(text, "The safetensors header");
  if (!(root instanceof JsonObject)) throw new FormatError("The safetensors header is not a JSON object.");

  let metadata: Record<string, string> = {};
  const tensors: SafetensorsTensorInfo[] = [];
  for (const [key, value] of root.entries) {
    if (key === METADATA_KEY) metadata = readMetadata(value);
    else tensors.push(readTensor(key, value));
  }
  const sorted = sortAndCheckOffsets(tensors);
  return { tensors: sorted, metadata, dataBytes: sorted.at(-1)?.dataOffsets[1] ?? 0 };
}

/**
 * Parses and checks a complete safetensors header (the N bytes after the 8-byte length) against the size of the
 * data section that follows it. Throws FormatError naming the tensor and the problem.
 */
export function parseSafetensorsHeader(headerJson: Uint8Array, dataSectionBytes: number): SafetensorsHeader {
  const layout = parseSafetensorsHeaderLayout(headerJson);
  checkDataSection(layout, dataSectionBytes);
  return { tensors: layout.tensors, metadata: layout.metadata };
}

/** Throws unless the tensors cover the data section exactly. */
export function checkDataSection(layout: SafetensorsHeaderLayout, dataSectionBytes: number): void {
  if (dataSectionBytes === layout.dataBytes) return;
  const detail =
    dataSectionBytes < layout.dataBytes
      ? "the file is truncated"
      : `${bytesText(dataSectionBytes - layout.dataBytes)} after the last tensor belong to no tensor`;
  throw new FormatError(
    `The tensors need a data section of ${bytesText(layout.dataBytes)} but the file has ` +
      `${bytesText(dataSectionBytes)} after the header: ${detail}.`,
  );
}

function readMetadata(value: JsonValue): Record<string, string> {
  if (!(value instanceof JsonObject)) {
    throw new FormatError(`"__metadata__" must be an object of strings, but it is ${describeJsonValue(value)}.`);
  }
  const entries: [string, string][] = [];
  for (const [key, item] of value.entries) {
    if (typeof item !== "string") {
      throw new FormatError(
        `"__metadata__" value for ${quote(key)} is ${describeJsonValue(item)}; metadata values must be strings.`,
      );
    }
    entries.push([key, item]);
  }
  // fromEntries defines own properties, so a "__proto__" key stays an ordinary key.
  return Object.fromEntries(entries);
}

function readTensor(name: string, value: JsonValue): SafetensorsTensorInfo {
  const label = `Tensor ${quote(name)}`;
  if (!(value instanceof JsonObject)) {
    throw new FormatError(`Header entry ${quote(name)} is ${describeJsonValue(value)}, not a tensor description.`);
  }
  for (const field of value.entries.keys()) {
    if (!TENSOR_FIELDS.has(field)) throw new FormatError(`${label} has an unexpected field ${quote(field)}.`);
  }
  const dtypeValue = value.entries.get("dtype");
  const shapeValue = value.entries.get("shape");
  const offsetsValue = value.entries.get("data_offsets");
  if (dtypeValue === undefined) throw new FormatError(`${label} has no "dtype".`);
  if (shapeValue === undefined) throw new FormatError(`${label} has no "shape".`);
  if (offsetsValue === undefined) throw new FormatError(`${label} has no "data_offsets".`);

  if (typeof dtypeValue !== "string") {
    throw new FormatError(`${label} has ${describeJsonValue(dtypeValue)} as "dtype" instead of a dtype name.`);
  }
  if (!isSafetensorsDtype(dtypeValue)) {
    throw new FormatError(`${label} has dtype ${quote(dtypeValue)}, which is not a safetensors dtype.`);
  }
  const dtype = dtypeValue;
  const shape = readIntegerArray(shapeValue, `${label} "shape"`);
  const offsets = readIntegerArray(offsetsValue, `${label} "data_offsets"`);
  if (offsets.length !== 2) {
    throw new FormatError(`${label} "data_offsets" must be [begin, end], but it has ${offsets.length} numbers.`);
  }
  const [begin, end] = offsets as [number, number];
  if (end < begin) throw new FormatError(`${label} "data_offsets" [${begin}, ${end}] end before they begin.`);

  const elements = shape.reduce((product, dim) => product * BigInt(dim), 1n);
  const bits = elements * BigInt(dtypeBits(dtype));
  if (bits % 8n !== 0n) {
    throw new FormatError(`${label} has ${elements} elements of ${dtype}, which do not fill whole bytes.`);
  }
  const needed = bits / 8n;
  if (needed !== BigInt(end - begin)) {
    throw new FormatError(
      `${label} "data_offsets" [${begin}, ${end}] span ${bytesText(end - begin)}, but shape [${shape.join(", ")}] ` +
        `of ${dtype} needs ${bytesText(needed)}.`,
    );
  }
  return { name, dtype, shape, dataOffsets: [begin, end] };
}

function readIntegerArray(value: JsonValue, label: string): number[] {
  if (!Array.isArray(value)) throw new FormatError(`${label} must be an array, but it is ${describeJsonValue(value)}.`);
  return value.map((item) => {
    if (!(item instanceof JsonNumber)) {
      throw new FormatError(`${label} must hold non-negative integers, but holds ${describeJsonValue(item)}.`);
    }
    if (!/^(0|[1-9][0-9]*)$/.test(item.text)) {
      throw new FormatError(`${label} must hold non-negative integers, but holds ${quote(item.text)}.`);
    }
    const number = Number(item.text);
    if (!Number.isSafeInteger(number)) throw new FormatError(`${label} holds ${quote(item.text)}, which is too large.`);
    return number;
  });
}

// The reference implementation sorts by offsets before checking, because older writers emitted tensors in name
// order; the JSON order is therefore free, but the sorted offsets must tile the data section from 0 without gaps.
function sortAndCheckOffsets(tensors: SafetensorsTensorInfo[]): SafetensorsTensorInfo[] {
  tensors.sort((a, b) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1]);
  let expected = 0;
  let previous: SafetensorsTensorInfo | undefined;
  for (const tensor of tensors) {
    const [begin, end] = tensor.dataOffsets;
    const here = `Tensor ${quote(tensor.name)} "data_offsets" [${begin}, ${end}]`;
    if (begin < expected && previous) {
      const [pb, pe] = previous.dataOffsets;
      throw new FormatError(`${here} overlap tensor ${quote(previous.name)} [${pb}, ${pe}].`);
    }
    if (begin > expected) {
      throw new FormatError(
        previous
          ? `${here} leave a gap of ${bytesText(begin - expected)} after tensor ${quote(previous.name)}, which ends at ${expected}.`
          : `${here} leave ${bytesText(begin)} unused at the start of the data section; the first tensor must begin at 0.`,
      );
    }
    expected = end;
    previous = tensor;
  }
  return tensors;
}
