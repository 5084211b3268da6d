import { isUtf8, latin1Text, utf8Slicer } from "./bytes.js";
import { bytesText, quote } from "./describe.js";
import { FormatError } from "./format-error.js";
import { dtypeBits, isSafetensorsDtype, type SafetensorsDtype } from "./safetensors-dtypes.js";
import {
  SAFETENSORS_MAX_HEADER_BYTES,
  SAFETENSORS_MAX_METADATA_ENTRIES,
  SAFETENSORS_MAX_TENSORS,
} from "./safetensors-limits.js";

// The header is read exactly as the reference reads it (huggingface/safetensors, safetensors/src/tensor.rs,
// `SafeTensors::read_metadata` → serde_json into `HashMetadata` → `Metadata::validate`), parsed straight from the
// bytes without building a JSON tree:
// - the bytes must be UTF-8 (`str::from_utf8`); the JSON is serde_json's: whitespace (space, tab, CR, LF) around
//   any token, so also before the first "{" and after the last "}"; no BOM, no trailing data, strict strings
//   (escapes checked, no raw control characters, no lone surrogates), nesting at most 127 levels;
// - the root is a map (`#[serde(flatten)]`): `__metadata__` (once at most: serde refuses a duplicate field) is
//   null or an object of strings, duplicate metadata keys keep the last; every other key is a tensor, and
//   duplicate tensor names keep the last (a HashMap), though every occurrence must be a valid tensor;
// - a tensor is `TensorInfo` as serde's derive reads it: an object with `dtype`, `shape` and `data_offsets` (each
//   once; unknown fields ignored) or an array of exactly those three; `dtype` is a variant name, or an object
//   `{"<name>": null}` (serde's externally tagged enum); `shape` an array of u64, `data_offsets` an array of
//   exactly two (integers without sign, fraction or exponent, at most 2^64 − 1: serde_json makes `-0`, `1.0`,
//   `1e2` and larger integers floats, which usize refuses);
// - validation (`Metadata::validate`): tensors sorted by data_offsets must start at 0 and follow each other with
//   no gap or overlap; the element count is the product of the shape with u64 overflow checked in order (so
//   [2^32, 2^32, 0] is refused although its product is 0), times the dtype's bits, which must fill whole bytes and
//   equal end − begin. The data section must end exactly at the last tensor.
// Documented differences: at most SAFETENSORS_MAX_TENSORS tensors and SAFETENSORS_MAX_METADATA_ENTRIES metadata
// entries (memory); offsets are compared exactly, where the reference's release build can wrap
// `buffer_end + 8 + n` around 2^64 and accept a file whose last tensor ends past its end.

export interface SafetensorsTensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  /** Dimensions; one above 2^53 − 1 (possible only in a tensor of zero elements) is rounded. */
  shape: number[];
  /** [begin, end) relative to the start of the data section. */
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  /** Sorted by data offset. */
  tensors: SafetensorsTensorInfo[];
  /** `__metadata__`, or {} when absent or null. */
  metadata: Record<string, string>;
}

export interface SafetensorsHeaderLayout extends SafetensorsHeader {
  /** Size the data section must have: the end of the last tensor. */
  dataBytes: number;
}

const METADATA_KEY = "__metadata__";

/** A tensor's name for messages, quoted only when a message is built. */
class TensorLabel {
  constructor(private readonly name: string) {}
  toString(): string {
    return `Tensor ${quote(this.name)}`;
  }
}
const MAX_DEPTH = 127;
const U64_MAX = (1n << 64n) - 1n;

/** An integer of the header: a number when exact as a double (nearly always), a bigint above 2^53 − 1. */
type Int = number | bigint;

