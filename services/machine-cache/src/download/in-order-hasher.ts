import { createHash, type Hash } from "node:crypto";
import type { FileHandle } from "node:fs/promises";

const READ_SIZE = 4 * 1024 * 1024;

/**
 * sha256 of a file being written out of order: parts land anywhere, and this
 * hashes the completed prefix as it grows, reading it back (from the page
 * cache) in order. The digest is ready moments after the last byte arrives,
 * and a resumed download hashes what is already on disk the same way.
 */
export class InOrderHasher {
  private hash: Hash = createHash("sha256");
  private hashed = 0;
  private target = 0;
  private running: Promise<void> | undefined;
  private failure: unknown;
  private readonly buffer = Buffer.allocUnsafe(READ_SIZE);

  constructor(private readonly file: FileHandle) {}

  /** The first `upTo` bytes are final: hash them in the background. */
  advance(upTo: number): void {
    if (upTo > this.target) this.target = upTo;
    this.pump();
  }

  /** Waits for every byte up to `size` and returns the hex digest. */
  async digest(size: number): Promise<string> {
    this.advance(size);
    while (this.running) await this.running;
    if (this.failure) throw this.failure;
    if (this.hashed !== size) throw new Error(`hashed ${this.hashed} of ${size} bytes`);
    return this.hash.digest("hex");
  }

  /** Starts over (the file's bytes were discarded). */
  async reset(): Promise<void> {
    this.target = 0;
    while (this.running) await this.running;
    this.hash = createHash("sha256");
    this.hashed = 0;
    this.failure = undefined;
  }

  private pump(): void {
    if (this.running || this.failure || this.hashed >= this.target) return;
    this.running = this.hashUpToTarget().then(
      () => {
        this.running = undefined;
        this.pump();
      },
      (err: unknown) => {
        this.running = undefined;
        this.failure = err;
      },
    );
  }

  private async hashUpToTarget(): Promise<void> {
    while (this.hashed < this.target) {
      const length = Math.min(this.buffer.length, this.target - this.hashed);
      const { bytesRead } = await this.file.read(this.buffer, 0, length, this.hashed);
      if (bytesRead === 0) throw new Error(`unexpected end of file at ${this.hashed}`);
      this.hash.update(this.buffer.subarray(0, bytesRead));
      this.hashed += bytesRead;
    }
  }
}
