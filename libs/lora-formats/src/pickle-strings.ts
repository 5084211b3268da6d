// Decoders for the text arguments of pickle opcodes. Each returns undefined when CPython would refuse the argument;
// the scanner then treats the value as unknown, which can only make a STACK_GLOBAL unresolvable (unsafe).

const utf8 = new TextDecoder("utf-8");

export function decodeUtf8(bytes: Uint8Array): string {
  return utf8.decode(bytes);
}

/** Byte-for-byte (ISO-8859-1); how bytes-typed strings compare against ASCII module names. */
export function decodeLatin1(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    out += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  return out;
}

const SIMPLE_ESCAPES: Record<string, string> = {
  "\\": "\\",
  "'": "'",
  '"': '"',
  a: "\x07",
  b: "\b",
  f: "\f",
  n: "\n",
  r: "\r",
  t: "\t",
  v: "\v",
};

/**
 * The STRING opcode argument: a quoted Python 2 str literal, decoded like `codecs.escape_decode`.
 * Returns undefined for an unquoted argument or a bad \x escape.
 */
export function decodeQuotedString(line: string): string | undefined {
  if (line.length < 2) return undefined;
  const quoteChar = line[0];
  if ((quoteChar !== "'" && quoteChar !== '"') || line[line.length - 1] !== quoteChar) return undefined;
  const body = line.slice(1, -1);
  let out = "";
  for (let i = 0; i < body.length; i++) {
    const ch = body.charAt(i);
    if (ch !== "\\") {
      out += ch;
      continue;
    }
    i++;
    if (i >= body.length) return undefined;
    const next = body.charAt(i);
    const simple = SIMPLE_ESCAPES[next];
    if (simple !== undefined) {
      out += simple;
    } else if (next === "\n") {
      // line continuation: nothing
    } else if (next === "x") {
      const hex = body.slice(i + 1, i + 3);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) return undefined;
      out += String.fromCharCode(parseInt(hex, 16));
      i += 2;
    } else if (/[0-7]/.test(next)) {
      const octal = /^[0-7]{1,3}/.exec(body.slice(i))?.[0] ?? next;
      out += String.fromCharCode(parseInt(octal, 8) & 0xff);
      i += octal.length - 1;
    } else {
      out += `\\${next}`;
    }
  }
  return out;
}

/** The UNICODE opcode argument (raw-unicode-escape): only \uXXXX and \UXXXXXXXX after an odd run of backslashes. */
export function decodeRawUnicodeEscape(line: string): string | undefined {
  let out = "";
  let i = 0;
  while (i < line.length) {
    const ch = line.charAt(i);
    if (ch !== "\\") {
      out += ch;
      i++;
      continue;
    }
    let run = 0;
    while (line.charAt(i + run) === "\\") run++;
    const marker = line.charAt(i + run);
    if (run % 2 === 0 || (marker !== "u" && marker !== "U")) {
      out += "\\".repeat(run);
      i += run;
      continue;
    }
    out += "\\".repeat(run - 1);
    const digits = marker === "u" ? 4 : 8;
    const hex = line.slice(i + run + 1, i + run + 1 + digits);
    if (hex.length !== digits || !/^[0-9a-fA-F]+$/.test(hex)) return undefined;
    const codePoint = parseInt(hex, 16);
    if (codePoint > 0x10ffff) return undefined;
    out += String.fromCodePoint(codePoint);
    i += run + 1 + digits;
  }
  return out;
}
