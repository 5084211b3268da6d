import { type ContentReader, mergeUnique } from "./content-reader.js";
import { FormatError } from "./format-error.js";
import { PickleScanner } from "./pickle-scanner.js";

/**
 * torch.load's legacy (non-zip) format unpickles five consecutive pickles — magic number, protocol version,
 * system info, the object, the storage keys — and then reads raw storage bytes. Every pickle a loader can reach is
 * therefore among the first five: they are all scanned, whatever byte they start with, and what follows the fifth
 * is storage data that is only hashed. A plain single pickle (ending at its STOP) is accepted too.
 */
export const LEGACY_TORCH_PICKLE_COUNT = 5;

export class RawPickleReader implements ContentReader {
  private scanner: PickleScanner | undefined;
  private completed = 0;
  private offset = 0;
  private readonly unsafe: string[] = [];
  private tensors = 0;

  get unsafeGlobals(): readonly string[] {
    const current = this.scanner?.unsafeGlobals ?? [];
    if (current.length === 0) return this.unsafe;
    const merged = [...this.unsafe];
    mergeUnique(merged, current);
    return merged;
  }

  get unsafeSources(): readonly string[] {
    return this.unsafeGlobals.length > 0 ? ["the file"] : [];
  }

  get tensorCount(): number {
    return this.tensors + (this.scanner?.tensorCount ?? 0);
  }

  update(chunk: Uint8Array): void {
    let pos = 0;
    while (pos < chunk.length && this.completed < LEGACY_TORCH_PICKLE_COUNT) {
      this.scanner ??= new PickleScanner({
        label: this.completed === 0 ? "The pickle" : `Pickle number ${this.completed + 1} in the file`,
        baseOffset: this.offset + pos,
      });
      pos += this.scanner.update(pos === 0 ? chunk : chunk.subarray(pos));
      if (this.scanner.done) this.closeScanner();
    }
    this.offset += chunk.length;
  }

  finish(): void {
    this.scanner?.finish();
    if (this.completed === 0) throw new FormatError("The file holds no pickle.");
  }

  private closeScanner(): void {
    const scanner = this.scanner;
    if (!scanner) return;
    mergeUnique(this.unsafe, scanner.unsafeGlobals);
    this.tensors += scanner.tensorCount;
    this.scanner = undefined;
    this.completed++;
  }
}
