/**
 * Synthetic request traces of one machine's LoRA cache. Users own their
 * LoRAs (user LoRAs are private); which user runs jobs follows a Zipf law,
 * and so does which of their LoRAs a job uses. Jobs come from a handful of
 * users' sessions at a time (per-user locality): each session is one user
 * running a geometric number of jobs, each naming 1–3 of that user's LoRAs.
 */
import { prng } from "@emprops/testkit";

export interface TraceSpec {
  name: string;
  /** Zipf exponent of user activity and of LoRA use within a user. */
  skew: number;
  /** Sessions interleaved on the machine at any time. */
  sessions: number;
  /** Mean jobs per session. */
  sessionJobs: number;
  users: number;
  /** Mean LoRAs per user (1 + geometric, at most 40). */
  lorasPerUser: number;
  minBytes: number;
  maxBytes: number;
  jobs: number;
  seed: number;
}

export interface Trace {
  spec: TraceSpec;
  /** LoRA i: its owner and size. */
  loras: { user: number; sizeBytes: number }[];
  /** The LoRAs of each job, in order. */
  jobs: number[][];
}

/** Draws ranks 0..n-1 with P(k) ∝ 1 / (k+1)^skew. */
export function zipf(n: number, skew: number, rnd: () => number): () => number {
  const cumulative = new Float64Array(n);
  let total = 0;
  for (let k = 0; k < n; k++) cumulative[k] = total += 1 / Math.pow(k + 1, skew);
  return () => {
    const x = rnd() * total;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cumulative[mid]! < x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

export function generateTrace(spec: TraceSpec): Trace {
  const rnd = prng(spec.seed);
  const geometric = (mean: number) => Math.floor(-Math.log(1 - rnd()) * mean);
  const loras: Trace["loras"] = [];
  const owned: number[][] = [];
  for (let user = 0; user < spec.users; user++) {
    const mine: number[] = [];
    const count = 1 + Math.min(39, geometric(spec.lorasPerUser - 1));
    for (let j = 0; j < count; j++) {
      // Log-uniform between the smallest and largest LoRA.
      const size = Math.exp(Math.log(spec.minBytes) + rnd() * (Math.log(spec.maxBytes) - Math.log(spec.minBytes)));
      mine.push(loras.length);
      loras.push({ user, sizeBytes: Math.round(size) });
    }
    owned.push(mine);
  }
  const pickUser = zipf(spec.users, spec.skew, rnd);
  const pickWithin = owned.map((mine) => zipf(mine.length, spec.skew, rnd));
  const session = () => ({ user: pickUser(), left: 1 + geometric(spec.sessionJobs - 1) });
  const active = Array.from({ length: spec.sessions }, session);
  const jobs: number[][] = [];
  for (let j = 0; j < spec.jobs; j++) {
    const slot = Math.floor(rnd() * spec.sessions);
    const s = active[slot]!;
    const r = rnd();
    const refs = r < 0.6 ? 1 : r < 0.9 ? 2 : 3;
    const job = new Set<number>();
    for (let k = 0; k < refs; k++) job.add(owned[s.user]![pickWithin[s.user]!()]!);
    jobs.push([...job]);
    if (--s.left <= 0) active[slot] = session();
  }
  return { spec, loras, jobs };
}
