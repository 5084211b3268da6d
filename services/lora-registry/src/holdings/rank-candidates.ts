/** A machine a job could run on, as the ranking sees it. */
export interface Candidate {
  machineId: string;
  /** In the index (reporting recently); a machine the index does not know comes after every one it knows. */
  reporting: boolean;
  freeCacheBytes: number;
  evictedBytes1h: number;
}

/** One LoRA of the job: its size (0 when unknown). */
export interface WantedContent {
  sizeBytes: number;
}

export interface RankedCandidate<C extends Candidate> {
  candidate: C;
  cachedBytes: number;
  downloadBytes: number;
  /** Indexes into `wanted` of what it would have to download. */
  downloads: number[];
}

/**
 * The placement order: reporting machines first; then most bytes of the
 * job's LoRAs already cached; then most free cache space (room without
 * evicting); then least recent eviction pressure; ties keep the
 * candidates' order, so the caller's own preference (least loaded first,
 * say) decides among equals. `holds(c, i)` says whether candidate c holds
 * wanted[i] (with the current content). The placement RPC and the fleet
 * simulation both rank with this function.
 */
export function rankCandidates<C extends Candidate>(
  candidates: readonly C[],
  wanted: readonly WantedContent[],
  holds: (candidate: C, index: number) => boolean,
): RankedCandidate<C>[] {
  const ranked: (RankedCandidate<C> & { order: number })[] = candidates.map((candidate, order) => {
    let cachedBytes = 0;
    let downloadBytes = 0;
    const downloads: number[] = [];
    for (let i = 0; i < wanted.length; i++) {
      const size = wanted[i]!.sizeBytes;
      if (candidate.reporting && holds(candidate, i)) cachedBytes += size;
      else {
        downloadBytes += size;
        downloads.push(i);
      }
    }
    return { candidate, cachedBytes, downloadBytes, downloads, order };
  });
  ranked.sort(
    (a, b) =>
      Number(b.candidate.reporting) - Number(a.candidate.reporting) ||
      b.cachedBytes - a.cachedBytes ||
      b.candidate.freeCacheBytes - a.candidate.freeCacheBytes ||
      a.candidate.evictedBytes1h - b.candidate.evictedBytes1h ||
      a.order - b.order,
  );
  return ranked;
}
