export { loadConfig, type RegistryConfig } from "./config.js";
export { startLoraRegistry, type RunningRegistry } from "./service.js";
export { type AppContext } from "./context.js";
export {
  affinityHash,
  affinityWeight,
  type Candidate,
  rankCandidates,
  type RankOptions,
  type RankedCandidate,
  type WantedContent,
} from "./holdings/rank-candidates.js";
export { runStorageSweep, type SweepOptions } from "./jobs/storage-sweep.js";
export { sweepLockKey } from "./db/queries/storage-sweep.js";