interface RawTensor {
  name: string;
  dtype: SafetensorsDtype;
  shape: Int[];
  begin: Int;
  end: Int;
}

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
  if (!isUtf8(headerJson)) throw new FormatError("The safetensors header is not valid UTF-8.");
  const { tensors, metadata } = new HeaderParser(headerJson).parse();
  const sorted = validate([...tensors.values()]);
  return {
    tensors: sorted.map((t) => ({
      name: t.name,
      dtype: t.dtype,
      shape: t.shape.map(Number),
      dataOffsets: [Number(t.begin), Number(t.end)],
    })),
    // fromEntries defines own properties, so a "__proto__" key stays an ordinary key.
    metadata: Object.fromEntries(metadata),
    dataBytes: Number(sorted.at(-1)?.end ?? 0),
  };
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

function validate(tensors: RawTensor[]): RawTensor[] {
  tensors.sort((a, b) => compare(a.begin, b.begin) || compare(a.end, b.end));
  let start: Int = 0;
  let previous: RawTensor | undefined;
  for (const t of tensors) {
    const here = (): string => `Tensor ${quote(t.name)} "data_offsets" [${t.begin}, ${t.end}]`;
    if (t.end < t.begin) throw new FormatError(`${here()} end before they begin.`);
    if (t.begin !== start) {
      if (t.begin < start && previous) {
        throw new FormatError(`${here()} overlap tensor ${quote(previous.name)} [${previous.begin}, ${previous.end}].`);
      }
      throw new FormatError(
        previous
          ? `${here()} leave a gap of ${bytesText(BigInt(t.begin) - BigInt(start))} after tensor ${quote(previous.name)}, which ends at ${start}.`
          : `${here()} leave ${bytesText(t.begin)} unused at the start of the data section; the first tensor must begin at 0.`,
      );
    }
    const size = byteSize(t);
    const span =
      typeof t.end === "number" && typeof t.begin === "number" ? t.end - t.begin : BigInt(t.end) - BigInt(t.begin);
    const same = typeof size === "number" && typeof span === "number" ? size === span : BigInt(size) === BigInt(span);
    if (!same) {
      throw new FormatError(
        `${here()} span ${bytesText(span)}, but shape [${t.shape.join(", ")}] of ${t.dtype} needs ${bytesText(size)}.`,
      );
    }
    start = t.end;
    previous = t;
  }
  return tensors;
}

/** The tensor's size in bytes, with the reference's overflow checks (u64, in the order of the dimensions). */
function byteSize(t: RawTensor): Int {
  const bits = dtypeBits(t.dtype);
  let elements = 1;
  let exact = true;
  for (const dim of t.shape) {
    if (typeof dim !== "number") {
      exact = false;
      break;
    }
    elements *= dim;
    if (elements > Number.MAX_SAFE_INTEGER) {
      exact = false;
      break;
    }
  }
  if (exact && elements * bits <= Number.MAX_SAFE_INTEGER) {
    if ((elements * bits) % 8 !== 0) {
      throw new FormatError(
        `Tensor ${quote(t.name)} has ${elements} elements of ${t.dtype}, which do not fill whole bytes.`,
      );
    }
    return (elements * bits) / 8;
  }
  let big = 1n;
  for (const dim of t.shape) {
    big *= BigInt(dim);
    if (big > U64_MAX) {
      throw new FormatError(
        `Tensor ${quote(t.name)} has shape [${t.shape.join(", ")}], whose element count overflows 64 bits.`,
      );
    }
  }
  const bigBits = big * BigInt(bits);
  if (bigBits > U64_MAX) {
    throw new FormatError(
      `Tensor ${quote(t.name)} has shape [${t.shape.join(", ")}] of ${t.dtype}, whose size overflows 64 bits.`,
    );
  }
  if (bigBits % 8n !== 0n) {
    throw new FormatError(`Tensor ${quote(t.name)} has ${big} elements of ${t.dtype}, which do not fill whole bytes.`);
  }
  return bigBits / 8n;
}

function compare(a: Int, b: Int): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

const WS = new Uint8Array(256);
for (const c of [0x20, 0x09, 0x0a, 0x0d]) WS[c] = 1;

class HeaderParser {
  private pos = 0;
  private depth = 0;
  private readonly tensors = new Map<string, RawTensor>();
  private metadata = new Map<string, string>();
  private metadataSeen = false;

