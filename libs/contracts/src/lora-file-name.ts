/**
 * The one LoRA file-name rule: the registry, the gateway, the machine cache,
 * the CLI and the Studio page all check names here, and machines build their
 * file paths from names that pass it. No dependencies: it runs in browsers.
 */
import { ErrorReason } from "./gen/emprops/common/v1/error_reason_pb.js";

/** Extensions a user may upload, lower case, without the dot. */
export const LORA_UPLOAD_EXTENSIONS = ["safetensors", "pt"] as const;
export type LoraUploadExtension = (typeof LORA_UPLOAD_EXTENSIONS)[number];

/** Extensions ComfyUI loads models from: what a shared LoRA may be named. */
export const MODEL_FILE_EXTENSIONS = ["safetensors", "sft", "pt", "pth", "ckpt", "bin"] as const;

/**
 * Longest name in UTF-8 bytes. File systems allow 255 bytes per name; the
 * machine cache stores `{lora_id}-{name}` (an id of up to 19 digits) with
 * `.partial.json` beside it while downloading, which must fit too.
 */
export const MAX_LORA_FILE_NAME_BYTES = 200;

export type LoraFileNameProblem =
  | "empty"
  | "unpaired_surrogate"
  | "control_character"
  | "bidi_control"
  | "invisible_character"
  | "path_separator"
  | "windows_forbidden_character"
  | "leading_or_trailing_space"
  | "leading_or_trailing_dot"
  | "too_long"
  | "extension"
  | "windows_device_name";

export type LoraFileNameCheck =
  | {
      ok: true;
      /** The name in Unicode NFC: what is stored and shown. */
      name: string;
      /** The name without its extension. */
      stem: string;
      /** The extension, lower case, without the dot. */
      extension: string;
    }
  | {
      ok: false;
      problem: LoraFileNameProblem;
      /** INVALID_FILE_FORMAT for a wrong extension, INVALID_NAME otherwise. */
      reason: ErrorReason;
      /** What is wrong and what to change, for the person who chose the name. */
      message: string;
    };

export interface LoraFileNameOptions {
  /** Allowed extensions, lower case without the dot; default LORA_UPLOAD_EXTENSIONS. */
  extensions?: readonly string[];
}

// Explicit directional formatting characters (Unicode UAX #9, section 2).
const BIDI_CONTROLS = new Map<number, string>([
  [0x061c, "ARABIC LETTER MARK"],
  [0x200e, "LEFT-TO-RIGHT MARK"],
  [0x200f, "RIGHT-TO-LEFT MARK"],
  [0x202a, "LEFT-TO-RIGHT EMBEDDING"],
  [0x202b, "RIGHT-TO-LEFT EMBEDDING"],
  [0x202c, "POP DIRECTIONAL FORMATTING"],
  [0x202d, "LEFT-TO-RIGHT OVERRIDE"],
  [0x202e, "RIGHT-TO-LEFT OVERRIDE"],
  [0x2066, "LEFT-TO-RIGHT ISOLATE"],
  [0x2067, "RIGHT-TO-LEFT ISOLATE"],
  [0x2068, "FIRST STRONG ISOLATE"],
  [0x2069, "POP DIRECTIONAL ISOLATE"],
]);

const INVISIBLE_NAMES = new Map<number, string>([
  [0x00ad, "SOFT HYPHEN"],
  [0x200b, "ZERO WIDTH SPACE"],
  [0x200c, "ZERO WIDTH NON-JOINER"],
  [0x200d, "ZERO WIDTH JOINER"],
  [0x2028, "LINE SEPARATOR"],
  [0x2029, "PARAGRAPH SEPARATOR"],
  [0x2060, "WORD JOINER"],
  [0xfeff, "ZERO WIDTH NO-BREAK SPACE"],
]);

