import type { LinkShape } from "@emprops/testkit";
import type { BenchEnvironment } from "./environment.js";
import type { LoraPool } from "./lora-pool.js";

export type Mode = "quick" | "full";

/** Sizes and counts of one mode: full for measurement, quick for CI (same code paths). */
export interface Sizes {
  /** The "500 MB" LoRA: upload, cold fetch, 64 callers, VerifyBlob, memory. */
  mainBytes: number;
  /** Each of the three LoRAs fetched together. */
  threeBytes: number;
  /** The "2 GB" LoRA of the memory figures. */
  bigBytes: number;
  rounds: number;
  /** Cached EnsureLoras and health calls each. */
  latencyCalls: number;
  /** flat_file rows of the two list measurements, and the user's share. */
  listSizes: [number, number];
  listUserLoras: number;
  listRuns: number;
  /** Duration of each closed-loop throughput measurement. */
  rpsSeconds: number;
  /** Jobs per cache-policy trace. */
  policyJobs: number;
}

export const SIZES: Record<Mode, Sizes> = {
  full: {
    mainBytes: 500_000_000,
    threeBytes: 300_000_000,
    bigBytes: 2_000_000_000,
    rounds: 5,
    latencyCalls: 2000,
    listSizes: [10_000, 1_000_000],
    listUserLoras: 1000,
    listRuns: 200,
    rpsSeconds: 10,
    policyJobs: 20_000,
  },
  quick: {
    mainBytes: 24_000_000,
    threeBytes: 8_000_000,
    bigBytes: 48_000_000,
    rounds: 1,
    latencyCalls: 100,
    listSizes: [2_000, 20_000],
    listUserLoras: 200,
    listRuns: 20,
    rpsSeconds: 1,
    policyJobs: 2_000,
  },
};

/** One line of the ratio table: a figure, the baseline measured in the same run, their ratio. */
export interface Figure {
  benchmark: string;
  measured: string;
  baseline: string;
  /** measured ÷ baseline in the figure's own sense (throughput, time, latency, rate, memory). */
  ratio: number;
  /** What the ratio is, e.g. "throughput", "wall time", "p50 latency". */
  ratioOf: string;
  /** The target, if it names one, e.g. "≥ 0.9". */
  target?: string;
}

export interface SuiteReport {
  figures: Figure[];
  /** Markdown: the suite's full table(s) and notes. */
  details: string;
}

export interface SuiteContext {
  mode: Mode;
  sizes: Sizes;
  /** Undefined for suites that need no services. */
  env: BenchEnvironment | undefined;
  loras: LoraPool;
  log(line: string): void;
  /** Where --cpu-prof profiles go. */
  profileDir: string;
  /** The shape of the shaped-link suites' link (`--link`, default CLOUD_LINK). */
  link: Required<LinkShape>;
  /** Results of earlier suites of the run, by suite id (the profile suite reads the step timings). */
  earlier: Map<string, SuiteReport & { data?: unknown }>;
}

export interface Suite {
  id: string;
  title: string;
  /** False: runs without PostgreSQL, NATS, Azurite or services. */
  needsEnvironment: boolean;
  run(ctx: SuiteContext): Promise<SuiteReport & { data?: unknown }>;
}

export function requireEnv(ctx: SuiteContext): BenchEnvironment {
  if (!ctx.env) throw new Error("this suite needs the services");
  return ctx.env;
}
