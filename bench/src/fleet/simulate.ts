/**
 * The fleet simulation: N nodes, each with the machine cache's LRU policy
 * (LruNodeCache, validated against the real SpaceManager), a day of users'
 * sessions, and a router. The placement router ranks with the registry's
 * own rankCandidates, over what each node holds (what the holdings index
 * would tell it), with the job's user as home-node affinity (RankMachines'
 * home_affinity). Peer fetch is modelled: a miss that another node of the
 * pool holds comes over the pool's link instead of from Blob Storage.
 */
import { affinityHash, affinityWeight, type Candidate, rankCandidates } from "@emprops/lora-registry";
import { prng } from "@emprops/testkit";
import { zipf } from "../cache-policy/trace.js";
import { LruNodeCache } from "./lru-model.js";

export interface FleetSpec {
  nodes: number;
  poolSize: number;
  cacheBytes: number;
  users: number;
  /** Mean LoRAs per user (1 + geometric, at most 40). */
  lorasPerUser: number;
  sharedLoras: number;
  /** Zipf exponents: users' activity, a user's choice among their LoRAs, shared LoRAs' popularity. */
  userSkew: number;
  sharedSkew: number;
  minBytes: number;
  maxBytes: number;
  /** Mean jobs per session (1 + geometric). */
  sessionJobs: number;
  /** Chance that a job of a session switches to another workflow (another set of LoRAs). */
  switchChance: number;
  /** Share of workflows with one shared LoRA besides the user's own. */
  sharedInWorkflow: number;
  /** GPU seconds per job: fixed + exponential mean. */
  gpuFixedSeconds: number;
  gpuMeanSeconds: number;
  /** Seconds between a job's end and the session's next job (exponential mean). */
  thinkSeconds: number;
  /** Fleet utilisation the session rate aims at. */
  utilisation: number;
  /** Simulated hours; the first warmupHours are not counted. */
  hours: number;
  warmupHours: number;
  /** Bytes/s: one blob download stream; a node's peer link. */
  blobStreamRate: number;
  peerLinkRate: number;
  /** Placement ranks with the job's user as its home-node affinity key (rendezvous over the free nodes). */
  affinity: boolean;
  seed: number;
}

export type Routing = "random" | "least-loaded" | "placement";

export interface FleetOutcome {
  routing: Routing;
  jobs: number;
  refs: number;
  hitBytes: number;
  requestedBytes: number;
  repeatRefs: number;
  repeatHits: number;
  evictions: number;
  /** Misses of a LoRA no node held at the time: no routing avoids them, and a full cache evicts for each. */
  fleetColdMisses: number;
  /** Bytes fetched from Blob Storage without peer fetch (every miss), and with it (misses no pool peer held). */
  blobBytes: number;
  blobBytesWithPeers: number;
  peerBytes: number;
  /** LoRA wait of each counted job (s), without and with peer fetch. */
  waits: Float64Array;
  waitsWithPeers: Float64Array;
  /** Jobs that waited for a node (queueing, s), p95. */
  queueP95: number;
  countedDays: number;
  seconds: number;
}

interface Session {
  user: number;
  jobsLeft: number;
  workflow: number[];
}

interface NodeState extends Candidate {
  index: number;
  /** affinityHash of machineId, for picking a user's home node among the free ones. */
  machineHash: number;
  pool: number;
  cache: LruNodeCache;
  freeAt: number;
  /** Evictions in the last hour: [time, bytes] oldest first. */
  recentEvictions: [number, number][];
}

/** The catalog and the sessions: the same for every router of a run. */
export interface FleetTrace {
  spec: FleetSpec;
  sizes: Float64Array;
  /** Session starts (s), users and jobs; workflows are drawn as the session runs, from its own seed. */
  sessions: { start: number; user: number; jobs: number; seed: number }[];
  owned: number[][];
  /** The shared LoRAs are ids users.length.. */
  sharedBase: number;
  /** The warm start: each node's cache filled from the same popularity. */
  prefill: number[][];
}

