/** Azure's limit on blocks in one block blob. */
export const MAX_BLOCKS_PER_BLOB = 50_000;
const MiB = 1024 * 1024;

/**
 * The Put Block size to recommend for a file: the configured size, or larger
 * (whole MiB) when the file would otherwise need more than 50,000 blocks.
 */
export function recommendedBlockSize(sizeBytes: number, minimum: number): number {
  const needed = Math.ceil(sizeBytes / MAX_BLOCKS_PER_BLOB);
  return Math.max(minimum, Math.ceil(needed / MiB) * MiB);
}
