import type { FileHandle } from "node:fs/promises";
import { open } from "node:fs/promises";

/** Where the checkpoint's bytes come from: a blob read by range, a file, a buffer. */
export interface RandomAccessSource {
  readonly size: number;
  /** Exactly `length` bytes at `offset` (the last read may be asked for fewer bytes than remain). */
  read(offset: number, length: number): Promise<Uint8Array>;
}

/** A source over bytes in memory. */
export function bufferSource(bytes: Uint8Array): RandomAccessSource {
  return {
    size: bytes.length,
    read: (offset, length) => Promise.resolve(bytes.subarray(offset, offset + length)),
  };
}

/** A source over a file; close it with `close()`. */
export async function fileSource(path: string): Promise<RandomAccessSource & { close(): Promise<void> }> {
  const handle: FileHandle = await open(path, "r");
  const { size } = await handle.stat();
  return {
    size,
    async read(offset, length) {
      const buffer = Buffer.allocUnsafe(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await handle.read(buffer, done, length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return buffer.subarray(0, done);
    },
    close: () => handle.close(),
  };
}