export function generateFleetTrace(spec: FleetSpec): FleetTrace {
  const rnd = prng(spec.seed);
  const geometric = (mean: number) => Math.floor(-Math.log(1 - rnd()) * mean);
  const size = () => Math.exp(Math.log(spec.minBytes) + rnd() * (Math.log(spec.maxBytes) - Math.log(spec.minBytes)));
  const sizes: number[] = [];
  const owned: number[][] = [];
  for (let u = 0; u < spec.users; u++) {
    const n = 1 + Math.min(39, geometric(spec.lorasPerUser - 1));
    owned.push(Array.from({ length: n }, () => sizes.push(Math.round(size())) - 1));
  }
  const sharedBase = sizes.length;
  for (let s = 0; s < spec.sharedLoras; s++) sizes.push(Math.round(size()));
  const meanJobSeconds = spec.gpuFixedSeconds + spec.gpuMeanSeconds;
  const jobsPerSecond = (spec.utilisation * spec.nodes) / meanJobSeconds;
  const sessionRate = jobsPerSecond / spec.sessionJobs;
  const pickUser = zipf(spec.users, spec.userSkew, rnd);
  const sessions: FleetTrace["sessions"] = [];
  for (let t = 0; t < spec.hours * 3600; t += -Math.log(1 - rnd()) / sessionRate) {
    sessions.push({
      start: t,
      user: pickUser(),
      jobs: 1 + geometric(spec.sessionJobs - 1),
      seed: Math.floor(rnd() * 2 ** 31),
    });
  }
  const pickShared = zipf(spec.sharedLoras, spec.sharedSkew, rnd);
  const prefill = Array.from({ length: spec.nodes }, () => {
    const list: number[] = [];
    let bytes = 0;
    while (bytes < spec.cacheBytes * 1.2) {
      const u = pickUser();
      const lora =
        rnd() < spec.sharedInWorkflow / 2
          ? sharedBase + pickShared()
          : owned[u]![Math.floor(rnd() * owned[u]!.length)]!;
      list.push(lora);
      bytes += sizes[lora]!;
    }
    return list;
  });
  return { spec, sizes: Float64Array.from(sizes), sessions, owned, sharedBase, prefill };
}

/** A binary heap of (time, session) events. */
class Events {
  private readonly times: number[] = [];
  private readonly ids: number[] = [];
  get size() {
    return this.times.length;
  }
  push(time: number, id: number) {
    let i = this.times.length;
    this.times.push(time);
    this.ids.push(id);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (this.times[p]! <= time) break;
      this.times[i] = this.times[p]!;
      this.ids[i] = this.ids[p]!;
      i = p;
    }
    this.times[i] = time;
    this.ids[i] = id;
  }
  pop(): [number, number] {
    const top: [number, number] = [this.times[0]!, this.ids[0]!];
    const t = this.times.pop()!;
    const id = this.ids.pop()!;
    const n = this.times.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const c = l + 1 < n && this.times[l + 1]! < this.times[l]! ? l + 1 : l;
        if (this.times[c]! >= t) break;
        this.times[i] = this.times[c]!;
        this.ids[i] = this.ids[c]!;
        i = c;
      }
      this.times[i] = t;
      this.ids[i] = id;
    }
    return top;
  }
}

const HOUR = 3600;

