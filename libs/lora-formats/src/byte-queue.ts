/**
 * Unconsumed bytes carried between chunks. Parsers leave only what they cannot act on yet (a partial record
 * header, a few bytes that might start a data descriptor), so the queue stays small; growth doubles, keeping
 * byte-at-a-time feeding linear.
 */
export class ByteQueue {
  private buffer = new Uint8Array(256);
  private start = 0;
  private end = 0;

  get length(): number {
    return this.end - this.start;
  }

  /** The queued bytes; valid until the next append or discard. */
  view(): Uint8Array {
    return this.buffer.subarray(this.start, this.end);
  }

  append(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    if (this.end + bytes.length > this.buffer.length) {
      const live = this.length;
      if (live + bytes.length <= this.buffer.length / 2) {
        this.buffer.copyWithin(0, this.start, this.end);
      } else {
        let capacity = this.buffer.length;
        while (capacity < (live + bytes.length) * 2) capacity *= 2;
        const grown = new Uint8Array(capacity);
        grown.set(this.buffer.subarray(this.start, this.end));
        this.buffer = grown;
      }
      this.start = 0;
      this.end = live;
    }
    this.buffer.set(bytes, this.end);
    this.end += bytes.length;
  }

  discard(count: number): void {
    this.start += count;
    if (this.start >= this.end) {
      this.start = 0;
      this.end = 0;
      // Let a burst of large carry-over be collected instead of pinning it for the rest of the stream.
      if (this.buffer.length > 1 << 20) this.buffer = new Uint8Array(256);
    }
  }
}
