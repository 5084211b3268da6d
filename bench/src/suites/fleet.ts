import { DEFAULT_CACHE_GIB } from "@emprops/machine-cache/bench";
import { validateLruModel } from "../fleet/lru-model.js";
import {
  type FleetOutcome,
  type FleetSpec,
  generateFleetTrace,
  type Routing,
  simulateFleet,
} from "../fleet/simulate.js";
import { table } from "../harness/report.js";
import type { Mode, Suite } from "../harness/suite.js";

const GIB = 1024 ** 3;

function spec(mode: Mode): FleetSpec {
  const base = {
    poolSize: 100,
    cacheBytes: DEFAULT_CACHE_GIB * GIB,
    lorasPerUser: 3,
    sharedLoras: 500,
    userSkew: 0.9,
    sharedSkew: 1.0,
    minBytes: 50e6,
    maxBytes: 900e6,
    sessionJobs: 10,
    switchChance: 0.1,
    sharedInWorkflow: 0.3,
    gpuFixedSeconds: 20,
    gpuMeanSeconds: 20,
    thinkSeconds: 30,
    utilisation: 0.35,
    blobStreamRate: 100e6,
    peerLinkRate: 1e9,
    affinity: true,
    seed: 1600,
  };
  return mode === "full"
    ? { ...base, nodes: 1000, users: 60_000, hours: 16, warmupHours: 4 }
    : { ...base, nodes: 50, poolSize: 10, users: 3_000, sharedLoras: 50, hours: 6, warmupHours: 1 };
}