  /** Decodes a slice of the header without allocating a view per string. */
  private readonly text: (start: number, end: number) => string;

  constructor(private readonly bytes: Uint8Array) {
    this.text = utf8Slicer(bytes);
  }

  parse(): { tensors: Map<string, RawTensor>; metadata: Map<string, string> } {
    this.ws();
    if (this.peek() !== 0x7b) {
      if (this.pos >= this.bytes.length) this.fail("the header holds no JSON value");
      this.fail(`the header must be a JSON object, but it starts with ${this.describeHere()}`);
    }
    this.enter();
    this.pos++;
    this.ws();
    if (this.peek() === 0x7d) {
      this.pos++;
    } else {
      for (;;) {
        this.ws();
        const keyAt = this.pos;
        const key = this.string();
        this.ws();
        this.expect(0x3a, "':' after a key");
        if (key === METADATA_KEY) {
          if (this.metadataSeen) this.fail(`"__metadata__" appears twice (at byte ${keyAt})`);
          this.metadataSeen = true;
          this.metadataValue();
        } else {
          const tensor = this.tensor(key);
          this.tensors.set(key, tensor);
          if (this.tensors.size > SAFETENSORS_MAX_TENSORS) {
            throw new FormatError(
              `The safetensors header declares more than ${SAFETENSORS_MAX_TENSORS.toLocaleString("en-US")} tensors; a LoRA has a few thousand at most.`,
            );
          }
        }
        this.ws();
        const c = this.next();
        if (c === 0x2c) continue;
        if (c === 0x7d) break;
        this.pos--;
        this.fail("expected ',' or '}' in the header object");
      }
    }
    this.depth--;
    this.ws();
    if (this.pos < this.bytes.length) this.fail(`unexpected data after the header object (${this.describeHere()})`);
    return { tensors: this.tensors, metadata: this.metadata };
  }

  // ---- the schema ------------------------------------------------------------------------------------------

  private metadataValue(): void {
    this.ws();
    if (this.peek() === 0x6e) {
      this.literal("null");
      this.metadata = new Map();
      return;
    }
    if (this.peek() !== 0x7b)
      this.fail(`"__metadata__" must be an object of strings or null, but it is ${this.kindHere()}`);
    const entries = new Map<string, string>();
    this.object((key) => {
      this.ws();
      if (this.peek() !== 0x22) {
        this.fail(`"__metadata__" value for ${quote(key)} is ${this.kindHere()}; metadata values must be strings`);
      }
      entries.set(key, this.string());
      if (entries.size > SAFETENSORS_MAX_METADATA_ENTRIES) {
        throw new FormatError(
          `The safetensors "__metadata__" has more than ${SAFETENSORS_MAX_METADATA_ENTRIES.toLocaleString("en-US")} entries.`,
        );
      }
    });
    this.metadata = entries;
  }

  private tensor(name: string): RawTensor {
    // Built only for messages: a header may hold 100,000 tensors.
    const label = new TensorLabel(name) as unknown as string;
    this.ws();
    const c = this.peek();
    if (c === 0x5b) {
      // serde's derive also reads a struct from a sequence of its fields, in order.
      this.enter();
      this.pos++;
      this.ws();
      const dtype = this.dtype(label);
      this.comma(label);
      const shape = this.u64Array(() => `${label} "shape"`);
      this.comma(label);
      const offsets = this.u64Array(() => `${label} "data_offsets"`);
      this.ws();
      if (this.peek() !== 0x5d) this.fail(`${label} written as an array must have exactly 3 elements`);
      this.pos++;
      this.depth--;
      return this.tensorOf(name, label, dtype, shape, offsets);
    }
    if (c !== 0x7b) this.fail(`header entry ${quote(name)} is ${this.kindHere()}, not a tensor description`);
    let dtype: SafetensorsDtype | undefined;
    let shape: Int[] | undefined;
    let offsets: Int[] | undefined;
    this.object((field) => {
      const twice = (): never => this.fail(`${label} has the field ${quote(field)} twice`);
      if (field === "dtype") {
        if (dtype !== undefined) twice();
        dtype = this.dtype(label);
      } else if (field === "shape") {
        if (shape !== undefined) twice();
        shape = this.u64Array(() => `${label} "shape"`);
      } else if (field === "data_offsets") {
        if (offsets !== undefined) twice();
        offsets = this.u64Array(() => `${label} "data_offsets"`);
      } else {
        this.skipValue();
      }
    });
    if (dtype === undefined) this.fail(`${label} has no "dtype"`);
    if (shape === undefined) this.fail(`${label} has no "shape"`);
    if (offsets === undefined) this.fail(`${label} has no "data_offsets"`);
    return this.tensorOf(name, label, dtype, shape, offsets);
  }

