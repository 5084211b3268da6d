import { Transform, type TransformCallback } from "node:stream";

/** Credit for timers that fire late, so the rate holds on a busy machine without exceeding it. */
const BURST_MS = 20;

/**
 * The upload budget all peer uploads share (bytes per second): each chunk
 * is booked on one timeline and sent when the budget has room for it, so
 * however many peers are served, together they never send faster.
 */
export class UploadPace {
  private freeAt = 0;

  constructor(private readonly bytesPerSecond: number) {}

  /** Books `bytes`; milliseconds to wait before sending them (0 when unlimited). */
  book(bytes: number, now = performance.now()): number {
    if (this.bytesPerSecond <= 0) return 0;
    const start = Math.max(this.freeAt, now - BURST_MS);
    this.freeAt = start + (bytes * 1000) / this.bytesPerSecond;
    return Math.max(0, this.freeAt - now);
  }

  /** A pass-through stream paced by this budget. */
  stream(): Transform {
    return new Transform({
      transform: (chunk: Buffer, _encoding, done: TransformCallback) => {
        const wait = this.book(chunk.length);
        if (wait < 1) return done(null, chunk);
        setTimeout(() => done(null, chunk), wait);
      },
    });
  }
}
