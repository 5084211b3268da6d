/** A parser for one container format, fed the whole file chunk by chunk. Methods throw FormatError. */
export interface ContentReader {
  update(chunk: Uint8Array): void;
  finish(): void;
  /** Pickle imports outside the allow-list found so far, as "module.name". */
  readonly unsafeGlobals: readonly string[];
  /** Which pickles (entry names, or "the file") the unsafe imports came from. */
  readonly unsafeSources: readonly string[];
  readonly tensorCount: number;
}

/** Merges lists without duplicates, keeping first-seen order. */
export function mergeUnique(target: string[], items: Iterable<string>): void {
  for (const item of items) if (!target.includes(item)) target.push(item);
}