  private tensorOf(name: string, label: string, dtype: SafetensorsDtype, shape: Int[], offsets: Int[]): RawTensor {
    if (offsets.length !== 2)
      this.fail(`${label} "data_offsets" must be [begin, end], but it has ${offsets.length} numbers`);
    return { name, dtype, shape, begin: offsets[0] as Int, end: offsets[1] as Int };
  }

  private dtype(label: string): SafetensorsDtype {
    this.ws();
    const c = this.peek();
    let name: string;
    if (c === 0x22) {
      name = this.string();
    } else if (c === 0x7b) {
      // An externally tagged unit variant: {"F32": null}.
      this.enter();
      this.pos++;
      this.ws();
      if (this.peek() !== 0x22) this.fail(`${label} "dtype" must be a dtype name or {"<name>": null}`);
      name = this.string();
      this.ws();
      this.expect(0x3a, "':' after a key");
      this.ws();
      if (this.peek() !== 0x6e) this.fail(`${label} "dtype" {${quote(name)}: …} must hold null`);
      this.literal("null");
      this.ws();
      if (this.peek() !== 0x7d) this.fail(`${label} "dtype" written as an object must have exactly one key`);
      this.pos++;
      this.depth--;
    } else {
      return this.fail(`${label} has ${this.kindHere()} as "dtype" instead of a dtype name`);
    }
    if (!isSafetensorsDtype(name)) this.fail(`${label} has dtype ${quote(name)}, which is not a safetensors dtype`);
    return name;
  }

  private u64Array(what: () => string): Int[] {
    this.ws();
    if (this.peek() !== 0x5b) this.fail(`${what()} must be an array, but it is ${this.kindHere()}`);
    this.enter();
    this.pos++;
    const items: Int[] = [];
    this.ws();
    if (this.peek() === 0x5d) {
      this.pos++;
      this.depth--;
      return items;
    }
    for (;;) {
      this.ws();
      const c = this.peek() ?? 0;
      if (c !== 0x2d && !(c >= 0x30 && c <= 0x39)) {
        this.fail(`${what()} must hold non-negative integers, but holds ${this.kindHere()}`);
      }
      const start = this.pos;
      const integral = this.number();
      if (!integral || c === 0x2d) {
        this.fail(
          `${what()} must hold non-negative integers, but holds ${quote(latin1Text(this.bytes, start, this.pos))}`,
        );
      }
      // Up to 15 digits are exact as a double; longer ones go through BigInt.
      let value: Int;
      if (this.pos - start <= 15) {
        value = 0;
        for (let k = start; k < this.pos; k++) value = value * 10 + ((this.bytes[k] as number) - 0x30);
      } else {
        const text = latin1Text(this.bytes, start, this.pos);
        const big = BigInt(text);
        if (big > U64_MAX) this.fail(`${what()} holds ${quote(text)}, which is larger than 64 bits`);
        value = big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
      }
      items.push(value);
      this.ws();
      const d = this.next();
      if (d === 0x2c) continue;
      if (d === 0x5d) break;
      this.pos--;
      this.fail(`expected ',' or ']' in ${what()}`);
    }
    this.depth--;
    return items;
  }

  private comma(label: string): void {
    this.ws();
    if (this.peek() === 0x5d) this.fail(`${label} written as an array must have exactly 3 elements`);
    this.expect(0x2c, "','");
  }

