/** Nearest-rank percentile (p in 0..100) of unsorted samples. */
export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

export const median = (samples: number[]): number => percentile(samples, 50);

/** Bytes as decimal megabytes. */
export const mb = (bytes: number): number => bytes / 1e6;

export const MiB = 1024 * 1024;
