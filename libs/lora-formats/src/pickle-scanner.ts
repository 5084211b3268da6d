import { bytesText, hexByte } from "./describe.js";
import { FormatError } from "./format-error.js";
import { isAllowedGlobal, isTensorRebuilder } from "./pickle-allow-list.js";
import { HIGHEST_PICKLE_PROTOCOL, PICKLE_OPCODES, type PickleOpcode } from "./pickle-opcodes.js";
import { decodeLatin1, decodeQuotedString, decodeRawUnicodeEscape, decodeUtf8 } from "./pickle-strings.js";

// The scanner models the unpickler's stack and memo symbolically — str values by their text, globals by name,
// everything else as an opaque value — so STACK_GLOBAL operands are resolved exactly as the unpickler would see
// them, including strings fetched back from the memo or duplicated with DUP. Nothing is ever executed.

/** A value that is certainly not a str. */
const OTHER: unique symbol = Symbol("other");
/** A value that may be a str whose text was not kept (too long, or dropped from a full memo). */
const UNKNOWN: unique symbol = Symbol("unknown");

class GlobalRef {
  constructor(
    readonly label: string,
    readonly allowed: boolean,
    readonly rebuildsTensor: boolean,
  ) {}
}

type StackItem = string | GlobalRef | typeof OTHER | typeof UNKNOWN;

// Bounds that keep memory independent of the pickle's size; a state dict stays far below all of them.
const MAX_TEXT_BYTES = 4096;
const MAX_STACK = 1_000_000;
const MAX_SPARSE_MEMO_KEYS = 100_000;
const MAX_MEMO_VALUES = 200_000;
const MAX_MEMO_CHARS = 16 * 1024 * 1024;
const MAX_LISTED_GLOBALS = 256;
const MAX_LISTED_UNSAFE = 64;
/** A state-dict pickle is kilobytes; the cap bounds scan time (opcode-dense input walks at ~50 MiB/s). */
export const DEFAULT_MAX_PICKLE_BYTES = 32 * 1024 * 1024;

const PHASE_OPCODE = 0;
const PHASE_FIXED = 1;
const PHASE_LINE = 2;
const PHASE_PAYLOAD = 3;

