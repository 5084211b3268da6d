import type { Part } from "./partial-state.js";

/**
 * Consecutive parts one ranged GET covers, from the first byte not yet on
 * disk to the end of the last part: only the first part may be partly done.
 */
export interface Run {
  parts: Part[];
  from: number;
  to: number;
}

/**
 * Hands out the parts still missing, front to back, as runs for ranged GETs.
 * Each run takes about 1/(2 × connections) of the parts nobody has taken yet
 * (at least one): the first requests are long, so each connection pays few
 * round trips, and the last ones a single part, so the connections finish
 * together ("guided self-scheduling", Polychronopoulos & Kuck, 1987). Going
 * front to back keeps the hashed prefix growing while bytes arrive.
 */
export class RunPlan {
  private next = 0;

  constructor(private readonly parts: Part[]) {
    this.skipComplete();
  }

  /** Parts not yet handed out that still miss bytes. */
  get pending(): number {
    let n = 0;
    for (let i = this.next; i < this.parts.length; i++) if (!complete(this.parts[i] as Part)) n++;
    return n;
  }

  /** The next run for one of `connections` connections, or undefined when every missing part is taken. */
  take(connections: number): Run | undefined {
    this.skipComplete();
    const first = this.parts[this.next];
    if (!first) return undefined;
    const want = Math.max(1, Math.ceil((this.parts.length - this.next) / (2 * Math.max(1, connections))));
    const run = [first];
    this.next++;
    while (run.length < want) {
      const p = this.parts[this.next];
      // A run is one contiguous range: it stops before a part that already holds bytes.
      if (!p || p.done > 0) break;
      run.push(p);
      this.next++;
    }
    const last = run[run.length - 1] as Part;
    return { parts: run, from: first.start + first.done, to: last.end };
  }

  private skipComplete(): void {
    while (this.next < this.parts.length && complete(this.parts[this.next] as Part)) this.next++;
  }
}

const complete = (p: Part) => p.done >= p.end - p.start;
