import { compulsory, replayBelady } from "../cache-policy/belady.js";
import type { Outcome } from "../cache-policy/outcome.js";
import { replayOnMachineCache } from "../cache-policy/real-cache.js";
import { generateTrace, type TraceSpec } from "../cache-policy/trace.js";
import { table } from "../harness/report.js";
import type { Suite } from "../harness/suite.js";

const CACHE_GIB = 50;
const GIB = 1024 ** 3;
/** GDSF becomes the default only if it misses at least this much fewer bytes than LRU on every trace. */
const REQUIRED_GAIN = 0.1;

/** Skews × two kinds of locality: a steady node (few long sessions) and a busy one (many short ones). */
function specs(jobs: number): TraceSpec[] {
  const base = { users: 3000, lorasPerUser: 5, minBytes: 50e6, maxBytes: 900e6, jobs };
  return [
    { locality: "steady", sessions: 8, sessionJobs: 15 },
    { locality: "busy", sessions: 32, sessionJobs: 4 },
  ].flatMap(({ locality, sessions, sessionJobs }, l) =>
    [0.6, 0.9, 1.2].map((skew, k) => ({
      ...base,
      name: `${locality}, Zipf ${skew}`,
      skew,
      sessions,
      sessionJobs,
      seed: 1000 + 10 * l + k,
    })),
  );
}

const pct = (x: number) => `${(100 * x).toFixed(1)} %`;

/**
 * Byte and object hit ratios of LRU and GDSF through the machine cache's own
 * eviction code (lora_eviction_policy), with Belady's MIN as the bound and
 * the compulsory misses (first uses) as the floor, on each trace.
 */
export const cachePolicySuite: Suite = {
  id: "cache-policy",
  title: "Cache policy study: LRU vs GDSF vs Belady's MIN on Zipf traces, 50 GiB",
  needsEnvironment: false,
  async run(ctx) {
    const rows: { spec: TraceSpec; requests: number; lru: Outcome; gdsf: Outcome; min: Outcome; first: Outcome }[] = [];
    let replaySeconds = 0;
    for (const spec of specs(ctx.sizes.policyJobs)) {
      const trace = generateTrace(spec);
      const lru = await replayOnMachineCache(trace, "lru", CACHE_GIB);
      const gdsf = await replayOnMachineCache(trace, "gdsf", CACHE_GIB);
      replaySeconds += lru.seconds + gdsf.seconds;
      const min = replayBelady(trace, CACHE_GIB * GIB);
      const requests = trace.jobs.reduce((n, j) => n + j.length, 0);
      rows.push({ spec, requests, lru: lru.outcome, gdsf: gdsf.outcome, min, first: compulsory(trace) });
      ctx.log(
        `${spec.name}: byte miss LRU ${pct(lru.outcome.byteMissRatio)}, GDSF ${pct(gdsf.outcome.byteMissRatio)}, ` +
          `MIN ${pct(min.byteMissRatio)} (${(lru.seconds + gdsf.seconds).toFixed(0)} s)`,
      );
    }
    const gain = (r: (typeof rows)[number]) => 1 - r.gdsf.byteMissRatio / r.lru.byteMissRatio;
    const wins = rows.every((r) => gain(r) >= REQUIRED_GAIN);
    const first = rows[0]!;
    return {
      data: { gdsfShouldBeDefault: wins },
      figures: rows.map((r) => ({
        benchmark: `Cache policy, ${r.spec.name}: GDSF vs LRU byte miss ratio`,
        measured: `GDSF ${pct(r.gdsf.byteMissRatio)}`,
        baseline: `LRU ${pct(r.lru.byteMissRatio)} (MIN ${pct(r.min.byteMissRatio)})`,
        ratio: r.gdsf.byteMissRatio / r.lru.byteMissRatio,
        ratioOf: "byte miss ratio",
        target: `≤ ${(1 - REQUIRED_GAIN).toFixed(2)} to become the default`,
      })),
      details: [
        `Traces: ${first.spec.users.toLocaleString("en")} users with 1 + geometric (mean ${first.spec.lorasPerUser}) ` +
          `LoRAs each, sizes log-uniform ${first.spec.minBytes / 1e6}–${first.spec.maxBytes / 1e6} MB; user activity ` +
          `and each user's choice of LoRA Zipf-distributed with the trace's skew; jobs come from interleaved ` +
          `sessions (one user each, geometric length) and name 1–3 of that user's LoRAs (60/30/10 %). "steady": ` +
          `8 sessions of mean 15 jobs at a time; "busy": 32 sessions of mean 4 jobs. ${ctx.sizes.policyJobs.toLocaleString("en")} ` +
          `jobs per trace, the first quarter as warm-up (not counted). Cache: lora_cache_max_gb = ${CACHE_GIB} (GiB).`,
        "",
        `LRU and GDSF are the machine cache's own code: its SpaceManager and Evictor over a real model_cache.db ` +
          `(size-only rows, no files), the policy chosen by the lora_eviction_policy setting, the running job's ` +
          `LoRAs pinned. MIN (Belady: evict what is used again furthest in the future) is simulated on the same ` +
          `capacity and pins. "first use" = misses no cache avoids. Replays through the service code took ` +
          `${replaySeconds.toFixed(0)} s in all.`,
        "",
        table(
          [
            "trace",
            "requests",
            "byte hit LRU",
            "byte hit GDSF",
            "byte hit MIN",
            "object hit LRU",
            "object hit GDSF",
            "object hit MIN",
            "first-use misses (bytes)",
            "GDSF ÷ LRU byte misses",
            "LRU ÷ MIN byte misses",
          ],
          rows.map((r) => [
            r.spec.name,
            r.requests.toLocaleString("en"),
            pct(r.lru.byteHitRatio),
            pct(r.gdsf.byteHitRatio),
            pct(r.min.byteHitRatio),
            pct(r.lru.objectHitRatio),
            pct(r.gdsf.objectHitRatio),
            pct(r.min.objectHitRatio),
            pct(r.first.byteMissRatio),
            (r.gdsf.byteMissRatio / r.lru.byteMissRatio).toFixed(3),
            (r.lru.byteMissRatio / r.min.byteMissRatio).toFixed(3),
          ]),
        ),
        "",
        wins
          ? `GDSF misses at least ${pct(REQUIRED_GAIN)} fewer bytes than LRU on every trace: it should be the default.`
          : `GDSF does not miss ${pct(REQUIRED_GAIN)} fewer bytes than LRU on every trace ` +
            `(gain per trace: ${rows.map((r) => pct(gain(r))).join(", ")}): LRU stays the default; ` +
            `\`lora_eviction_policy = gdsf\` (or LORA_EVICTION_POLICY=gdsf) selects GDSF.`,
      ].join("\n"),
    };
  },
};
