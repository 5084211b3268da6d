import { readFileSync } from "node:fs";
import path from "node:path";

export const ROOT = path.resolve(__dirname, "..", "..", "..", "..");

/**
 * The fenced code block right after the HTML comment `<!-- <marker>… -->` in a
 * Markdown file of the repository: what a reader copies, as printed.
 */
export function markedBlock(file: string, marker: string): string {
  const text = readFileSync(path.join(ROOT, file), "utf8");
  const at = text.indexOf(`<!-- ${marker}`);
  if (at < 0) throw new Error(`${file} has no <!-- ${marker} --> block`);
  const block = /-->\s*\n```[^\n]*\n([\s\S]*?)\n```/.exec(text.slice(at));
  if (!block?.[1]) throw new Error(`${file}: no fenced block after <!-- ${marker} -->`);
  return block[1];
}
