import fs from "node:fs/promises";

/** A byte range [start, end) of the file and how much of it, from its start, is on disk. */
export interface Part {
  start: number;
  end: number;
  done: number;
}

/** What the sidecar next to a .partial file records, so another process can resume it. */
export interface PartialState {
  version: 1;
  sizeBytes: number;
  sha256: string;
  parts: Part[];
}

export function planParts(sizeBytes: number, partSize: number, parallelThreshold: number): Part[] {
  if (sizeBytes === 0) return [];
  if (sizeBytes < parallelThreshold || sizeBytes <= partSize) return [{ start: 0, end: sizeBytes, done: 0 }];
  const parts: Part[] = [];
  for (let start = 0; start < sizeBytes; start += partSize) {
    parts.push({ start, end: Math.min(sizeBytes, start + partSize), done: 0 });
  }
  return parts;
}

/** Bytes on disk counted from offset 0 without a gap. */
export function contiguousBytes(parts: Part[]): number {
  let total = 0;
  for (const p of parts) {
    total += p.done;
    if (p.done < p.end - p.start) break;
  }
  return total;
}

export function doneBytes(parts: Part[]): number {
  return parts.reduce((sum, p) => sum + p.done, 0);
}

/**
 * The sidecar's parts when it describes this very download (same size and
 * checksum, ranges tiling the file); undefined otherwise.
 */
export async function loadPartialState(
  sidecarPath: string,
  expect: { sizeBytes: number; sha256: string },
): Promise<Part[] | undefined> {
  let text: string;
  try {
    text = await fs.readFile(sidecarPath, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  let state: PartialState;
  try {
    state = JSON.parse(text) as PartialState;
  } catch {
    return undefined;
  }
  if (state?.version !== 1 || state.sizeBytes !== expect.sizeBytes || state.sha256 !== expect.sha256) return undefined;
  if (!Array.isArray(state.parts) || !tiles(state.parts, expect.sizeBytes)) return undefined;
  return state.parts.map((p) => ({ start: p.start, end: p.end, done: p.done }));
}

function tiles(parts: Part[], size: number): boolean {
  let at = 0;
  for (const p of parts) {
    const ok = [p.start, p.end, p.done].every(Number.isSafeInteger);
    if (!ok || p.start !== at || p.end <= p.start || p.done < 0 || p.done > p.end - p.start) return false;
    at = p.end;
  }
  return at === size || (size === 0 && parts.length === 0);
}

/** A sidecar's own description when it is well formed (for start-up reconciliation). */
export async function readPartialState(sidecarPath: string): Promise<PartialState | undefined> {
  let state: PartialState;
  try {
    state = JSON.parse(await fs.readFile(sidecarPath, "utf8")) as PartialState;
  } catch {
    return undefined;
  }
  if (state?.version !== 1 || !Number.isSafeInteger(state.sizeBytes) || typeof state.sha256 !== "string")
    return undefined;
  return Array.isArray(state.parts) && tiles(state.parts, state.sizeBytes) ? state : undefined;
}

/** Writes the sidecar atomically (temp file, then rename). */
export async function savePartialState(sidecarPath: string, state: PartialState): Promise<void> {
  const tmp = `${sidecarPath}.tmp`;
  await fs.writeFile(tmp, JSON.stringify(state));
  await fs.rename(tmp, sidecarPath);
}
