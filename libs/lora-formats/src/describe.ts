// Helpers that turn hostile values into short, printable fragments of user-facing messages.

const MAX_QUOTED_CHARS = 80;

/** A JSON-quoted, length-capped rendering of an arbitrary string (control characters escaped). */
export function quote(value: string): string {
  const capped = value.length > MAX_QUOTED_CHARS ? `${value.slice(0, MAX_QUOTED_CHARS)}…` : value;
  return JSON.stringify(capped);
}

export function hexByte(byte: number): string {
  return `0x${byte.toString(16).padStart(2, "0")}`;
}

/** "1 byte" / "1,234 bytes". */
export function bytesText(count: number | bigint): string {
  return `${count.toLocaleString("en-US")} ${count === 1 || count === 1n ? "byte" : "bytes"}`;
}
