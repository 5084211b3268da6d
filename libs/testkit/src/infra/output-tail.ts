/**
 * Keeps the last few kilobytes a child process printed, so that a failure to
 * start can quote what the child said instead of a bare timeout.
 */
export class OutputTail {
  private text = "";

  constructor(private readonly maxChars = 8_000) {}

  push(chunk: Buffer | string): void {
    this.text += chunk.toString();
    if (this.text.length > this.maxChars) this.text = this.text.slice(-this.maxChars);
  }

  toString(): string {
    return this.text;
  }

  /** The tail, indented, ready to append to an error message. */
  quote(): string {
    const trimmed = this.text.trim();
    return trimmed ? `\n--- last output ---\n${trimmed}` : "\n(no output)";
  }
}
