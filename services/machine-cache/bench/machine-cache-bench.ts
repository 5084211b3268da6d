/**
 * The machine cache against the real registry, gateway and Azurite, measured
 * side by side in one run:
 *   1. cold fetch of a 500 MiB LoRA through EnsureLoras against a plain
 *      download of the same blob with the same HTTP client (undici), and the
 *      plain download followed by a sha256 of the file (what hashing after the
 *      download would cost);
 *   2. three LoRAs in one EnsureLoras against three sequential requests;
 *   3. a cached EnsureLoras against a health check on the same server (p50/p99);
 *   4. the service's peak memory while it fetches a 2 GB LoRA.
 *
 *   npm run bench -w services/machine-cache
 *   BENCH_SIZE_MIB=100 BENCH_BIG_BYTES=500000000 BENCH_ROUNDS=1 npm run bench -w services/machine-cache
 *
 * Every service runs as a child process (its built dist/main.js, the shared
 * harness in bench/), so the machine cache's memory is its own: VmRSS sampled
 * every 10 ms and VmHWM from /proc. Every file is deleted at the end. The
 * suite (`npm run bench`) runs the same measurements with the sizes of its mode.
 */
import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import type { Client } from "@connectrpc/connect";
import { type LoraResolverService, LoraSource } from "@emprops/contracts";
import { type Dispatcher, request } from "undici";
import { connectJson } from "../../../bench/src/harness/connect-json.js";
import { startBenchEnvironment } from "../../../bench/src/harness/environment.js";
import { type PeakMemory, peakMemoryDuring } from "../../../bench/src/harness/memory.js";
import { mb, median, MiB, percentile } from "../../../bench/src/harness/stats.js";
import { rotatedRounds } from "../../../bench/src/harness/rounds.js";
import { uploadLora } from "../../../bench/src/harness/upload.js";

