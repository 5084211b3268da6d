/**
 * Paths eviction must not touch right now: the files of every EnsureLoras
 * batch in progress (counted, since batches overlap).
 */
export class Pins {
  private readonly counts = new Map<string, number>();

  /** Pins the paths; the returned function unpins them once. */
  pin(paths: Iterable<string>): () => void {
    const list = [...paths];
    for (const p of list) this.counts.set(p, (this.counts.get(p) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      for (const p of list) {
        const n = (this.counts.get(p) ?? 1) - 1;
        if (n <= 0) this.counts.delete(p);
        else this.counts.set(p, n);
      }
    };
  }

  has(path: string): boolean {
    return this.counts.has(path);
  }
}
