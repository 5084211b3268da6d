import { quote } from "./describe.js";
import { FormatError } from "./format-error.js";

// JSON.parse silently keeps the last of duplicate keys and turns 1e400 into Infinity; a safetensors header must be
// read exactly as the reference (serde_json) reads it, so this small RFC 8259 parser keeps number literals as text
// and refuses duplicate keys and lone surrogates.

/** A number kept as its literal text so callers can demand integer syntax. */
export class JsonNumber {
  constructor(readonly text: string) {}
}

/** An object with its keys in document order. */
export class JsonObject {
  readonly entries = new Map<string, JsonValue>();
}

export type JsonValue = null | boolean | string | JsonNumber | JsonValue[] | JsonObject;

const MAX_DEPTH = 32;

export function describeJsonValue(value: JsonValue): string {
  if (value === null) return "null";
  if (typeof value === "boolean") return "a boolean";
  if (typeof value === "string") return "a string";
  if (value instanceof JsonNumber) return "a number";
  if (Array.isArray(value)) return "an array";
  return "an object";
}

/** Parses `text` strictly; `what` names the document in error messages ("the header"). Throws FormatError. */
export function parseStrictJson(text: string, what: string): JsonValue {
  const parser = new StrictJsonParser(text, what);
  const value = parser.parseValue(0);
  parser.skipWhitespace();
  if (!parser.atEnd()) parser.fail("unexpected data after the end of the JSON value");
  return value;
}

class StrictJsonParser {
  private pos = 0;

  constructor(
    private readonly text: string,
    private readonly what: string,
  ) {}

  atEnd(): boolean {
    return this.pos >= this.text.length;
  }

  fail(detail: string): never {
    throw new FormatError(`${this.what} is not valid JSON: ${detail} at character ${this.pos}.`);
  }