/** A machine cache under measurement. */
export interface MachineCacheUnderTest {
  url: string;
  pid: number;
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

/** A plain download of a LoRA's blob to a file with the same client (undici), optionally hashed after; seconds. */
export async function plainDownload(opts: {
  resolver: Client<typeof LoraResolverService>;
  userId: string;
  loraId: string;
  file: string;
  dispatcher: Dispatcher;
  hashAfter: boolean;
}): Promise<number> {
  const { results } = await opts.resolver.resolveLoras({
    userId: opts.userId,
    jobId: "bench",
    machineId: "bench",
    refs: [{ source: LoraSource.USER, identifier: opts.loraId }],
  });
  const outcome = results[0]?.outcome;
  if (outcome?.case !== "lora") throw new Error(`could not resolve ${opts.loraId}`);
  const started = performance.now();
  const res = await request(outcome.value.downloadUrl, {
    dispatcher: opts.dispatcher,
    headersTimeout: 600_000,
    bodyTimeout: 600_000,
  });
  await pipeline(res.body, createWriteStream(opts.file));
  if (opts.hashAfter) {
    const hash = createHash("sha256");
    await pipeline((await fs.open(opts.file)).createReadStream({ highWaterMark: 4 * MiB }), hash);
    hash.digest("hex");
  }
  const seconds = (performance.now() - started) / 1000;
  await fs.rm(opts.file);
  return seconds;
}

export const PLAIN_DOWNLOAD = "plain download to a file";
export const PLAIN_DOWNLOAD_SHA = "plain download + sha256 after";
export const coldLabel = (parts: number) =>
  parts === 1 ? "EnsureLoras, cold, 1 stream" : `EnsureLoras, cold, ${parts} parts`;

/**
 * Rounds of: plain download, plain download + sha256, then an evicted-then-
 * ensured fetch on each machine cache (one per parts setting). Interleaved,
 * so each round compares the same moment of a shared machine, and rotated.
 * Seconds per round.
 */
export async function coldFetch(opts: {
  variants: { parts: number; calls: MachineCacheCalls }[];
  plain: (hashAfter: boolean) => Promise<number>;
  loraId: string;
  rounds: number;
  log?: (line: string) => void;
}): Promise<Record<string, number[]>> {
  await opts.plain(false); // warm-up: Azurite's first read of its extents is slower
  const rows: Record<string, number[]> = {
    [PLAIN_DOWNLOAD]: [],
    [PLAIN_DOWNLOAD_SHA]: [],
    ...Object.fromEntries(opts.variants.map((v) => [coldLabel(v.parts), []])),
  };
  let job = 0;
  await rotatedRounds(
    opts.rounds,
    [
      async () => void rows[PLAIN_DOWNLOAD]!.push(await opts.plain(false)),
      async () => void rows[PLAIN_DOWNLOAD_SHA]!.push(await opts.plain(true)),
      ...opts.variants.map((v) => async () => {
        await v.calls.evict([opts.loraId]);
        const { ms, results } = await v.calls.ensure([opts.loraId], `cold-${++job}`);
        expectDownloaded(results, 1);
        rows[coldLabel(v.parts)]!.push(ms / 1000);
      }),
    ],
    (round) => opts.log?.(`cold fetch round ${round}/${opts.rounds}`),
  );
  return rows;
}

export const THREE_TOGETHER = "3 LoRAs, one EnsureLoras";
export const THREE_SEQUENTIAL = "3 LoRAs, 3 sequential EnsureLoras";

/** Three LoRAs in one request against three sequential requests; seconds per round. */
export async function threeLoras(opts: {
  calls: MachineCacheCalls;
  ids: string[];
  rounds: number;
  log?: (line: string) => void;
}): Promise<Record<string, number[]>> {
  const { calls, ids } = opts;
  const rows: Record<string, number[]> = { [THREE_TOGETHER]: [], [THREE_SEQUENTIAL]: [] };
  let job = 0;
  await rotatedRounds(
    opts.rounds,
    [
      async () => {
        await calls.evict(ids);
        const together = await calls.ensure(ids, `three-${++job}`);
        expectDownloaded(together.results, ids.length);
        rows[THREE_TOGETHER]!.push(together.ms / 1000);
      },
      async () => {
        await calls.evict(ids);
        let sequential = 0;
        for (const id of ids) {
          const one = await calls.ensure([id], `seq-${++job}`);
          expectDownloaded(one.results, 1);
          sequential += one.ms;
        }
        rows[THREE_SEQUENTIAL]!.push(sequential / 1000);
      },
    ],
    (round) => opts.log?.(`three LoRAs round ${round}/${opts.rounds}`),
  );
  return rows;
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
  /** Ranged parts in flight per file for the cold fetch, one child process each ("1" is a single stream). */
  const partsList = (process.env.BENCH_PARTS ?? "4,1").split(",").map(Number);
  // In memory by default (as the gateway's bench); BENCH_AZURITE_DISK=1 keeps blobs on local disk instead.
  const onDisk = process.env.BENCH_AZURITE_DISK === "1";
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

    // One machine-cache process per parts setting, each with its own directory; the first serves phases 2 and 3.
    const variants = [];
    for (const parts of partsList) {
      const cache = await env.startMachineCache(`parts-${parts}`, { env: { LORA_DOWNLOAD_PARTS: String(parts) } });
      variants.push({ parts, cache, calls: callsOf(cache) });
    }
    const first = variants[0]!;
    const plainFile = path.join(env.work, "plain.download");
    const rows = await coldFetch({
      variants,
      plain: (hashAfter) =>
        plainDownload({ resolver: env.resolver, userId, loraId: mainId, file: plainFile, dispatcher, hashAfter }),
      loraId: mainId,
      rounds,
      log: console.log,
    });
    for (const v of variants.slice(1)) await v.cache.stop();
    const three = await threeLoras({ calls: first.calls, ids: threeIds, rounds, log: console.log });
    const { hitMs, healthMs } = await cachedVsHealth({ calls: first.calls, loraId: mainId, count: latencyCalls });
    console.log(`  ${latencyCalls} cached EnsureLoras and health checks`);
    await first.cache.stop();
    const fresh = await env.startMachineCache("big");
    const bigFetch = await fetchMemory({ cache: fresh, calls: callsOf(fresh), loraId: bigId });

    console.log(
      `\nmachine: ${os.cpus().length} cores, ${(os.totalmem() / 1e9).toFixed(0)} GB RAM, load average ${os.loadavg()[0]!.toFixed(1)}; Azurite ${onDisk ? "on local disk" : "in memory"}`,
    );
    console.log(`\n1. cold fetch of ${mb(size).toFixed(0)} MB (${rounds} rounds, median)`);
    const plainS = median(rows[PLAIN_DOWNLOAD]!);
    for (const [label, seconds] of Object.entries(rows)) {
      const s = median(seconds);
      console.log(
        `   ${label.padEnd(34)} ${s.toFixed(2).padStart(6)} s ${(mb(size) / s).toFixed(0).padStart(6)} MB/s  ${(plainS / s).toFixed(2)} × plain   [${seconds.map((x) => x.toFixed(2)).join(" ")}]`,
      );
    }
    console.log(`\n2. three LoRAs of ${mb(threeSize).toFixed(0)} MB (${rounds} rounds, median)`);
    for (const [label, seconds] of Object.entries(three)) {
      const s = median(seconds);
      console.log(
        `   ${label.padEnd(34)} ${s.toFixed(2).padStart(6)} s ${((3 * mb(threeSize)) / s).toFixed(0).padStart(6)} MB/s   [${seconds.map((x) => x.toFixed(2)).join(" ")}]`,
      );
    }
    console.log(`\n3. latency over ${latencyCalls} calls each (Connect JSON, HTTP/1.1 keep-alive)`);
    for (const [label, xs] of [
      ["EnsureLoras, cached", hitMs],
      ["health check", healthMs],
    ] as const) {
      console.log(
        `   ${label.padEnd(34)} p50 ${percentile(xs, 50).toFixed(2)} ms   p99 ${percentile(xs, 99).toFixed(2)} ms`,
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