  // ---- JSON --------------------------------------------------------------------------------------------------

  /** Reads `{ "key": value, … }`, calling `onEntry` after each key's colon to read its value. */
  private object(onEntry: (key: string) => void): void {
    this.enter();
    this.pos++;
    this.ws();
    if (this.peek() === 0x7d) {
      this.pos++;
      this.depth--;
      return;
    }
    for (;;) {
      this.ws();
      const key = this.string();
      this.ws();
      this.expect(0x3a, "':' after a key");
      onEntry(key);
      this.ws();
      const c = this.next();
      if (c === 0x2c) continue;
      if (c === 0x7d) break;
      this.pos--;
      this.fail("expected ',' or '}'");
    }
    this.depth--;
  }

  /** Validates any JSON value without keeping it. */
  private skipValue(): void {
    this.ws();
    const c = this.peek() ?? 0;
    if (c === 0x7b) return this.object(() => this.skipValue());
    if (c === 0x5b) {
      this.enter();
      this.pos++;
      this.ws();
      if (this.peek() === 0x5d) {
        this.pos++;
        this.depth--;
        return;
      }
      for (;;) {
        this.skipValue();
        this.ws();
        const d = this.next();
        if (d === 0x2c) continue;
        if (d === 0x5d) break;
        this.pos--;
        this.fail("expected ',' or ']'");
      }
      this.depth--;
      return;
    }
    if (c === 0x22) return this.skipString();
    if (c === 0x74) return this.literal("true");
    if (c === 0x66) return this.literal("false");
    if (c === 0x6e) return this.literal("null");
    if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      this.number();
      return;
    }
    this.fail(this.pos >= this.bytes.length ? "unexpected end of the header" : `unexpected ${this.describeHere()}`);
  }

  /** Reads a JSON number; true when it is an integer (no fraction or exponent; a "-0" counts as not one). */
  private number(): boolean {
    const b = this.bytes;
    const start = this.pos;
    const digit = (at: number) => b[at] !== undefined && (b[at] as number) >= 0x30 && (b[at] as number) <= 0x39;
    if (b[this.pos] === 0x2d) this.pos++;
    if (b[this.pos] === 0x30) {
      this.pos++;
      if (digit(this.pos)) this.fail("a number has a leading zero");
    } else if (digit(this.pos)) {
      while (digit(this.pos)) this.pos++;
    } else {
      this.fail("invalid number");
    }
    let integral = true;
    if (b[this.pos] === 0x2e) {
      integral = false;
      this.pos++;
      if (!digit(this.pos)) this.fail("invalid number");
      while (digit(this.pos)) this.pos++;
    }
    if (b[this.pos] === 0x65 || b[this.pos] === 0x45) {
      integral = false;
      this.pos++;
      if (b[this.pos] === 0x2b || b[this.pos] === 0x2d) this.pos++;
      if (!digit(this.pos)) this.fail("invalid number");
      while (digit(this.pos)) this.pos++;
    }
    // serde_json turns "-0" into a float.
    if (b[start] === 0x2d && this.pos - start === 2 && b[start + 1] === 0x30) return false;
    return integral;
  }

  private string(): string {
    if (this.peek() !== 0x22) this.fail(`expected a quoted string, found ${this.describeHere()}`);
    const start = this.pos + 1;
    const plainEnd = this.scanPlain(start);
    if (this.bytes[plainEnd] === 0x22) {
      this.pos = plainEnd + 1;
      return this.text(start, plainEnd);
    }
    // Escapes: decode piece by piece.
    let out = this.text(start, plainEnd);
    this.pos = plainEnd;
    for (;;) {
      const c = this.bytes[this.pos];
      if (c === 0x22) {
        this.pos++;
        return out;
      }
      if (c === 0x5c) {
        out += this.escape();
        continue;
      }
      const from = this.pos;
      const end = this.scanPlain(from);
      out += this.text(from, end);
      this.pos = end;
    }
  }

  private skipString(): void {
    this.pos++;
    for (;;) {
      const end = this.scanPlain(this.pos);
      this.pos = end;
      if (this.bytes[end] === 0x22) {
        this.pos++;
        return;
      }
      this.escape();
    }
  }

  /** Index of the first '"', '\\' or control byte from `from`; fails at the end of input or on a control byte. */
  private scanPlain(from: number): number {
    const b = this.bytes;
    let i = from;
    while (i < b.length) {
      const c = b[i] as number;
      if (c === 0x22 || c === 0x5c) return i;
      if (c < 0x20) {
        this.pos = i;
        this.fail("a control character inside a string");
      }
      i++;
    }
    this.pos = i;
    return this.fail("an unterminated string");
  }

  private escape(): string {
    const c = this.bytes[this.pos + 1];
    this.pos += 2;
    switch (c) {
      case 0x22:
        return '"';
      case 0x5c:
        return "\\";
      case 0x2f:
        return "/";
      case 0x62:
        return "\b";
      case 0x66:
        return "\f";
      case 0x6e:
        return "\n";
      case 0x72:
        return "\r";
      case 0x74:
        return "\t";
      case 0x75: {
        const unit = this.hex4();
        if (unit >= 0xdc00 && unit <= 0xdfff) this.fail("a lone low surrogate escape");
        if (unit < 0xd800 || unit > 0xdbff) return String.fromCharCode(unit);
        if (this.bytes[this.pos] !== 0x5c || this.bytes[this.pos + 1] !== 0x75)
          this.fail("a lone high surrogate escape");
        this.pos += 2;
        const low = this.hex4();
        if (low < 0xdc00 || low > 0xdfff) this.fail("a lone high surrogate escape");
        return String.fromCharCode(unit, low);
      }
      default:
        this.pos -= 2;
        return this.fail("an invalid escape sequence");
    }
  }

  private hex4(): number {
    let value = 0;
    for (let k = 0; k < 4; k++) {
      const c = this.bytes[this.pos + k] ?? 0;
      const d =
        c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : c >= 0x41 && c <= 0x46 ? c - 0x37 : -1;
      if (d < 0) this.fail("an invalid \\u escape");
      value = value * 16 + d;
    }
    this.pos += 4;
    return value;
  }

  private literal(word: "true" | "false" | "null"): void {
    for (let k = 0; k < word.length; k++) {
      if (this.bytes[this.pos + k] !== word.charCodeAt(k)) this.fail(`unexpected ${this.describeHere()}`);
    }
    this.pos += word.length;
  }

  private enter(): void {
    this.depth++;
    if (this.depth > MAX_DEPTH) this.fail(`values nested deeper than ${MAX_DEPTH} levels`);
  }

  private ws(): void {
    const b = this.bytes;
    while (this.pos < b.length && WS[b[this.pos] as number]) this.pos++;
  }

  private peek(): number | undefined {
    return this.bytes[this.pos];
  }

  private next(): number | undefined {
    return this.bytes[this.pos++];
  }

  private expect(byte: number, what: string): void {
    if (this.bytes[this.pos] !== byte) this.fail(`expected ${what}, found ${this.describeHere()}`);
    this.pos++;
  }

  private kindHere(): string {
    const c = this.peek();
    if (c === 0x7b) return "an object";
    if (c === 0x5b) return "an array";
    if (c === 0x22) return "a string";
    if (c === 0x74 || c === 0x66) return "a boolean";
    if (c === 0x6e) return "null";
    if (c === 0x2d || (c !== undefined && c >= 0x30 && c <= 0x39)) return "a number";
    return this.describeHere();
  }

  private describeHere(): string {
    const c = this.peek();
    if (c === undefined) return "the end of the header";
    if (c >= 0x20 && c < 0x7f) return `the character ${quote(String.fromCharCode(c))}`;
    return `byte 0x${c.toString(16).padStart(2, "0")}`;
  }

  private fail(detail: string): never {
    throw new FormatError(`The safetensors header is not valid: ${detail} (at byte ${this.pos} of the header).`);
  }
}
