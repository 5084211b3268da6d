/**
 * The machine cache against the real registry, gateway and Azurite, measured
 * side by side in one run:
 *   1. cold fetch of a 500 MiB LoRA through EnsureLoras against one curl
 *      stream of the same signed URL (its CPU counted with a sha256sum of the
 *      file), aria2c with the connections and part size the cache used, and
 *      a plain download with the same HTTP client (undici);
 *   2. three LoRAs in one EnsureLoras against three sequential requests;
 *   3. a cached EnsureLoras against a health check on the same server (p50/p99);
 *   4. the service's peak memory while it fetches a 2 GB LoRA.
 *
 *   npm run bench -w services/machine-cache
 *   BENCH_SIZE_MIB=100 BENCH_BIG_BYTES=500000000 BENCH_ROUNDS=1 npm run bench -w services/machine-cache
 *
 * The shaped-link suites of `npm run bench` run the same steps through a
 * proxy shaped like a cloud link (bench/src/suites/shaped-link.ts).
 *
 * Every service runs as a child process (its built dist/main.js, the shared
 * harness in bench/), so the machine cache's memory is its own: VmRSS sampled
 * every 10 ms and VmHWM from /proc. Every file is deleted at the end. The
 * suite (`npm run bench`) runs the same measurements with the sizes of its mode.
 */
import { createWriteStream } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import { pipeline } from "node:stream/promises";
import { type Dispatcher, request } from "undici";
import { connectJson } from "../../../bench/src/harness/connect-json.js";
import { coresDuring, cpuSecondsOf, type Watched } from "../../../bench/src/harness/cpu.js";
import {
  aria2Download,
  curlDownload,
  ensureDownloadTools,
  removeDownload,
  sha256sum,
} from "../../../bench/src/harness/download-tools.js";
import { startBenchEnvironment } from "../../../bench/src/harness/environment.js";
import { type PeakMemory, peakMemoryDuring } from "../../../bench/src/harness/memory.js";
import { mb, median, MiB, percentile } from "../../../bench/src/harness/stats.js";
import { rotatedRounds } from "../../../bench/src/harness/rounds.js";
import { signedReadUrl } from "../../../bench/src/harness/shaped-link.js";
import { uploadLora } from "../../../bench/src/harness/upload.js";

/** A machine cache under measurement. */
export interface MachineCacheUnderTest {
  url: string;
  pid: number;
  /** The last few kilobytes it logged. */
  output(): string;
}

interface EnsuredJson {
  error?: unknown;
  cacheHit?: boolean;
  bytesDownloaded?: string;
}

/** The calls the measurements make, as ComfyUI's node makes them (Connect JSON over HTTP/1.1). */
export interface MachineCacheCalls {
  ensure(ids: string[], job: string): Promise<{ ms: number; results: EnsuredJson[] }>;
  evict(ids: string[]): Promise<void>;
  health(): Promise<{ ms: number }>;
}

export function machineCacheCalls(
  cache: MachineCacheUnderTest,
  opts: { userId: string; machineToken: string; adminToken: string; dispatcher: Dispatcher },
): MachineCacheCalls {
  const asMachine = connectJson(cache.url, opts.machineToken, opts.dispatcher);
  const asAdmin = connectJson(cache.url, opts.adminToken, opts.dispatcher);
  const refs = (ids: string[]) => ids.map((id) => ({ source: "LORA_SOURCE_USER", identifier: id }));
  return {
    ensure: async (ids, job) => {
      const { ms, json } = await asMachine("emprops.cache.v1.MachineCacheService/EnsureLoras", {
        jobId: job,
        userId: opts.userId,
        refs: refs(ids),
      });
      return { ms, results: json.results as EnsuredJson[] };
    },
    evict: async (ids) => {
      await asAdmin("emprops.cache.v1.MachineCacheService/EvictLoras", { refs: refs(ids) });
    },
    health: async () => ({ ms: (await asMachine("grpc.health.v1.Health/Check", {})).ms }),
  };
}

/** Fails unless all `n` references were downloaded (no error, no hit). */
export function expectDownloaded(results: EnsuredJson[], n: number): void {
  if (results.length !== n || results.some((r) => r.error || r.cacheHit)) {
    throw new Error(`unexpected EnsureLoras answer: ${JSON.stringify(results)}`);
  }
}