const ROUTINGS: Routing[] = ["random", "least-loaded", "placement"];
const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
const q = (sorted: Float64Array, p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? 0;
const secs = (x: number) => `${x.toFixed(1)} s`;

/**
 * A fleet of nodes with the machine cache's LRU policy, a day of bursty
 * user sessions, and three routers: random, least loaded, and the placement
 * RPC's ranking; each with and without peer fetch inside a pool.
 */
export const fleetSuite: Suite = {
  id: "fleet",
  title: "Fleet simulation: random vs least-loaded vs placement routing, with and without peer fetch",
  needsEnvironment: false,
  async run(ctx) {
    const s = spec(ctx.mode);
    const compared = await validateLruModel({ jobs: ctx.mode === "full" ? 3000 : 600, cacheGiB: 8, seed: 7 });
    ctx.log(`  LRU model matches the machine cache's SpaceManager on ${compared} requests`);
    const trace = generateFleetTrace(s);
    const jobsEstimate = trace.sessions.length * s.sessionJobs;
    ctx.log(`  ${trace.sessions.length.toLocaleString("en")} sessions (~${jobsEstimate.toLocaleString("en")} jobs)`);
    const runs = new Map<Routing, FleetOutcome>();
    for (const routing of ROUTINGS) {
      const o = simulateFleet(trace, routing);
      runs.set(routing, o);
      ctx.log(`  ${routing}: ${o.jobs.toLocaleString("en")} jobs counted, ${o.seconds.toFixed(0)} s`);
    }
    const random = runs.get("random")!;
    const placement = runs.get("placement")!;
    const perNodeDay = (x: number, o: FleetOutcome) => x / s.nodes / o.countedDays;
    const egress = (o: FleetOutcome, peers: boolean) => perNodeDay(peers ? o.blobBytesWithPeers : o.blobBytes, o);
    const repeat = (o: FleetOutcome) => o.repeatHits / Math.max(1, o.repeatRefs);
    const evictions = (o: FleetOutcome) => perNodeDay(o.evictions, o);
    const gb = (x: number) => `${(x / 1e9).toFixed(1)} GB`;
    const rows = ROUTINGS.flatMap((routing) => {
      const o = runs.get(routing)!;
      return [false, true].map((peers) => [
        `${routing}${peers ? " + peer fetch" : ""}`,
        pct(o.hitBytes / o.requestedBytes),
        pct(repeat(o)),
        gb(egress(o, peers)),
        `${(egress(random, false) / Math.max(1, egress(o, peers))).toFixed(1)}×`,
        peers ? gb(perNodeDay(o.peerBytes, o)) : "—",
        evictions(o).toFixed(1),
        secs(q(peers ? o.waitsWithPeers : o.waits, 0.5)),
        secs(q(peers ? o.waitsWithPeers : o.waits, 0.95)),
        secs(o.queueP95),
      ]);
    });
    const egressGain = egress(random, false) / egress(placement, false);
    const egressGainPeers = egress(random, false) / egress(placement, true);
    const met = (ok: boolean) => (ok ? "met" : "**missed**");
    const repeatOk = repeat(placement) >= 0.8;
    const evictionsOk = evictions(placement) < 5;
    const judged = ctx.mode === "full";
    const reason = (ok: boolean, why: string) => (judged ? `${met(ok)}${ok ? "" : `: ${why}`}` : "(quick: not judged)");
    return {
      figures: [
        {
          benchmark: "Fleet: repeat-workflow hit ratio, placement vs random routing",
          measured: `placement ${pct(repeat(placement))}`,
          baseline: `random ${pct(repeat(random))}`,
          ratio: repeat(placement),
          ratioOf: "placement's repeat-workflow hit ratio",
          target: "≥ 0.80",
        },
        {
          benchmark: "Fleet: blob egress per node per day, random vs placement (no peer fetch)",
          measured: `placement ${gb(egress(placement, false))}`,
          baseline: `random ${gb(egress(random, false))}`,
          ratio: egressGain,
          ratioOf: "random ÷ placement egress",
          target: "≥ 5",
        },
        {
          benchmark: "Fleet: blob egress per node per day, random vs placement + peer fetch",
          measured: `placement + peers ${gb(egress(placement, true))}`,
          baseline: `random ${gb(egress(random, false))}`,
          ratio: egressGainPeers,
          ratioOf: "random ÷ placement egress",
          target: "≥ 5",
        },
        {
          benchmark: "Fleet: evictions per node per day at 50 GiB, placement vs random",
          measured: `placement ${evictions(placement).toFixed(1)}`,
          baseline: `random ${evictions(random).toFixed(1)}`,
          ratio: evictions(placement) / 5,
          ratioOf: "evictions ÷ the 5 a day budget",
          target: "≤ 1",
        },
      ],
      details: [
        `${s.nodes.toLocaleString("en")} nodes in pools of ${s.poolSize}, each with lora_cache_max_gb = ` +
          `${s.cacheBytes / GIB} (the setting's default) and the machine cache's LRU policy; the in-memory model of ` +
          `it matched the real SpaceManager over model_cache.db (\`@emprops/machine-cache/bench\` ` +
          `startEvictionReplay) hit for hit and eviction for eviction on ${compared.toLocaleString("en")} requests ` +
          `in this run. Caches start full (drawn from the same popularity as the jobs); ${s.hours} h are ` +
          `simulated at a steady session rate, the first ${s.warmupHours} h not counted; "per day" figures are ` +
          `the counted hours' totals scaled to 24 h.`,
        "",
        `Trace (seed ${s.seed}, the same for every router): ${s.users.toLocaleString("en")} users with 1 + ` +
          `geometric (mean ${s.lorasPerUser}) LoRAs each and ${s.sharedLoras} shared LoRAs, sizes log-uniform ` +
          `${s.minBytes / 1e6}–${s.maxBytes / 1e6} MB; sessions arrive as a Poisson process (a user drawn Zipf ` +
          `${s.userSkew}) at the rate that keeps ${pct(s.utilisation)} of the fleet busy; a session runs 1 + ` +
          `geometric (mean ${s.sessionJobs}) jobs, each ${s.gpuFixedSeconds} s + exponential (mean ` +
          `${s.gpuMeanSeconds} s) of GPU time after its LoRAs are present, the next one ${s.thinkSeconds} s ` +
          `(exponential mean) after the last ended; a job uses the session's workflow (1–2 of the user's LoRAs, ` +
          `Zipf ${s.userSkew}, and in ${pct(s.sharedInWorkflow)} of workflows one shared LoRA, Zipf ` +
          `${s.sharedSkew}) and switches to another with chance ${pct(s.switchChance)}. A repeat workflow is a job ` +
          `whose user ran the same set of LoRAs before. ${trace.sessions.length.toLocaleString("en")} sessions.`,
        "",
        `Routers: random (any node, busy or not); least-loaded (the node free soonest); placement (the ` +
          `registry's own rankCandidates over the free nodes holding any of the job's LoRAs (what FindLoraHolders ` +
          `answers) and every free node, with home_affinity: ranked by the bytes of the job's LoRAs each holds, ` +
          `then the user's rendezvous weight for the node (so a user's misses land on the same few nodes while ` +
          `they are free), then free cache space, then bytes evicted in the last hour; ` +
          `${s.affinity ? "with" : "without"} affinity in this run). Peer fetch: ` +
          `a miss that another node of the pool holds comes over the node's ${s.peerLinkRate / 1e9} GB/s peer link ` +
          `(the pool's copies summed), every other miss from Blob Storage at ${s.blobStreamRate / 1e6} MB/s per ` +
          `stream (a job's LoRAs in parallel). The schedule is that without peer fetch; with it the same jobs' ` +
          `LoRA waits are recomputed. "LoRA wait" is the time a job waits for its LoRAs once on its node; ` +
          `"queue p95" the time it waited for the node.`,
        "",
        table(
          [
            "routing",
            "fleet byte hit ratio",
            "repeat-workflow hit ratio",
            "blob egress / node / day",
            "egress: random ÷ this",
            "peer bytes / node / day",
            "evictions / node / day",
            "LoRA wait p50",
            "LoRA wait p95",
            "queue p95",
          ],
          rows,
        ),
        "",
        `Misses of a LoRA no node held at the time (its first use in the fleet, or every copy evicted), which no ` +
          `choice of node for that job avoids and for which a full cache evicts: ${perNodeDay(placement.fleetColdMisses, placement).toFixed(1)} ` +
          `per node per day with placement, ${perNodeDay(random.fleetColdMisses, random).toFixed(1)} with random routing.`,
        "",
        `Targets: repeat-workflow hit ratio ≥ 80 % with placement — ${reason(repeatOk, "placement's nodes are busy when a session's next job arrives, so it lands elsewhere")}; ` +
          `blob egress ≥ 5× lower than random routing at equal cache size — placement alone ${egressGain.toFixed(1)}× ` +
          `(${reason(egressGain >= 5, "first uses and LoRAs used once miss under any routing")}), with peer fetch ` +
          `${egressGainPeers.toFixed(1)}× (${reason(egressGainPeers >= 5, "first uses of a LoRA no pool peer holds still come from the blob")}); ` +
          `evictions < 5 per node per day at ${s.cacheBytes / GIB} GiB — ${evictions(placement).toFixed(1)} with placement ` +
          `(${reason(evictionsOk, `the day's new LoRAs per node exceed what a full cache takes without evicting: ${perNodeDay(placement.fleetColdMisses, placement).toFixed(1)} misses per node per day are of LoRAs no node held, which the job downloads wherever it runs and a full cache evicts for`)}).`,
      ].join("\n"),
    };
  },
};