const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/u;
const CONTROL = /\p{Cc}/u;
// Format characters (zero-width, joiners, tags, …), everything Unicode says
// renders as nothing, and line/paragraph separators.
const INVISIBLE = /[\p{Cf}\p{Default_Ignorable_Code_Point}\p{Zl}\p{Zp}]/u;
const SURROGATE = /\p{Cs}/u;
const SEPARATOR = /[/\\]/;
// Characters Windows does not allow in file names (besides the separators).
const WINDOWS_FORBIDDEN = /[<>:"|?*]/;
const EDGE_SPACE = /^\p{White_Space}|\p{White_Space}$/u;

// DOS device names, as CPython's ntpath.isreserved (3.13) lists them: Windows
// also treats the superscript digits ¹ ² ³ as COM/LPT port numbers.
const PORT_DIGITS = [..."123456789\u00b9\u00b2\u00b3"];
const WINDOWS_DEVICE_NAMES = new Set([
  "CON",
  "PRN",
  "AUX",
  "NUL",
  "CONIN$",
  "CONOUT$",
  ...PORT_DIGITS.map((d) => `COM${d}`),
  ...PORT_DIGITS.map((d) => `LPT${d}`),
]);

const utf8Length = (s: string) => new TextEncoder().encode(s).length;

function describe(cp: number, names: Map<number, string>): string {
  const hex = `U+${cp.toString(16).toUpperCase().padStart(4, "0")}`;
  const name = names.get(cp);
  return name ? `${hex} (${name})` : hex;
}

/** The first code point matching `re`, with its position (in characters, from 1). */
function find(name: string, re: RegExp): { cp: number; char: string; position: number } | undefined {
  let position = 0;
  for (const char of name) {
    position++;
    if (re.test(char)) return { cp: char.codePointAt(0)!, char, position };
  }
  return undefined;
}

function extensionList(extensions: readonly string[]): string {
  const dotted = extensions.map((e) => `.${e}`);
  return dotted.length <= 1 ? (dotted[0] ?? "") : `${dotted.slice(0, -1).join(", ")} or ${dotted.at(-1)}`;
}

/**
 * Checks a LoRA file name and returns it in NFC, or the problem with a
 * message saying what to change. Refused: empty names; control characters;
 * bidi controls and invisible (zero-width, format, default-ignorable)
 * characters; path separators and the characters Windows forbids; leading or
 * trailing spaces and dots; names over MAX_LORA_FILE_NAME_BYTES in UTF-8;
 * extensions outside `extensions`; Windows device names (CON, PRN, AUX, NUL,
 * COM1-9, LPT1-9, incl. superscript digits, any case, with any extension).
 */
export function checkLoraFileName(value: string, opts: LoraFileNameOptions = {}): LoraFileNameCheck {
  const extensions = opts.extensions ?? LORA_UPLOAD_EXTENSIONS;
  const refuse = (problem: LoraFileNameProblem, message: string): LoraFileNameCheck => ({
    ok: false,
    problem,
    reason: problem === "extension" ? ErrorReason.INVALID_FILE_FORMAT : ErrorReason.INVALID_NAME,
    message,
  });
  if (value === "") return refuse("empty", "The file name is empty: give it a name such as my_style.safetensors.");
  if (SURROGATE.test(value)) {
    return refuse("unpaired_surrogate", "The file name is not valid Unicode (an unpaired surrogate): rename the file.");
  }
  const name = value.normalize("NFC");

  const control = find(name, CONTROL);
  if (control) {
    return refuse(
      "control_character",
      `The file name contains the control character ${describe(control.cp, INVISIBLE_NAMES)} at position ${control.position}: remove it.`,
    );
  }
  const bidi = find(name, BIDI);
  if (bidi) {
    return refuse(
      "bidi_control",
      `The file name contains the text-direction control ${describe(bidi.cp, BIDI_CONTROLS)} at position ${bidi.position}, which makes a name display differently from what it is: remove it.`,
    );
  }
  const invisible = find(name, INVISIBLE);
  if (invisible) {
    return refuse(
      "invisible_character",
      `The file name contains the invisible character ${describe(invisible.cp, INVISIBLE_NAMES)} at position ${invisible.position}: remove it.`,
    );
  }
  const separator = find(name, SEPARATOR);
  if (separator) {
    return refuse(
      "path_separator",
      `The file name contains "${separator.char}": a name cannot include folders. Use "-" or "_" instead.`,
    );
  }
  const forbidden = find(name, WINDOWS_FORBIDDEN);
  if (forbidden) {
    return refuse(
      "windows_forbidden_character",
      `The file name contains "${forbidden.char}", which Windows does not allow in file names (< > : " | ? *): remove or replace it.`,
    );
  }
  if (EDGE_SPACE.test(name)) {
    const where = /^\p{White_Space}/u.test(name) ? "starts" : "ends";
    return refuse("leading_or_trailing_space", `The file name ${where} with a space: remove it.`);
  }
  if (name.startsWith(".") || name.endsWith(".")) {
    return refuse(
      "leading_or_trailing_dot",
      name.startsWith(".")
        ? "The file name starts with a dot (a hidden file on Linux and macOS): remove it, e.g. style.safetensors."
        : "The file name ends with a dot: remove it, so the name ends with its extension.",
    );
  }
  const bytes = utf8Length(name);
  if (bytes > MAX_LORA_FILE_NAME_BYTES) {
    return refuse(
      "too_long",
      `The file name is ${bytes} bytes long in UTF-8; at most ${MAX_LORA_FILE_NAME_BYTES} are allowed: shorten it by ${bytes - MAX_LORA_FILE_NAME_BYTES} bytes.`,
    );
  }
  const dot = name.lastIndexOf(".");
  const extension = dot > 0 ? name.slice(dot + 1).toLowerCase() : "";
  if (!extensions.includes(extension)) {
    return refuse("extension", `File must be ${extensionList(extensions)} format`);
  }
  const stem = name.slice(0, dot);
  // As CPython's ntpath._isreservedname: the part before the first dot, trailing spaces dropped.
  const device = (stem.split(".")[0] ?? "").replace(/ +$/, "").toUpperCase();
  if (WINDOWS_DEVICE_NAMES.has(device)) {
    return refuse(
      "windows_device_name",
      `"${device}" is a device name on Windows (CON, PRN, AUX, NUL, COM1-9, LPT1-9), whatever the extension: rename the file, e.g. ${device.toLowerCase()}_lora.${extension}.`,
    );
  }
  return { ok: true, name, stem, extension };
}
