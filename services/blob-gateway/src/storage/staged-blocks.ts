import type { BlockBlobClient } from "@azure/storage-blob";
import { isNotFound } from "./storage-errors.js";

export interface StagedBlock {
  blockId: string;
  sizeBytes: bigint;
}

/**
 * The blocks Put Block has staged and no block list has committed yet. A blob
 * nobody has written to has none (Get Block List answers 404 for it).
 */
export async function stagedBlocks(blob: BlockBlobClient): Promise<StagedBlock[]> {
  try {
    const list = await blob.getBlockList("all");
    return (list.uncommittedBlocks ?? []).map((b) => ({ blockId: b.name, sizeBytes: BigInt(b.size) }));
  } catch (err) {
    if (isNotFound(err)) return [];
    throw err;
  }
}
