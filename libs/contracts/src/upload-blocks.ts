/**
 * The block layout of a LoRA upload to a signed URL (Put Block / Put Block
 * List). Every client uses these ids, so any client can resume an upload
 * another one started.
 */

/** One Put Block of an upload. */
export interface PlannedBlock {
  index: number;
  /** Base64 block id, the same length for every block of a blob as Put Block requires. */
  id: string;
  offset: number;
  size: number;
}

/** Block i's id: base64 of "block-000042". */
export function blockId(index: number): string {
  return btoa(`block-${String(index).padStart(6, "0")}`);
}

/** The file cut into blocks of blockSize bytes (the last one shorter). */
export function planBlocks(fileSize: number, blockSize: number): PlannedBlock[] {
  if (!(blockSize > 0)) throw new Error(`the registry sent a block size of ${blockSize} bytes`);
  const blocks: PlannedBlock[] = [];
  for (let offset = 0, index = 0; offset < fileSize; offset += blockSize, index++) {
    blocks.push({ index, id: blockId(index), offset, size: Math.min(blockSize, fileSize - offset) });
  }
  return blocks;
}

/** Blocks still to send: a staged block counts only if its id and size match the plan. */
export function remainingBlocks(
  plan: PlannedBlock[],
  staged: { blockId: string; sizeBytes: bigint | number }[],
): PlannedBlock[] {
  const have = new Map(staged.map((b) => [b.blockId, Number(b.sizeBytes)]));
  return plan.filter((b) => have.get(b.id) !== b.size);
}

/** The Put Block List body committing the plan's blocks in order. */
export function blockListXml(plan: PlannedBlock[]): string {
  return `<?xml version="1.0" encoding="utf-8"?><BlockList>${plan.map((b) => `<Latest>${b.id}</Latest>`).join("")}</BlockList>`;
}

/**
 * The most of a file's first bytes CreateLoraUpload and CreateUploadUrl take
 * as `head` (1 MiB): what a head check can judge before a block is sent.
 */
export const UPLOAD_HEAD_MAX_BYTES = 1024 * 1024;
