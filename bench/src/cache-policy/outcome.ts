/** Hits and misses of one policy on one trace, counted after the warm-up. */
export class Outcome {
  hits = 0;
  misses = 0;
  hitBytes = 0;
  missBytes = 0;
  evictions = 0;

  count(hit: boolean, bytes: number): void {
    if (hit) {
      this.hits++;
      this.hitBytes += bytes;
    } else {
      this.misses++;
      this.missBytes += bytes;
    }
  }

  get objectHitRatio(): number {
    return this.hits / (this.hits + this.misses);
  }

  get byteHitRatio(): number {
    return this.hitBytes / (this.hitBytes + this.missBytes);
  }

  get byteMissRatio(): number {
    return 1 - this.byteHitRatio;
  }
}

/** Jobs before this index fill the cache and are not counted. */
export const warmupJobs = (jobs: number) => Math.floor(jobs / 4);