/** What one step of a measured round took: wall time, and the CPU time of the process (or tool) doing it. */
export interface StepRun {
  seconds: number;
  cpuSeconds?: number;
  /** Cores each watched process (and, as "machine", the whole machine) kept busy meanwhile. */
  cores?: Record<string, number>;
}

/** Named steps, each run once per round. */
export type Steps = Record<string, () => Promise<StepRun>>;

/**
 * Every step once per round, interleaved (each round compares the same moment
 * of a shared machine) and rotated; what each step measured, by label, with
 * the cores the `watched` processes and the machine used during it.
 */
export async function measureRounds(
  steps: Steps,
  rounds: number,
  opts: { log?: (line: string) => void; what?: string; watched?: Watched[] } = {},
): Promise<Record<string, StepRun[]>> {
  const rows: Record<string, StepRun[]> = Object.fromEntries(Object.keys(steps).map((label) => [label, []]));
  await rotatedRounds(
    rounds,
    Object.entries(steps).map(([label, step]) => async () => {
      const { result, cores } = await coresDuring(opts.watched ?? [], step);
      rows[label]!.push({ ...result, cores });
    }),
    (round) => opts.log?.(`${opts.what ?? "round"} ${round}/${rounds}`),
  );
  return rows;
}

/** The copy evicted, then one EnsureLoras that downloads it; with the machine cache's CPU seconds meanwhile. */
export async function coldEnsure(
  calls: MachineCacheCalls,
  cache: MachineCacheUnderTest,
  loraId: string,
  job: string,
): Promise<StepRun> {
  await calls.evict([loraId]);
  const before = cpuSecondsOf(cache.pid);
  const { ms, results } = await calls.ensure([loraId], job);
  const cpuSeconds = cpuSecondsOf(cache.pid) - before;
  expectDownloaded(results, 1);
  return { seconds: ms / 1000, cpuSeconds };
}

/** What the machine cache logged about its last download ("downloaded LoRA"). */
export interface DownloadLog {
  ms: number;
  size_bytes: number;
  /** Most ranged requests it had in flight at once. */
  connections?: number;
  part_bytes?: number;
}

export function lastDownloadLog(cache: { output(): string }): DownloadLog | undefined {
  const line = cache
    .output()
    .split("\n")
    .filter((l) => l.includes('"downloaded LoRA"'))
    .pop();
  return line ? (JSON.parse(line) as DownloadLog) : undefined;
}

/** A plain download of a URL to a file with undici (what the service's HTTP client can do alone). */
export async function plainDownload(opts: { url: string; file: string; dispatcher: Dispatcher }): Promise<StepRun> {
  const started = performance.now();
  const res = await request(opts.url, { dispatcher: opts.dispatcher, headersTimeout: 600_000, bodyTimeout: 600_000 });
  if (res.statusCode !== 200) throw new Error(`plain download: HTTP ${res.statusCode}`);
  await pipeline(res.body, createWriteStream(opts.file));
  const seconds = (performance.now() - started) / 1000;
  await fs.rm(opts.file);
  return { seconds };
}

export const CURL = "one curl stream";
export const UNDICI = "plain download (undici, one stream)";
export const aria2Label = (connections: number, partBytes: number) =>
  `aria2c, ${connections} connections, ${(partBytes / MiB).toFixed(0)} MiB splits`;

/**
 * The downloads a user would compare with, of the same signed URL to the same
 * disk: one curl stream (its CPU counted with a sha256sum of the file, what
 * a download verified afterwards costs), aria2c with the connections and part
 * size the machine cache used, and undici.
 */
export function baselineSteps(opts: {
  url: () => Promise<string>;
  file: string;
  dispatcher: Dispatcher;
  aria2: { connections: number; partBytes: number };
}): Steps {
  const { file } = opts;
  return {
    [CURL]: async () => {
      const got = await curlDownload(await opts.url(), file);
      const hashed = await sha256sum(file);
      await removeDownload(file);
      return { seconds: got.seconds, cpuSeconds: got.cpuSeconds + hashed.cpuSeconds };
    },
    [aria2Label(opts.aria2.connections, opts.aria2.partBytes)]: async () => {
      const got = await aria2Download(await opts.url(), file, opts.aria2);
      await removeDownload(file);
      return got;
    },
    [UNDICI]: async () => plainDownload({ url: await opts.url(), file, dispatcher: opts.dispatcher }),
  };
}

