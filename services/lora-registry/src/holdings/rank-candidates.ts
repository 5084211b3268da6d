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

export interface RankOptions {
  /**
   * Home-node affinity (the job's user): among candidates holding equally
   * many of the job's bytes, the one this key weighs most on comes first
   * (rendezvous hashing), so a user's misses go to the same few nodes while
   * they are free, and their LoRAs stay cached there instead of evicting
   * others' everywhere.
   */
  affinityKey?: string;
}

/** FNV-1a (32 bits) of a string: the rendezvous hashes' input. */
export function affinityHash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/**
 * Rendezvous (highest random weight, Thaler & Ravishankar) weight of a
 * machine for a key, from their affinityHash: murmur3's 32-bit finaliser of
 * the pair, so every machine's weight for a key is independent of the others'.
 */
export function affinityWeight(keyHash: number, machineHash: number): number {
  let h = (keyHash ^ Math.imul(machineHash, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * The placement order: reporting machines first; then most bytes of the
 * job's LoRAs already cached; then, with an affinity key, the key's
 * rendezvous weight; then most free cache space (room without evicting);
 * then least recent eviction pressure; ties keep the candidates' order, so
 * the caller's own preference (least loaded first, say) decides among
 * equals. `holds(c, i)` says whether candidate c holds wanted[i] (with the
 * current content). The placement RPC and the fleet simulation both rank
 * with this function.
 */
export function rankCandidates<C extends Candidate>(
  candidates: readonly C[],
  wanted: readonly WantedContent[],
  holds: (candidate: C, index: number) => boolean,
  opts: RankOptions = {},
): RankedCandidate<C>[] {
  const keyHash = opts.affinityKey === undefined ? undefined : affinityHash(opts.affinityKey);
  const ranked: (RankedCandidate<C> & { order: number; weight: number })[] = candidates.map((candidate, order) => {
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
    const weight = keyHash === undefined ? 0 : affinityWeight(keyHash, affinityHash(candidate.machineId));
    return { candidate, cachedBytes, downloadBytes, downloads, order, weight };
  });
  ranked.sort(
    (a, b) =>
      Number(b.candidate.reporting) - Number(a.candidate.reporting) ||
      b.cachedBytes - a.cachedBytes ||
      b.weight - a.weight ||
      b.candidate.freeCacheBytes - a.candidate.freeCacheBytes ||
      a.candidate.evictedBytes1h - b.candidate.evictedBytes1h ||
      a.order - b.order,
  );
  return ranked;
}