const FIXED_SIZES: Record<string, number> = {
  u1: 1,
  len1: 1,
  u2: 2,
  i4: 4,
  u4: 4,
  len4: 4,
  len4s: 4,
  u8: 8,
  f8: 8,
  len8: 8,
};
const TEXT_PAYLOAD_OPS = new Set(["SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "BINSTRING", "SHORT_BINSTRING"]);

export interface PickleScannerOptions {
  /** Names the pickle in messages, e.g. `The pickle "archive/data.pkl"`. */
  label?: string;
  /** Added to positions in messages, for pickles that start inside a larger file. */
  baseOffset?: number;
  /** Longest pickle accepted, in bytes; default {@link DEFAULT_MAX_PICKLE_BYTES}. */
  maxBytes?: number;
}

/**
 * Incremental pickle opcode walker (protocols 0–5). Feed it bytes in any chunking; it stops consuming at STOP.
 * Malformed or truncated streams throw FormatError; imports outside the allow-list are collected in
 * {@link unsafeGlobals} and the walk goes on, so every offending global gets reported.
 */
export class PickleScanner {
  private readonly label: string;
  private readonly baseOffset: number;
  private readonly maxBytes: number;

  private phase = PHASE_OPCODE;
  private op: PickleOpcode = { name: "", arg: "none" };
  private opOffset = 0;
  private consumed = 0;
  private readonly fixed = new Uint8Array(8);
  private fixedNeed = 0;
  private fixedFill = 0;
  private readonly text = new Uint8Array(MAX_TEXT_BYTES);
  private textFill = 0;
  private textOverflow = false;
  private firstLine: string | undefined;
  private onSecondLine = false;
  private payloadRemaining = 0;
  private capturePayload = false;

  private protocol = 0;
  private stopped = false;
  private readonly stack: StackItem[] = [];
  private readonly marks: number[] = [];
  private memoDense = 0;
  private readonly memoSparse = new Set<number>();
  private readonly memoValues = new Map<number, string | GlobalRef | typeof UNKNOWN>();
  private memoChars = 0;
  private memoOverflow = false;

  private readonly globalsList: string[] = [];
  private readonly unsafeList: string[] = [];
  private unsafeTruncated = false;
  private tensors = 0;
  private broken: FormatError | undefined;

  constructor(options: PickleScannerOptions = {}) {
    this.label = options.label ?? "The pickle";
    this.baseOffset = options.baseOffset ?? 0;
    this.maxBytes = options.maxBytes ?? DEFAULT_MAX_PICKLE_BYTES;
  }

  /** True once STOP has been read. */
  get done(): boolean {
    return this.stopped;
  }

  /** Bytes consumed so far (up to and including STOP). */
  get bytesConsumed(): number {
    return this.consumed;
  }

  /** Every distinct global the pickle imports, as "module.name" (capped). */
  get globals(): readonly string[] {
    return this.globalsList;
  }

  /** Imports that are not on the allow-list (capped), in order of appearance. */
  get unsafeGlobals(): readonly string[] {
    return this.unsafeList;
  }

  /** True when more unsafe imports were found than {@link unsafeGlobals} lists. */
  get moreUnsafeGlobals(): boolean {
    return this.unsafeTruncated;
  }

  /** Tensor rebuild calls (REDUCE on _rebuild_tensor / _rebuild_tensor_v2). */
  get tensorCount(): number {
    return this.tensors;
  }

  get protocolVersion(): number {
    return this.protocol;
  }

  /**
   * Consumes bytes up to and including STOP; returns how many of `chunk` were consumed. Throws FormatError, and
   * keeps throwing it on later calls.
   */
  update(chunk: Uint8Array): number {
    if (this.broken) throw this.broken;
    let i = 0;
    const n = Math.min(chunk.length, this.maxBytes - this.consumed);
    try {
      while (i < n && !this.stopped) {
        switch (this.phase) {
          case PHASE_OPCODE: {
            this.opOffset = this.consumed + i;
            const code = chunk[i] as number;
            i++;
            this.beginOp(code);
            break;
          }
          case PHASE_FIXED: {
            const take = Math.min(this.fixedNeed - this.fixedFill, n - i);
            this.fixed.set(chunk.subarray(i, i + take), this.fixedFill);
            this.fixedFill += take;
            i += take;
            if (this.fixedFill === this.fixedNeed) this.onFixed();
            break;
          }
          case PHASE_LINE: {
            const newline = chunk.indexOf(0x0a, i);
            const end = newline === -1 ? n : newline;
            this.appendText(chunk, i, end);
            i = newline === -1 ? n : newline + 1;
            if (newline !== -1) this.onLine();
            break;
          }
          default: {
            const take = Math.min(this.payloadRemaining, n - i);
            if (this.capturePayload) this.appendText(chunk, i, i + take);
            this.payloadRemaining -= take;
            i += take;
            if (this.payloadRemaining === 0) this.onPayload();
          }
        }
      }
      if (!this.stopped && n < chunk.length) {
        throw new FormatError(
          `${this.label} is larger than ${bytesText(this.maxBytes)}; a LoRA state dict pickle is far smaller.`,
        );
      }
    } catch (error) {
      if (error instanceof FormatError) this.broken = error;
      throw error;
    } finally {
      this.consumed += i;
    }
    return i;
  }

  /** Throws FormatError unless STOP was reached. */
  finish(): void {
    if (this.broken) throw this.broken;
    if (this.stopped) return;
    const where =
      this.phase === PHASE_OPCODE
        ? `after byte ${this.baseOffset + this.consumed}`
        : `inside the argument of ${this.op.name} at byte ${this.baseOffset + this.opOffset}`;
    throw new FormatError(`${this.label} is truncated: it ends ${where}, before its STOP opcode.`);
  }

  private fail(detail: string): never {
    const at = this.op.name ? ` (${this.op.name} at byte ${this.baseOffset + this.opOffset})` : "";
    throw new FormatError(`${this.label} is malformed: ${detail}${at}.`);
  }

  // ---- argument decoding -------------------------------------------------------------------------------------

  private beginOp(code: number): void {
    const op = PICKLE_OPCODES[code];
    if (!op) {
      this.op = { name: "", arg: "none" };
      this.fail(`unknown opcode ${hexByte(code)} at byte ${this.baseOffset + this.opOffset}`);
    }
    this.op = op;
    if (op.arg === "none") {
      this.execute(op.name);
    } else if (op.arg === "line" || op.arg === "line2") {
      this.resetText();
      this.firstLine = undefined;
      this.onSecondLine = false;
      this.phase = PHASE_LINE;
    } else {
      this.fixedNeed = FIXED_SIZES[op.arg] ?? 0;
      this.fixedFill = 0;
      this.phase = PHASE_FIXED;
    }
  }

  private onFixed(): void {
    const view = new DataView(this.fixed.buffer);
    const { arg, name } = this.op;
    this.phase = PHASE_OPCODE;
    switch (arg) {
      case "u1":
        return this.execute(name, this.fixed[0]);
      case "u2":
        return this.execute(name, view.getUint16(0, true));
      case "i4":
        return this.execute(name, view.getInt32(0, true));
      case "u4":
        return this.execute(name, view.getUint32(0, true));
      case "u8":
      case "f8":
        // FRAME sizes and float values play no part in safety.
        return this.execute(name);
      case "len1":
        return this.startPayload(this.fixed[0] ?? 0);
      case "len4":
        return this.startPayload(view.getUint32(0, true));
      case "len4s": {
        const length = view.getInt32(0, true);
        if (length < 0) this.fail(`negative byte count ${length}`);
        return this.startPayload(length);
      }
      default: {
        const length = view.getBigUint64(0, true);
        if (length > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`byte count ${length} is too large`);
        return this.startPayload(Number(length));
      }
    }
  }

  private startPayload(length: number): void {
    this.resetText();
    this.capturePayload = TEXT_PAYLOAD_OPS.has(this.op.name);
    this.payloadRemaining = length;
    if (length === 0) this.onPayload();
    else this.phase = PHASE_PAYLOAD;
  }

  private onPayload(): void {
    this.phase = PHASE_OPCODE;
    if (!this.capturePayload) return this.execute(this.op.name);
    if (this.textOverflow) return this.execute(this.op.name, UNKNOWN);
    const bytes = this.text.subarray(0, this.textFill);
    const isUnicode = this.op.name.endsWith("UNICODE") || this.op.name.endsWith("UNICODE8");
    this.execute(this.op.name, isUnicode ? decodeUtf8(bytes) : decodeLatin1(bytes));
  }

  private onLine(): void {
    if (this.op.arg === "line2" && !this.onSecondLine) {
      this.firstLine = this.textOverflow ? undefined : decodeUtf8(this.text.subarray(0, this.textFill));
      this.onSecondLine = true;
      this.resetText();
      return;
    }
    this.phase = PHASE_OPCODE;
    if (this.textOverflow) return this.execute(this.op.name, UNKNOWN);
    const bytes = this.text.subarray(0, this.textFill);
    this.execute(this.op.name, this.op.arg === "line2" ? decodeUtf8(bytes) : decodeLatin1(bytes));
  }

  private resetText(): void {
    this.textFill = 0;
    this.textOverflow = false;
  }

  private appendText(chunk: Uint8Array, start: number, end: number): void {
    if (this.textOverflow) return;
    if (this.textFill + (end - start) > MAX_TEXT_BYTES) {
      this.textOverflow = true;
      return;
    }
    this.text.set(chunk.subarray(start, end), this.textFill);
    this.textFill += end - start;
  }

  // ---- stack machine -----------------------------------------------------------------------------------------

  private execute(name: string, arg?: number | string | typeof UNKNOWN): void {
    switch (name) {
      case "MARK":
        if (this.marks.length >= MAX_STACK) this.fail("too many nested MARKs");
        this.marks.push(this.stack.length);
        return;
      case "STOP":
        this.pop();
        this.stopped = true;
        return;
      case "POP":
        if (this.stack.length > this.fence()) this.stack.pop();
        else if (this.marks.length > 0) this.marks.pop();
        else this.fail("stack underflow");
        return;
      case "POP_MARK":
        this.popMark();
        return;
      case "DUP":
        this.push(this.top());
        return;
      case "PROTO":
        if (typeof arg !== "number" || arg > HIGHEST_PICKLE_PROTOCOL) this.fail(`unsupported protocol ${String(arg)}`);
        this.protocol = arg;
        return;
      case "FRAME":
        return;

      // values that cannot be a str
      case "FLOAT":
      case "INT":
      case "LONG":
      case "BININT":
      case "BININT1":
      case "BININT2":
      case "BINFLOAT":
      case "LONG1":
      case "LONG4":
      case "NONE":
      case "NEWTRUE":
      case "NEWFALSE":
      case "BINBYTES":
      case "SHORT_BINBYTES":
      case "BINBYTES8":
      case "BYTEARRAY8":
      case "EMPTY_DICT":
      case "EMPTY_LIST":
      case "EMPTY_TUPLE":
      case "EMPTY_SET":
      case "PERSID":
      case "NEXT_BUFFER":
        this.push(OTHER);
        return;

      // str values
      case "SHORT_BINUNICODE":
      case "BINUNICODE":
      case "BINUNICODE8":
      case "BINSTRING":
      case "SHORT_BINSTRING":
        this.push(typeof arg === "string" ? arg : UNKNOWN);
        return;
      case "STRING":
        return this.push(this.decodeTextArg(arg, decodeQuotedString, "STRING argument is not a quoted string"));
      case "UNICODE":
        return this.push(this.decodeTextArg(arg, decodeRawUnicodeEscape, "UNICODE argument has a bad escape"));

      // globals
      case "GLOBAL":
        this.push(this.recordGlobal(this.firstLine, typeof arg === "string" ? arg : undefined));
        return;
      case "STACK_GLOBAL": {
        const globalName = this.pop();
        const moduleName = this.pop();
        this.push(
          this.recordGlobal(
            typeof moduleName === "string" ? moduleName : undefined,
            typeof globalName === "string" ? globalName : undefined,
          ),
        );
        return;
      }
      case "INST":
        this.recordGlobal(this.firstLine, typeof arg === "string" ? arg : undefined);
        this.popMark();
        this.push(OTHER);
        return;
      case "EXT1":
      case "EXT2":
      case "EXT4":
        // The copyreg extension registry maps codes to arbitrary globals we cannot see.
        this.push(this.addUnsafe(`copyreg extension code ${String(arg)}`));
        return;

      // calls: every callable reached the stack through a global checked above
      case "REDUCE": {
        this.pop();
        const callable = this.pop();
        if (callable instanceof GlobalRef && callable.rebuildsTensor) this.tensors++;
        this.push(OTHER);
        return;
      }
      case "NEWOBJ":
        this.pop();
        this.pop();
        this.push(OTHER);
        return;
      case "NEWOBJ_EX":
        this.pop();
        this.pop();
        this.pop();
        this.push(OTHER);
        return;
      case "OBJ":
        if (this.popMark() === 0) this.fail("OBJ without a class");
        this.push(OTHER);
        return;
      case "BUILD": {
        this.pop();
        const target = this.top();
        // BUILD on a class or function object itself would set attributes on it for the whole process.
        if (target instanceof GlobalRef) this.addUnsafe(`${target.label} (attributes set by BUILD)`);
        return;
      }
      case "BINPERSID":
        this.pop();
        this.push(OTHER);
        return;

      // containers
      case "TUPLE":
      case "LIST":
      case "DICT":
      case "FROZENSET":
        this.popMark();
        this.push(OTHER);
        return;
      case "TUPLE1":
      case "TUPLE2":
      case "TUPLE3":
        for (let k = Number(name.at(-1)); k > 0; k--) this.pop();
        this.push(OTHER);
        return;
      case "APPEND":
        this.pop();
        this.top();
        return;
      case "SETITEM":
        this.pop();
        this.pop();
        this.top();
        return;
      case "APPENDS":
      case "SETITEMS":
      case "ADDITEMS":
        this.popMark();
        this.top();
        return;
      case "READONLY_BUFFER":
        this.top();
        return;

      // memo
      case "GET":
        return this.push(this.memoGet(this.parseMemoIndex(arg)));
      case "BINGET":
      case "LONG_BINGET":
        return this.push(this.memoGet(arg as number));
      case "PUT": {
        const index = this.parseMemoIndex(arg);
        if (index < 0) this.fail("negative PUT index");
        return this.memoPut(index, this.top());
      }
      case "BINPUT":
      case "LONG_BINPUT":
        return this.memoPut(arg as number, this.top());
      case "MEMOIZE":
        return this.memoPut(this.memoDense + this.memoSparse.size, this.top());
      default:
        this.fail(`unhandled opcode ${name}`);
    }
  }

  private decodeTextArg(
    arg: number | string | typeof UNKNOWN | undefined,
    decode: (text: string) => string | undefined,
    problem: string,
  ): StackItem {
    if (typeof arg !== "string") return UNKNOWN;
    const decoded = decode(arg);
    if (decoded === undefined) this.fail(problem);
    return decoded;
  }

  private fence(): number {
    return this.marks.at(-1) ?? 0;
  }

  private push(item: StackItem): void {
    if (this.stack.length >= MAX_STACK) this.fail(`more than ${MAX_STACK} values on the stack`);
    this.stack.push(item);
  }

  private pop(): StackItem {
    if (this.stack.length <= this.fence()) this.fail("stack underflow");
    return this.stack.pop() as StackItem;
  }

  private top(): StackItem {
    if (this.stack.length <= this.fence()) this.fail("stack underflow");
    return this.stack[this.stack.length - 1] as StackItem;
  }

  /** Drops everything above the last MARK and the MARK; returns how many values were dropped. */
  private popMark(): number {
    const mark = this.marks.pop();
    if (mark === undefined) this.fail("no MARK on the stack");
    const dropped = this.stack.length - mark;
    this.stack.length = mark;
    return dropped;
  }

  // ---- memo --------------------------------------------------------------------------------------------------

  private parseMemoIndex(arg: number | string | typeof UNKNOWN | undefined): number {
    const text = typeof arg === "string" ? arg.trim().replaceAll("_", "") : "";
    if (!/^[-+]?[0-9]+$/.test(text)) this.fail("memo index is not an integer");
    const index = Number(text);
    if (!Number.isSafeInteger(index)) this.fail("memo index is too large");
    return index;
  }

  private memoHas(index: number): boolean {
    return (index >= 0 && index < this.memoDense) || this.memoSparse.has(index);
  }

  // Keys are tracked as a dense prefix plus a bounded sparse set, because MEMOIZE stores at len(memo).
  private memoPut(index: number, item: StackItem): void {
    if (!this.memoHas(index)) {
      if (index === this.memoDense) {
        this.memoDense++;
        while (this.memoSparse.delete(this.memoDense)) this.memoDense++;
      } else {
        if (this.memoSparse.size >= MAX_SPARSE_MEMO_KEYS) this.fail("too many non-sequential memo indices");
        this.memoSparse.add(index);
      }
    }
    const previous = this.memoValues.get(index);
    if (typeof previous === "string") this.memoChars -= previous.length;
    this.memoValues.delete(index);
    if (item === OTHER) return;
    const chars = typeof item === "string" ? item.length : 0;
    if (this.memoValues.size >= MAX_MEMO_VALUES || this.memoChars + chars > MAX_MEMO_CHARS) {
      this.memoOverflow = true;
      return;
    }
    this.memoValues.set(index, item);
    this.memoChars += chars;
  }

  private memoGet(index: number): StackItem {
    if (!this.memoHas(index)) this.fail(`memo index ${index} was never stored`);
    const value = this.memoValues.get(index);
    if (value !== undefined) return value;
    // Once values were dropped, an absent one might have been a str.
    return this.memoOverflow ? UNKNOWN : OTHER;
  }

  // ---- findings ----------------------------------------------------------------------------------------------

  private recordGlobal(moduleName: string | undefined, globalName: string | undefined): GlobalRef {
    const label = `${printable(moduleName)}.${printable(globalName)}`;
    const allowed = moduleName !== undefined && globalName !== undefined && isAllowedGlobal(moduleName, globalName);
    if (!this.globalsList.includes(label) && this.globalsList.length < MAX_LISTED_GLOBALS) this.globalsList.push(label);
    if (!allowed) return this.addUnsafe(label);
    return new GlobalRef(label, true, isTensorRebuilder(moduleName, globalName));
  }

  private addUnsafe(label: string): GlobalRef {
    if (!this.unsafeList.includes(label)) {
      if (this.unsafeList.length < MAX_LISTED_UNSAFE) this.unsafeList.push(label);
      else this.unsafeTruncated = true;
    }
    return new GlobalRef(label, false, false);
  }
}

/** Renders a module or name for reports; undefined means the unpickler's operand was not a known str. */
function printable(value: string | undefined): string {
  if (value === undefined) return "<unresolved>";
  const capped = value.length > 120 ? `${value.slice(0, 120)}…` : value;
  // eslint-disable-next-line no-control-regex
  return capped.replace(/[\u0000-\u001f\u007f]/g, (ch) => `\\x${ch.charCodeAt(0).toString(16).padStart(2, "0")}`);
}