export const coldLabel = (parts: number) =>
  parts === 1 ? "EnsureLoras, cold, 1 stream" : `EnsureLoras, cold, ${parts} parts`;

export const THREE_TOGETHER = "3 LoRAs, one EnsureLoras";
export const THREE_SEQUENTIAL = "3 LoRAs, 3 sequential EnsureLoras";

/** Three LoRAs in one request against three sequential requests, all evicted first; per round. */
export async function threeLoras(opts: {
  calls: MachineCacheCalls;
  ids: string[];
  rounds: number;
  log?: (line: string) => void;
  watched?: Watched[];
}): Promise<Record<string, StepRun[]>> {
  const { calls, ids } = opts;
  let job = 0;
  return measureRounds(
    {
      [THREE_TOGETHER]: async () => {
        await calls.evict(ids);
        const together = await calls.ensure(ids, `three-${++job}`);
        expectDownloaded(together.results, ids.length);
        return { seconds: together.ms / 1000 };
      },
      [THREE_SEQUENTIAL]: async () => {
        await calls.evict(ids);
        let ms = 0;
        for (const id of ids) {
          const one = await calls.ensure([id], `seq-${++job}`);
          expectDownloaded(one.results, 1);
          ms += one.ms;
        }
        return { seconds: ms / 1000 };
      },
    },
    opts.rounds,
    { log: opts.log, what: "three LoRAs round", watched: opts.watched },
  );
}

/** A cached EnsureLoras and a health check on the same server, alternating; ms per call. */
export async function cachedVsHealth(opts: {
  calls: MachineCacheCalls;
  loraId: string;
  count: number;
}): Promise<{ hitMs: number[]; healthMs: number[] }> {
  const { calls, loraId } = opts;
  await calls.ensure([loraId], "warm-up");
  for (let i = 0; i < 200; i++) {
    await calls.ensure([loraId], "warm-up");
    await calls.health();
  }
  const hitMs: number[] = [];
  const healthMs: number[] = [];
  for (let i = 0; i < opts.count; i++) {
    const hit = await calls.ensure([loraId], `hit-${i}`);
    if (!hit.results[0]?.cacheHit) throw new Error("expected a cache hit");
    hitMs.push(hit.ms);
    healthMs.push((await calls.health()).ms);
  }
  return { hitMs, healthMs };
}

/** One cold fetch in a fresh machine-cache process, with its memory meanwhile. */
export async function fetchMemory(opts: {
  cache: MachineCacheUnderTest;
  calls: MachineCacheCalls;
  loraId: string;
}): Promise<{ seconds: number; memory: PeakMemory }> {
  const { result, memory } = await peakMemoryDuring(opts.cache.pid, () => opts.calls.ensure([opts.loraId], "big"));
  expectDownloaded(result.results, 1);
  return { seconds: result.ms / 1000, memory };
}

