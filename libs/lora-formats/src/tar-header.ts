// Python's tarfile (Lib/tarfile.py, TarInfo.frombuf and nti) decides whether a 512-byte block is a tar header by
// its checksum alone. torch.load tries any file that does not start with a ZIP header as a tar archive first (the
// pre-1.6 legacy format) and unpickles its members, so a file whose first block passes this test is a tar file to
// torch whatever else it is.

import { latin1Text } from "./bytes.js";

export const TAR_BLOCK_BYTES = 512;

/** True when `block` (the file's first 512 bytes) is a header tarfile.open would accept. */
export function isTarHeader(block: Uint8Array): boolean {
  if (block.length < TAR_BLOCK_BYTES) return false;
  if (block.subarray(0, TAR_BLOCK_BYTES).every((b) => b === 0)) return false;
  const recorded = readNumber(block.subarray(148, 156));
  if (recorded === undefined) return false;
  let unsigned = 256;
  let signed = 256;
  for (let i = 0; i < TAR_BLOCK_BYTES; i++) {
    if (i >= 148 && i < 156) continue;
    const b = block[i] as number;
    unsigned += b;
    signed += b >= 128 ? b - 256 : b;
  }
  if (recorded !== BigInt(unsigned) && recorded !== BigInt(signed)) return false;
  // frombuf then reads mode, uid, gid, size, mtime, devmajor and devminor with nti(), which refuses non-numbers.
  const numeric: [number, number][] = [
    [100, 108],
    [108, 116],
    [116, 124],
    [124, 136],
    [136, 148],
    [329, 337],
    [337, 345],
  ];
  return numeric.every(([from, to]) => readNumber(block.subarray(from, to)) !== undefined);
}

/** tarfile's nti(): base-256 when the first byte is 0o200 or 0o377, else octal text up to the first NUL. */
function readNumber(field: Uint8Array): bigint | undefined {
  const first = field[0] as number;
  if (first === 0o200 || first === 0o377) {
    let n = 0n;
    for (let i = 1; i < field.length; i++) n = (n << 8n) + BigInt(field[i] as number);
    if (first === 0o377) n = -((1n << BigInt(8 * (field.length - 1))) - n);
    return n;
  }
  const nul = field.indexOf(0);
  const raw = field.subarray(0, nul === -1 ? field.length : nul);
  if (raw.some((b) => b > 0x7f)) return undefined;
  // int(s.strip() or "0", 8): surrounding whitespace, a sign, an "0o" prefix and single underscores are allowed.
  const text = latin1Text(raw).replace(/^[\s\v\f]+|[\s\v\f]+$/g, "") || "0";
  const match = /^([+-]?)(?:0[oO]_?)?([0-7](?:_?[0-7])*)$/.exec(text);
  if (!match) return undefined;
  const value = BigInt(`0o${(match[2] as string).replaceAll("_", "")}`);
  return match[1] === "-" ? -value : value;
}
