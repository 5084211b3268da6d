import { Outcome, warmupJobs } from "./outcome.js";
import type { Trace } from "./trace.js";

/**
 * Belady's MIN with sizes: when room is needed, evict the cached LoRA whose
 * next use is furthest in the future (never used again first), never one of
 * the running job's. It needs the future, so only the simulator has it; with
 * variable sizes it is the customary upper bound, not a proven optimum.
 */
export function replayBelady(trace: Trace, capacityBytes: number): Outcome {
  const requests = trace.jobs.flatMap((job, j) => job.map((lora) => ({ lora, job: j })));
  const nextUse = new Array<number>(requests.length);
  const seen = new Map<number, number>();
  for (let i = requests.length - 1; i >= 0; i--) {
    const lora = requests[i]!.lora;
    nextUse[i] = seen.get(lora) ?? Infinity;
    seen.set(lora, i);
  }
  const cached = new Map<number, number>();
  let used = 0;
  const outcome = new Outcome();
  const warm = warmupJobs(trace.jobs.length);
  for (const [i, { lora, job }] of requests.entries()) {
    const size = trace.loras[lora]!.sizeBytes;
    const counted = job >= warm;
    if (cached.has(lora)) {
      if (counted) outcome.count(true, size);
      cached.set(lora, nextUse[i]!);
      continue;
    }
    if (counted) outcome.count(false, size);
    const running = new Set(trace.jobs[job]);
    while (used + size > capacityBytes) {
      let victim = -1;
      let furthest = -1;
      for (const [other, next] of cached) {
        if (!running.has(other) && next > furthest) {
          furthest = next;
          victim = other;
        }
      }
      if (victim < 0) throw new Error("the running job alone does not fit the cache");
      cached.delete(victim);
      used -= trace.loras[victim]!.sizeBytes;
      if (counted) outcome.evictions++;
    }
    cached.set(lora, nextUse[i]!);
    used += size;
  }
  return outcome;
}

/** Misses no cache can avoid: the first use of each LoRA (counted after the warm-up like the others). */
export function compulsory(trace: Trace): Outcome {
  const seen = new Set<number>();
  const outcome = new Outcome();
  const warm = warmupJobs(trace.jobs.length);
  for (const [j, job] of trace.jobs.entries()) {
    for (const lora of job) {
      const hit = seen.has(lora);
      seen.add(lora);
      if (j >= warm) outcome.count(hit, trace.loras[lora]!.sizeBytes);
    }
  }
  return outcome;
}
