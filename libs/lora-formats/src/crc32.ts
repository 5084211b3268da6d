// CRC-32 as ZIP records it (ISO-HDLC: polynomial 0xEDB88320 reflected, initial and final XOR 0xFFFFFFFF), with the
// signature of Node's zlib.crc32(data, value): `value` continues an earlier CRC. The readers take it as an argument,
// so Node passes zlib's native one and a browser this table-driven one (a head check reads at most a MiB).

export type Crc32 = (data: Uint8Array, value?: number) => number;

const TABLE = new Uint32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  TABLE[n] = c >>> 0;
}

export const portableCrc32: Crc32 = (data, value = 0) => {
  let crc = ~value >>> 0;
  for (let i = 0; i < data.length; i++) crc = (TABLE[(crc ^ (data[i] as number)) & 0xff] as number) ^ (crc >>> 8);
  return ~crc >>> 0;
};