export function simulateFleet(trace: FleetTrace, routing: Routing): FleetOutcome {
  const started = performance.now();
  const { spec, sizes } = trace;
  const sizeOf = (l: number) => sizes[l]!;
  const rnd = prng(spec.seed + 1);
  const pools = Math.ceil(spec.nodes / spec.poolSize);
  /** Per pool: LoRA → nodes of the pool holding it. */
  const poolHolders = Array.from({ length: pools }, () => new Map<number, number>());
  const nodes: NodeState[] = Array.from({ length: spec.nodes }, (_, index) => ({
    index,
    machineId: `node-${index}`,
    machineHash: affinityHash(`node-${index}`),
    pool: Math.floor(index / spec.poolSize),
    reporting: true,
    freeCacheBytes: spec.cacheBytes,
    evictedBytes1h: 0,
    cache: new LruNodeCache(spec.cacheBytes, sizeOf),
    freeAt: 0,
    recentEvictions: [],
  }));
  /** LoRA → the nodes holding it (what FindLoraHolders answers). */
  const holders = new Map<number, Set<NodeState>>();
  const held = (node: NodeState, lora: number, delta: number) => {
    let set = holders.get(lora);
    if (delta > 0) {
      if (!set) holders.set(lora, (set = new Set()));
      set.add(node);
    } else if (set) {
      set.delete(node);
      if (set.size === 0) holders.delete(lora);
    }
    const m = poolHolders[node.pool]!;
    const n = (m.get(lora) ?? 0) + delta;
    if (n === 0) m.delete(lora);
    else m.set(lora, n);
  };
  for (const node of nodes) {
    node.cache.prefill(trace.prefill[node.index]!);
    // Each LoRA a node holds counts once (a prefill list may repeat one).
    for (const lora of new Set(trace.prefill[node.index]!)) if (node.cache.has(lora)) held(node, lora, 1);
    node.freeCacheBytes = spec.cacheBytes - node.cache.used;
  }

  const warmup = spec.warmupHours * HOUR;
  const end = spec.hours * HOUR;
  const events = new Events();
  const sessions: (Session & { rnd: () => number; pick: () => number })[] = [];
  const seenWorkflows = new Set<string>();
  trace.sessions.forEach((s, i) => {
    const own = trace.owned[s.user]!;
    const srnd = prng(s.seed);
    sessions.push({
      user: s.user,
      jobsLeft: s.jobs,
      workflow: [],
      rnd: srnd,
      pick: zipf(own.length, spec.userSkew, srnd),
    });
    events.push(s.start, i);
  });
  // One Zipf table for the shared LoRAs, drawing with the session's own generator.
  let drawing = rnd;
  const pickShared = zipf(spec.sharedLoras, spec.sharedSkew, () => drawing());
  const pickSharedFor = (srnd: () => number) => {
    drawing = srnd;
    return trace.sharedBase + pickShared();
  };
  const newWorkflow = (s: (typeof sessions)[number]) => {
    const own = trace.owned[s.user]!;
    const set = new Set<number>([own[s.pick()]!]);
    if (own.length > 1 && s.rnd() < 0.4) set.add(own[s.pick()]!);
    if (s.rnd() < spec.sharedInWorkflow) set.add(pickSharedFor(s.rnd));
    return [...set];
  };

  const out: FleetOutcome = {
    routing,
    jobs: 0,
    refs: 0,
    hitBytes: 0,
    requestedBytes: 0,
    repeatRefs: 0,
    repeatHits: 0,
    evictions: 0,
    fleetColdMisses: 0,
    blobBytes: 0,
    blobBytesWithPeers: 0,
    peerBytes: 0,
    waits: new Float64Array(0),
    waitsWithPeers: new Float64Array(0),
    queueP95: 0,
    countedDays: (end - warmup) / 86400,
    seconds: 0,
  };
  const waits: number[] = [];
  const waitsWithPeers: number[] = [];
  const queues: number[] = [];
  const wanted: { sizeBytes: number }[] = [];
  let job: number[] = [];
  let jobUser = 0;

  const route = (now: number): NodeState => {
    if (routing === "random") return nodes[Math.floor(rnd() * nodes.length)]!;
    let best = nodes[0]!;
    for (const n of nodes) if (n.freeAt < best.freeAt) best = n;
    if (routing === "least-loaded") return best;
    // The broker asks who holds the job's LoRAs (FindLoraHolders) and ranks those free now with the other free
    // nodes; when no node is free, with the 32 soonest free. With home affinity (the job's user) ranking puts,
    // among the nodes holding as much, the user's highest-weight one first, so of the free nodes that hold
    // none of the job's LoRAs only that one needs to be a candidate: the first choice is the same. Without
    // it, the first 32 free nodes (node order).
    const picked = new Set<NodeState>();
    for (const lora of job) for (const n of holders.get(lora) ?? []) if (n.freeAt <= now) picked.add(n);
    const affinityKey = spec.affinity ? `user-${jobUser}` : undefined;
    if (affinityKey !== undefined) {
      const keyHash = affinityHash(affinityKey);
      let home: NodeState | undefined;
      let homeWeight = -1;
      for (const n of nodes) {
        if (n.freeAt > now) continue;
        const w = affinityWeight(keyHash, n.machineHash);
        if (w > homeWeight) [home, homeWeight] = [n, w];
      }
      if (home) picked.add(home);
    } else {
      for (let i = 0, free = 0; i < nodes.length && free < 32; i++) {
        if (nodes[i]!.freeAt <= now) {
          picked.add(nodes[i]!);
          free++;
        }
      }
    }
    let candidates = [...picked];
    if (candidates.length === 0) candidates = [...nodes].sort((a, b) => a.freeAt - b.freeAt).slice(0, 32);
    for (const n of candidates) {
      const window = n.recentEvictions;
      while (window.length > 0 && window[0]![0] < now - HOUR) n.evictedBytes1h -= window.shift()![1];
    }
    wanted.length = 0;
    for (const lora of job) wanted.push({ sizeBytes: sizeOf(lora) });
    return rankCandidates(candidates, wanted, (c, i) => c.cache.has(job[i]!), { affinityKey })[0]!.candidate;
  };

  while (events.size > 0) {
    const [now, id] = events.pop();
    if (now >= end) continue;
    const s = sessions[id]!;
    if (s.workflow.length === 0 || s.rnd() < spec.switchChance) s.workflow = newWorkflow(s);
    job = s.workflow;
    jobUser = s.user;
    const key = `${s.user}:${[...job].sort((a, b) => a - b).join(",")}`;
    const repeat = seenWorkflows.has(key);
    seenWorkflows.add(key);
    const node = route(now);
    const counted = now >= warmup;
    const hits = node.cache.runJob(job, (lora, bytes) => {
      held(node, lora, -1);
      node.recentEvictions.push([now, bytes]);
      node.evictedBytes1h += bytes;
      if (counted) out.evictions++;
    });
    let blobMax = 0;
    let blobMaxWithPeers = 0;
    let peerSum = 0;
    job.forEach((lora, k) => {
      const size = sizeOf(lora);
      if (!hits[k]) {
        if (counted && !holders.has(lora)) out.fleetColdMisses++;
        const fromPeer = (poolHolders[node.pool]!.get(lora) ?? 0) > 0;
        held(node, lora, 1);
        blobMax = Math.max(blobMax, size / spec.blobStreamRate);
        if (fromPeer) peerSum += size;
        else blobMaxWithPeers = Math.max(blobMaxWithPeers, size / spec.blobStreamRate);
        if (counted) {
          out.blobBytes += size;
          if (fromPeer) out.peerBytes += size;
          else out.blobBytesWithPeers += size;
        }
      }
      if (counted) {
        out.refs++;
        out.requestedBytes += size;
        if (hits[k]) out.hitBytes += size;
        if (repeat) {
          out.repeatRefs++;
          if (hits[k]) out.repeatHits++;
        }
      }
    });
    node.freeCacheBytes = spec.cacheBytes - node.cache.used;
    const wait = blobMax;
    const waitWithPeers = Math.max(blobMaxWithPeers, peerSum / spec.peerLinkRate);
    const start = Math.max(now, node.freeAt);
    const gpu = spec.gpuFixedSeconds - Math.log(1 - s.rnd()) * spec.gpuMeanSeconds;
    node.freeAt = start + wait + gpu;
    if (counted) {
      out.jobs++;
      waits.push(wait);
      waitsWithPeers.push(waitWithPeers);
      queues.push(start - now);
    }
    if (--s.jobsLeft > 0) events.push(node.freeAt - Math.log(1 - s.rnd()) * spec.thinkSeconds, id);
  }
  out.waits = Float64Array.from(waits).sort();
  out.waitsWithPeers = Float64Array.from(waitsWithPeers).sort();
  const q = Float64Array.from(queues).sort();
  out.queueP95 = q[Math.min(q.length - 1, Math.floor(0.95 * q.length))] ?? 0;
  out.seconds = (performance.now() - started) / 1000;
  return out;
}
