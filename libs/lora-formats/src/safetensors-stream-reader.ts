import type { ContentReader } from "./content-reader.js";
import { bytesText } from "./describe.js";
import { FormatError } from "./format-error.js";
import { checkDataSection, parseSafetensorsHeaderLayout, type SafetensorsHeaderLayout } from "./safetensors-header.js";
import { PolyglotGuard } from "./polyglot-guard.js";
import { SAFETENSORS_MAX_HEADER_BYTES } from "./safetensors-limits.js";

const INITIAL_HEADER_CAPACITY = 64 * 1024;

/**
 * Reads a safetensors file chunk by chunk: the 8-byte length, the JSON header (buffered, at most 100 MB, and grown
 * only as bytes arrive so a lying length costs nothing), then the data section, which is only counted. Every byte
 * also passes a PolyglotGuard: a file that another loader would open as a ZIP, tar or pickle is refused.
 */
export class SafetensorsStreamReader implements ContentReader {
  readonly unsafeGlobals: readonly string[] = [];
  readonly unsafeSources: readonly string[] = [];

  private phase: "length" | "header" | "data" = "length";
  private readonly lengthBytes = new Uint8Array(8);
  private lengthFill = 0;
  private headerLength = 0;
  private header = new Uint8Array(0);
  private headerFill = 0;
  private dataSeen = 0;
  private layoutValue: SafetensorsHeaderLayout | undefined;
  private readonly polyglot = new PolyglotGuard();

  /** The parsed header, once it has been read completely and found valid. */
  get layout(): SafetensorsHeaderLayout | undefined {
    return this.layoutValue;
  }

  get tensorCount(): number {
    return this.layoutValue?.tensors.length ?? 0;
  }

  /** Throws FormatError as soon as the content is known to be invalid. */
  update(chunk: Uint8Array): void {
    this.polyglot.update(chunk);
    let pos = 0;
    if (this.phase === "length") {
      const take = Math.min(8 - this.lengthFill, chunk.length);
      this.lengthBytes.set(chunk.subarray(0, take), this.lengthFill);
      this.lengthFill += take;
      pos = take;
      if (this.lengthFill < 8) return;
      this.startHeader();
    }
    if (this.phase === "header" && pos < chunk.length) {
      pos = this.readHeader(chunk, pos);
    }
    if (this.phase === "data") this.dataSeen += chunk.length - pos;
  }

  /** Throws FormatError unless the stream was a complete, valid safetensors file. */
  finish(): void {
    if (this.phase === "length") {
      throw new FormatError(
        `The file is only ${bytesText(this.lengthFill)}; a safetensors file starts with an 8-byte header length.`,
      );
    }
    if (this.phase === "header") {
      throw new FormatError(
        `The safetensors header is truncated: it declares ${bytesText(this.headerLength)} but the file ends after ` +
          `${bytesText(this.headerFill)} of it.`,
      );
    }
    if (this.layoutValue) checkDataSection(this.layoutValue, this.dataSeen);
    this.polyglot.finish();
  }

  /**
   * For a file known to be `totalBytes` long whose start is what was fed so far: throws now the FormatError its
   * end must bring (what finish() would find about the header's and the data section's lengths, and the polyglot
   * checks already certain), so a file's first bytes can be judged before the rest exists.
   */
  expectEnd(totalBytes: number): void {
    if (this.phase === "header" && 8 + this.headerLength > totalBytes) {
      throw new FormatError(
        `The safetensors header is truncated: it declares ${bytesText(this.headerLength)} but the file ends after ` +
          `${bytesText(totalBytes - 8)} of it.`,
      );
    }
    if (this.layoutValue) checkDataSection(this.layoutValue, totalBytes - 8 - this.headerLength);
    this.polyglot.expectEnd(totalBytes);
  }

  private startHeader(): void {
    const view = new DataView(this.lengthBytes.buffer);
    const length = view.getBigUint64(0, true);
    if (length > BigInt(SAFETENSORS_MAX_HEADER_BYTES)) {
      throw new FormatError(
        `The safetensors header length is ${bytesText(length)}, above the limit of ` +
          `${bytesText(SAFETENSORS_MAX_HEADER_BYTES)}; this is not a safetensors file.`,
      );
    }
    this.headerLength = Number(length);
    if (this.headerLength < 2) {
      throw new FormatError(
        `The safetensors header length is ${bytesText(this.headerLength)}, too short for a JSON object.`,
      );
    }
    this.header = new Uint8Array(Math.min(this.headerLength, INITIAL_HEADER_CAPACITY));
    this.phase = "header";
  }

  private readHeader(chunk: Uint8Array, pos: number): number {
    const take = Math.min(this.headerLength - this.headerFill, chunk.length - pos);
    this.ensureCapacity(this.headerFill + take);
    this.header.set(chunk.subarray(pos, pos + take), this.headerFill);
    this.headerFill += take;
    if (this.headerFill === this.headerLength) {
      const header = this.header;
      this.header = new Uint8Array(0);
      this.layoutValue = parseSafetensorsHeaderLayout(header);
      this.phase = "data";
    }
    return pos + take;
  }

  private ensureCapacity(needed: number): void {
    if (needed <= this.header.length) return;
    let capacity = this.header.length;
    while (capacity < needed) capacity *= 2;
    const grown = new Uint8Array(Math.min(capacity, this.headerLength));
    grown.set(this.header.subarray(0, this.headerFill));
    this.header = grown;
  }
}