  skipWhitespace(): void {
    const { text } = this;
    while (this.pos < text.length) {
      const c = text.charCodeAt(this.pos);
      if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) return;
      this.pos++;
    }
  }

  parseValue(depth: number): JsonValue {
    this.skipWhitespace();
    if (this.atEnd()) this.fail("unexpected end of input");
    const c = this.text.charCodeAt(this.pos);
    switch (c) {
      case 0x7b: // {
        return this.parseObject(depth + 1);
      case 0x5b: // [
        return this.parseArray(depth + 1);
      case 0x22: // "
        return this.parseString();
      case 0x74: // t
        return this.parseLiteral("true", true);
      case 0x66: // f
        return this.parseLiteral("false", false);
      case 0x6e: // n
        return this.parseLiteral("null", null);
      default:
        if (c === 0x2d || (c >= 0x30 && c <= 0x39)) return this.parseNumber();
        return this.fail(`unexpected character ${quote(this.text.charAt(this.pos))}`);
    }
  }

  private checkDepth(depth: number): void {
    if (depth > MAX_DEPTH) this.fail(`nesting deeper than ${MAX_DEPTH} levels`);
  }

  private parseObject(depth: number): JsonObject {
    this.checkDepth(depth);
    this.pos++;
    const object = new JsonObject();
    this.skipWhitespace();
    if (this.text.charCodeAt(this.pos) === 0x7d) {
      this.pos++;
      return object;
    }
    for (;;) {
      this.skipWhitespace();
      if (this.text.charCodeAt(this.pos) !== 0x22) this.fail("expected a quoted key");
      const keyStart = this.pos;
      const key = this.parseString();
      this.skipWhitespace();
      if (this.text.charCodeAt(this.pos) !== 0x3a) this.fail("expected ':' after a key");
      this.pos++;
      const value = this.parseValue(depth);
      if (object.entries.has(key)) {
        this.pos = keyStart;
        throw new FormatError(`${this.what} has the key ${quote(key)} twice (at character ${keyStart}).`);
      }
      object.entries.set(key, value);
      this.skipWhitespace();
      const c = this.text.charCodeAt(this.pos);
      this.pos++;
      if (c === 0x2c) continue;
      if (c === 0x7d) return object;
      this.pos--;
      this.fail(this.atEnd() ? "unexpected end of input" : "expected ',' or '}'");
    }
  }

  private parseArray(depth: number): JsonValue[] {
    this.checkDepth(depth);
    this.pos++;
    const items: JsonValue[] = [];
    this.skipWhitespace();
    if (this.text.charCodeAt(this.pos) === 0x5d) {
      this.pos++;
      return items;
    }
    for (;;) {
      items.push(this.parseValue(depth));
      this.skipWhitespace();
      const c = this.text.charCodeAt(this.pos);
      this.pos++;
      if (c === 0x2c) continue;
      if (c === 0x5d) return items;
      this.pos--;
      this.fail(this.atEnd() ? "unexpected end of input" : "expected ',' or ']'");
    }
  }

  private parseLiteral<T>(word: string, value: T): T {
    if (!this.text.startsWith(word, this.pos)) this.fail(`unexpected character ${quote(this.text.charAt(this.pos))}`);
    this.pos += word.length;
    return value;
  }

  private parseNumber(): JsonNumber {
    const { text } = this;
    const start = this.pos;
    const isDigit = (at: number): boolean => {
      const c = text.charCodeAt(at);
      return c >= 0x30 && c <= 0x39;
    };
    if (text.charCodeAt(this.pos) === 0x2d) this.pos++;
    if (text.charCodeAt(this.pos) === 0x30) {
      this.pos++;
    } else if (isDigit(this.pos)) {
      while (isDigit(this.pos)) this.pos++;
    } else {
      this.fail("invalid number");
    }
    if (text.charCodeAt(this.pos) === 0x2e) {
      this.pos++;
      if (!isDigit(this.pos)) this.fail("invalid number");
      while (isDigit(this.pos)) this.pos++;
    }
    const e = text.charCodeAt(this.pos);
    if (e === 0x65 || e === 0x45) {
      this.pos++;
      const sign = text.charCodeAt(this.pos);
      if (sign === 0x2b || sign === 0x2d) this.pos++;
      if (!isDigit(this.pos)) this.fail("invalid number");
      while (isDigit(this.pos)) this.pos++;
    }
    return new JsonNumber(text.slice(start, this.pos));
  }

  private parseString(): string {
    const { text } = this;
    this.pos++;
    let out = "";
    let runStart = this.pos;
    for (;;) {
      if (this.pos >= text.length) this.fail("unterminated string");
      const c = text.charCodeAt(this.pos);
      if (c === 0x22) {
        out += text.slice(runStart, this.pos);
        this.pos++;
        return out;
      }
      if (c < 0x20) this.fail("control character inside a string");
      if (c !== 0x5c) {
        this.pos++;
        continue;
      }
      out += text.slice(runStart, this.pos);
      this.pos++;
      out += this.parseEscape();
      runStart = this.pos;
    }
  }

  private parseEscape(): string {
    const c = this.text.charAt(this.pos);
    this.pos++;
    switch (c) {
      case '"':
        return '"';
      case "\\":
        return "\\";
      case "/":
        return "/";
      case "b":
        return "\b";
      case "f":
        return "\f";
      case "n":
        return "\n";
      case "r":
        return "\r";
      case "t":
        return "\t";
      case "u": {
        const unit = this.parseHex4();
        if (unit >= 0xdc00 && unit <= 0xdfff) this.fail("lone low surrogate escape");
        if (unit < 0xd800 || unit > 0xdbff) return String.fromCharCode(unit);
        if (this.text.charAt(this.pos) !== "\\" || this.text.charAt(this.pos + 1) !== "u") {
          this.fail("lone high surrogate escape");
        }
        this.pos += 2;
        const low = this.parseHex4();
        if (low < 0xdc00 || low > 0xdfff) this.fail("lone high surrogate escape");
        return String.fromCharCode(unit, low);
      }
      default:
        this.pos--;
        return this.fail("invalid escape sequence");
    }
  }

  private parseHex4(): number {
    const hex = this.text.slice(this.pos, this.pos + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(hex)) this.fail("invalid \\u escape");
    this.pos += 4;
    return parseInt(hex, 16);
  }
}
