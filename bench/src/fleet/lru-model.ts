import path from "node:path";
import { startEvictionReplay } from "@emprops/machine-cache/bench";
import { prng } from "@emprops/testkit";
import { zipf } from "../cache-policy/trace.js";

/**
 * One node's LoRA cache as the machine cache's SpaceManager runs it with
 * lora_eviction_policy = lru and min_free_space_gb = 0: a miss that does not
 * fit evicts the fewest least recently used files (last_used, then the
 * older row) that free enough, never a file of the running job; every file
 * of a job is touched at the job's time. In memory, so a thousand nodes can
 * be simulated for a day; `validateLruModel` checks it against the real
 * SpaceManager over model_cache.db on a small trace, request by request.
 */
export class LruNodeCache {
  /** LoRA → its row id; iteration order is eviction order (last_used, then id). */
  private readonly rows = new Map<number, number>();
  private nextId = 1;
  used = 0;

  constructor(
    readonly capacityBytes: number,
    private readonly sizeOf: (lora: number) => number,
  ) {}

  has(lora: number): boolean {
    return this.rows.has(lora);
  }

  /** The job's uses in order: a hit per LoRA or not; `evicted` hears of each victim. */
  runJob(loras: readonly number[], evicted: (lora: number, bytes: number) => void): boolean[] {
    const hits = loras.map((lora) => {
      if (this.rows.has(lora)) return true;
      const size = this.sizeOf(lora);
      const over = this.used + size - this.capacityBytes;
      if (over > 0) {
        const victims: number[] = [];
        let freed = 0;
        for (const other of this.rows.keys()) {
          if (loras.includes(other)) continue;
          victims.push(other);
          freed += this.sizeOf(other);
          if (freed >= over) break;
        }
        if (freed < over) throw new Error("the running job alone does not fit the cache");
        for (const v of victims) {
          this.rows.delete(v);
          this.used -= this.sizeOf(v);
          evicted(v, this.sizeOf(v));
        }
      }
      this.rows.set(lora, this.nextId++);
      this.used += size;
      return false;
    });
    // Touched at one time: among them the older row stays first.
    const touched = [...new Set(loras)].sort((a, b) => this.rows.get(a)! - this.rows.get(b)!);
    for (const lora of touched) {
      const id = this.rows.get(lora)!;
      this.rows.delete(lora);
      this.rows.set(lora, id);
    }
    return hits;
  }

  /** Fills an empty cache (the warm start): files in the given order, oldest first. */
  prefill(loras: Iterable<number>): void {
    for (const lora of loras) {
      if (this.rows.has(lora)) continue;
      if (this.used + this.sizeOf(lora) > this.capacityBytes) return;
      this.rows.set(lora, this.nextId++);
      this.used += this.sizeOf(lora);
    }
  }
}

/**
 * The model and the machine cache's own SpaceManager (startEvictionReplay)
 * on the same trace: every request's hit or miss and the evictions must be
 * the same. Returns the number of requests compared; throws on the first
 * difference.
 */
export async function validateLruModel(opts: { jobs: number; cacheGiB: number; seed: number }): Promise<number> {
  const rnd = prng(opts.seed);
  const sizes = Array.from({ length: 400 }, () => Math.round(Math.exp(Math.log(50e6) + rnd() * Math.log(18))));
  const pick = zipf(sizes.length, 0.8, rnd);
  const jobs = Array.from({ length: opts.jobs }, () => {
    const n = 1 + Math.floor(rnd() * 3);
    return [...new Set(Array.from({ length: n }, pick))];
  });
  const replay = await startEvictionReplay({ policy: "lru", cacheGiB: opts.cacheGiB, start: new Date(2026, 0, 5) });
  try {
    const model = new LruNodeCache(Math.floor(opts.cacheGiB * 1024 ** 3), (l) => sizes[l]!);
    let modelEvictions = 0;
    let compared = 0;
    const file = (l: number) => path.join(replay.loraDir, "users", "u", `${l}.safetensors`);
    for (const [j, job] of jobs.entries()) {
      replay.clock.advance(20_000);
      replay.pin(job.map(file));
      const modelHits = model.runJob(job, () => modelEvictions++);
      for (const [k, lora] of job.entries()) {
        const { hit } = await replay.use(file(lora), sizes[lora]!);
        if (hit !== modelHits[k]) {
          throw new Error(
            `the LRU model differs from the machine cache at job ${j}, LoRA ${lora}: ${modelHits[k]} vs ${hit}`,
          );
        }
        compared++;
      }
      if (replay.evictions() !== modelEvictions) {
        throw new Error(
          `eviction counts differ after job ${j}: model ${modelEvictions}, machine cache ${replay.evictions()}`,
        );
      }
    }
    return compared;
  } finally {
    await replay.close();
  }
}
