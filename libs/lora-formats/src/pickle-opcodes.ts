// The pickle opcode set of protocols 0–5 (CPython Lib/pickletools.py) with the shape of each argument.

/** How an opcode's argument is encoded in the stream. */
export type PickleArg =
  | "none"
  | "u1"
  | "u2"
  | "i4"
  | "u4"
  | "u8"
  | "f8"
  /** text up to "\n" */
  | "line"
  /** two "\n"-terminated lines (module, name) */
  | "line2"
  /** a length (u1, signed i4, u4 or u8) followed by that many bytes */
  | "len1"
  | "len4s"
  | "len4"
  | "len8";

export interface PickleOpcode {
  name: string;
  arg: PickleArg;
}

const table: [string, number, PickleArg][] = [
  ["MARK", 0x28, "none"],
  ["STOP", 0x2e, "none"],
  ["POP", 0x30, "none"],
  ["POP_MARK", 0x31, "none"],
  ["DUP", 0x32, "none"],
  ["FLOAT", 0x46, "line"],
  ["INT", 0x49, "line"],
  ["BININT", 0x4a, "i4"],
  ["BININT1", 0x4b, "u1"],
  ["LONG", 0x4c, "line"],
  ["BININT2", 0x4d, "u2"],
  ["NONE", 0x4e, "none"],
  ["PERSID", 0x50, "line"],
  ["BINPERSID", 0x51, "none"],
  ["REDUCE", 0x52, "none"],
  ["STRING", 0x53, "line"],
  ["BINSTRING", 0x54, "len4s"],
  ["SHORT_BINSTRING", 0x55, "len1"],
  ["UNICODE", 0x56, "line"],
  ["BINUNICODE", 0x58, "len4"],
  ["APPEND", 0x61, "none"],
  ["BUILD", 0x62, "none"],
  ["GLOBAL", 0x63, "line2"],
  ["DICT", 0x64, "none"],
  ["EMPTY_DICT", 0x7d, "none"],
  ["APPENDS", 0x65, "none"],
  ["GET", 0x67, "line"],
  ["BINGET", 0x68, "u1"],
  ["INST", 0x69, "line2"],
  ["LONG_BINGET", 0x6a, "u4"],
  ["LIST", 0x6c, "none"],
  ["EMPTY_LIST", 0x5d, "none"],
  ["OBJ", 0x6f, "none"],
  ["PUT", 0x70, "line"],
  ["BINPUT", 0x71, "u1"],
  ["LONG_BINPUT", 0x72, "u4"],
  ["SETITEM", 0x73, "none"],
  ["TUPLE", 0x74, "none"],
  ["EMPTY_TUPLE", 0x29, "none"],
  ["SETITEMS", 0x75, "none"],
  ["BINFLOAT", 0x47, "f8"],
  // protocol 2
  ["PROTO", 0x80, "u1"],
  ["NEWOBJ", 0x81, "none"],
  ["EXT1", 0x82, "u1"],
  ["EXT2", 0x83, "u2"],
  ["EXT4", 0x84, "i4"],
  ["TUPLE1", 0x85, "none"],
  ["TUPLE2", 0x86, "none"],
  ["TUPLE3", 0x87, "none"],
  ["NEWTRUE", 0x88, "none"],
  ["NEWFALSE", 0x89, "none"],
  ["LONG1", 0x8a, "len1"],
  ["LONG4", 0x8b, "len4s"],
  // protocol 3
  ["BINBYTES", 0x42, "len4"],
  ["SHORT_BINBYTES", 0x43, "len1"],
  // protocol 4
  ["SHORT_BINUNICODE", 0x8c, "len1"],
  ["BINUNICODE8", 0x8d, "len8"],
  ["BINBYTES8", 0x8e, "len8"],
  ["EMPTY_SET", 0x8f, "none"],
  ["ADDITEMS", 0x90, "none"],
  ["FROZENSET", 0x91, "none"],
  ["NEWOBJ_EX", 0x92, "none"],
  ["STACK_GLOBAL", 0x93, "none"],
  ["MEMOIZE", 0x94, "none"],
  ["FRAME", 0x95, "u8"],
  // protocol 5
  ["BYTEARRAY8", 0x96, "len8"],
  ["NEXT_BUFFER", 0x97, "none"],
  ["READONLY_BUFFER", 0x98, "none"],
];

/** Indexed by opcode byte; undefined for bytes that are not opcodes. */
export const PICKLE_OPCODES: readonly (PickleOpcode | undefined)[] = (() => {
  const byCode: (PickleOpcode | undefined)[] = new Array<PickleOpcode | undefined>(256).fill(undefined);
  for (const [name, code, arg] of table) byCode[code] = { name, arg };
  return byCode;
})();

export const HIGHEST_PICKLE_PROTOCOL = 5;