async function main(): Promise<void> {
  const size = Number(process.env.BENCH_SIZE_MIB ?? 500) * MiB;
  const threeSize = Number(process.env.BENCH_THREE_MIB ?? 150) * MiB;
  const big = Number(process.env.BENCH_BIG_BYTES ?? 2_000_000_000);
  const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
  const latencyCalls = Number(process.env.BENCH_LATENCY_CALLS ?? 2000);
  // In memory by default (as the gateway's bench); BENCH_AZURITE_DISK=1 keeps blobs on local disk instead.
  const onDisk = process.env.BENCH_AZURITE_DISK === "1";
  ensureDownloadTools(console.log);
  const env = await startBenchEnvironment({ azuriteOnDisk: onDisk });
  try {
    console.log(env.summary);
    const { dispatcher, userId } = env;
    const callsOf = (cache: MachineCacheUnderTest) =>
      machineCacheCalls(cache, {
        userId,
        machineToken: env.tokens.machine,
        adminToken: env.tokens.admin,
        dispatcher,
      });
    console.log("uploading LoRAs through the registry (CreateLoraUpload, Put Block, CompleteLoraUpload) ...");
    const mainId = (await uploadLora(env.lora, "bench-main.safetensors", size)).loraId;
    const threeIds: string[] = [];
    for (const n of [1, 2, 3]) {
      threeIds.push((await uploadLora(env.lora, `bench-three-${n}.safetensors`, threeSize)).loraId);
    }
    const bigId = (await uploadLora(env.lora, "bench-big.safetensors", big)).loraId;
    console.log(`  ${mb(size).toFixed(0)} MB, 3 × ${mb(threeSize).toFixed(0)} MB, ${mb(big).toFixed(0)} MB uploaded`);

    const cache = await env.startMachineCache("cold");
    const calls = callsOf(cache);
    await coldEnsure(calls, cache, mainId, "warm-up");
    const used = lastDownloadLog(cache);
    const ensure = "EnsureLoras, cold";
    const rows = await measureRounds(
      {
        ...baselineSteps({
          url: () => signedReadUrl(env.resolver, userId, mainId),
          file: `${env.work}/plain.download`,
          dispatcher,
          aria2: { connections: used?.connections ?? 4, partBytes: used?.part_bytes ?? 16 * MiB },
        }),
        [ensure]: (() => {
          let job = 0;
          return () => coldEnsure(calls, cache, mainId, `cold-${++job}`);
        })(),
      },
      rounds,
      { log: console.log, what: "cold fetch round" },
    );
    const three = await threeLoras({ calls, ids: threeIds, rounds, log: console.log });
    const { hitMs, healthMs } = await cachedVsHealth({ calls, loraId: mainId, count: latencyCalls });
    console.log(`  ${latencyCalls} cached EnsureLoras and health checks`);
    await cache.stop();
    const fresh = await env.startMachineCache("big");
    const bigFetch = await fetchMemory({ cache: fresh, calls: callsOf(fresh), loraId: bigId });

    console.log(
      `\nmachine: ${os.cpus().length} cores, ${(os.totalmem() / 1e9).toFixed(0)} GB RAM, load average ${os.loadavg()[0]!.toFixed(1)}; Azurite ${onDisk ? "on local disk" : "in memory"}`,
    );
    console.log(`\n1. cold fetch of ${mb(size).toFixed(0)} MB (${rounds} rounds, median)`);
    const curlS = median(rows[CURL]!.map((r) => r.seconds));
    for (const [label, runs] of Object.entries(rows)) {
      const s = median(runs.map((r) => r.seconds));
      const cpu = runs.every((r) => r.cpuSeconds !== undefined)
        ? `${median(runs.map((r) => r.cpuSeconds!)).toFixed(2)} CPU s`
        : "";
      console.log(
        `   ${label.padEnd(44)} ${s.toFixed(2).padStart(6)} s ${(mb(size) / s).toFixed(0).padStart(6)} MB/s  ${(s / curlS).toFixed(2)} × curl's time  ${cpu}`,
      );
    }
    console.log(`\n2. three LoRAs of ${mb(threeSize).toFixed(0)} MB (${rounds} rounds, median)`);
    for (const [label, runs] of Object.entries(three)) {
      const s = median(runs.map((r) => r.seconds));
      console.log(
        `   ${label.padEnd(44)} ${s.toFixed(2).padStart(6)} s ${((3 * mb(threeSize)) / s).toFixed(0).padStart(6)} MB/s   [${runs.map((r) => r.seconds.toFixed(2)).join(" ")}]`,
      );
    }
    console.log(`\n3. latency over ${latencyCalls} calls each (Connect JSON, HTTP/1.1 keep-alive)`);
    for (const [label, xs] of [
      ["EnsureLoras, cached", hitMs],
      ["health check", healthMs],
    ] as const) {
      console.log(
        `   ${label.padEnd(44)} p50 ${percentile(xs, 50).toFixed(2)} ms   p99 ${percentile(xs, 99).toFixed(2)} ms`,
      );
    }
    const m = bigFetch.memory;
    console.log(`\n4. fetching ${mb(big).toFixed(0)} MB in a fresh machine-cache process`);
    console.log(`   ${bigFetch.seconds.toFixed(2)} s, ${(mb(big) / bigFetch.seconds).toFixed(0)} MB/s`);
    console.log(
      `   RSS before ${mb(m.before).toFixed(0)} MB, peak RSS sampled ${mb(m.peak).toFixed(0)} MB, VmHWM ${mb(m.hwm).toFixed(0)} MB`,
    );
  } finally {
    await env.stop();
  }
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
