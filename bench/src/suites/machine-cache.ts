import path from "node:path";
import {
  cachedVsHealth,
  coldFetch,
  coldLabel,
  machineCacheCalls,
  type MachineCacheUnderTest,
  PLAIN_DOWNLOAD,
  plainDownload,
  THREE_SEQUENTIAL,
  THREE_TOGETHER,
  threeLoras,
} from "../../../services/machine-cache/bench/machine-cache-bench.js";
import type { BenchEnvironment } from "../harness/environment.js";
import { table } from "../harness/report.js";
import { mb, median, percentile } from "../harness/stats.js";
import { requireEnv, type Suite } from "../harness/suite.js";

export function callsOf(env: BenchEnvironment, cache: MachineCacheUnderTest) {
  return machineCacheCalls(cache, {
    userId: env.userId,
    machineToken: env.tokens.machine,
    adminToken: env.tokens.admin,
    dispatcher: env.dispatcher,
  });
}

/** Ranged parts per file: the default (4) and a single stream, one machine-cache process each. */
const PARTS = [4, 1];

export const coldFetchSuite: Suite = {
  id: "cold-fetch",
  title: "Cold fetch through EnsureLoras vs a plain download of the same blob",
  needsEnvironment: true,
  async run(ctx) {
    const env = requireEnv(ctx);
    const lora = await ctx.loras.get("main", ctx.sizes.mainBytes);
    const variants = [];
    for (const parts of PARTS) {
      const cache = await env.startMachineCache(`cold-${parts}`, { env: { LORA_DOWNLOAD_PARTS: String(parts) } });
      variants.push({ parts, cache, calls: callsOf(env, cache) });
    }
    try {
      const file = path.join(env.work, "plain.download");
      const rows = await coldFetch({
        variants,
        plain: (hashAfter) =>
          plainDownload({
            resolver: env.resolver,
            userId: env.userId,
            loraId: lora.loraId,
            file,
            dispatcher: env.dispatcher,
            hashAfter,
          }),
        loraId: lora.loraId,
        rounds: ctx.sizes.rounds,
        log: ctx.log,
      });
      const s = (label: string) => median(rows[label]!);
      const rate = (label: string) => `${(mb(lora.sizeBytes) / s(label)).toFixed(0)} MB/s`;
      const ensure = coldLabel(PARTS[0]!);
      return {
        data: { ensureSeconds: s(ensure), plainSeconds: s(PLAIN_DOWNLOAD) },
        figures: [
          {
            benchmark: `Cold fetch of ${mb(lora.sizeBytes).toFixed(0)} MB: EnsureLoras vs a plain download (undici)`,
            measured: rate(ensure),
            baseline: rate(PLAIN_DOWNLOAD),
            ratio: s(PLAIN_DOWNLOAD) / s(ensure),
            ratioOf: "throughput",
            target: "≥ 0.9",
          },
        ],
        details: [
          `EnsureLoras (Connect JSON over HTTP/1.1, as ComfyUI's node calls it) on a machine cache whose copy was ` +
            `just evicted: resolve through the registry, reserve space, download (ranged parts or one stream), ` +
            `sha256 while streaming, fsync, rename, register. Baseline: the same signed URL fetched by the harness ` +
            `with undici and written to a file on the same disk; and the same followed by a sha256 pass over the ` +
            `file. Rounds interleaved; ${ctx.sizes.rounds} rounds, median.`,
          "",
          table(
            ["", "median s", "MB/s", "÷ plain throughput", "all rounds, s"],
            Object.keys(rows).map((label) => [
              label,
              s(label).toFixed(2),
              (mb(lora.sizeBytes) / s(label)).toFixed(0),
              (s(PLAIN_DOWNLOAD) / s(label)).toFixed(2),
              rows[label]!.map((x) => x.toFixed(2)).join(" "),
            ]),
          ),
        ].join("\n"),
      };
    } finally {
      for (const v of variants) await v.cache.stop();
    }
  },
};

export const threeLorasSuite: Suite = {
  id: "three-loras",
  title: "Three LoRAs in one EnsureLoras vs one after another",
  needsEnvironment: true,
  async run(ctx) {
    const env = requireEnv(ctx);
    const ids: string[] = [];
    for (const n of [1, 2, 3]) ids.push((await ctx.loras.get(`three-${n}`, ctx.sizes.threeBytes)).loraId);
    const cache = await env.startMachineCache("three");
    try {
      const rows = await threeLoras({ calls: callsOf(env, cache), ids, rounds: ctx.sizes.rounds, log: ctx.log });
      const s = (label: string) => median(rows[label]!);
      for (const n of [1, 2, 3]) await ctx.loras.drop(`three-${n}`);
      return {
        figures: [
          {
            benchmark: `3 × ${mb(ctx.sizes.threeBytes).toFixed(0)} MB: one EnsureLoras vs 3 sequential`,
            measured: `${s(THREE_TOGETHER).toFixed(2)} s`,
            baseline: `${s(THREE_SEQUENTIAL).toFixed(2)} s`,
            ratio: s(THREE_TOGETHER) / s(THREE_SEQUENTIAL),
            ratioOf: "wall time",
          },
        ],
        details: [
          `All three evicted before each variant. ${ctx.sizes.rounds} rounds, median.`,
          "",
          table(
            ["", "median s", "MB/s", "all rounds, s"],
            Object.keys(rows).map((label) => [
              label,
              s(label).toFixed(2),
              ((3 * mb(ctx.sizes.threeBytes)) / s(label)).toFixed(0),
              rows[label]!.map((x) => x.toFixed(2)).join(" "),
            ]),
          ),
        ].join("\n"),
      };
    } finally {
      await cache.stop();
    }
  },
};

export const cachedHitSuite: Suite = {
  id: "cached-hit",
  title: "Cached EnsureLoras vs a health check on the same server",
  needsEnvironment: true,
  async run(ctx) {
    const env = requireEnv(ctx);
    const lora = await ctx.loras.get("main", ctx.sizes.mainBytes);
    const cache = await env.startMachineCache("hit");
    try {
      const { hitMs, healthMs } = await cachedVsHealth({
        calls: callsOf(env, cache),
        loraId: lora.loraId,
        count: ctx.sizes.latencyCalls,
      });
      const p = (xs: number[], q: number) => percentile(xs, q);
      const figure = (q: number) => ({
        benchmark: `Cached EnsureLoras vs health check: p${q}`,
        measured: `${p(hitMs, q).toFixed(2)} ms`,
        baseline: `${p(healthMs, q).toFixed(2)} ms`,
        ratio: p(hitMs, q) / p(healthMs, q),
        ratioOf: `p${q} latency`,
        target: "≤ 2",
      });
      return {
        figures: [figure(50), figure(99)],
        details: [
          `${ctx.sizes.latencyCalls} calls each, alternating, one at a time, after 200 warm-up pairs; Connect JSON over ` +
            `HTTP/1.1 keep-alive (how ComfyUI's node calls). A hit reads model_cache.db, checks the file on disk ` +
            `(stat), updates last_used/use_count and records the use. The registry is not asked (the copy was ` +
            `checked less than LORA_REVALIDATE_AFTER_SECONDS ago).`,
          "",
          table(
            ["", "p50 ms", "p90 ms", "p99 ms", "max ms"],
            [
              ["EnsureLoras, cached", hitMs],
              ["health check", healthMs],
            ].map(([label, xs]) => [label as string, ...[50, 90, 99, 100].map((q) => p(xs as number[], q).toFixed(2))]),
          ),
        ].join("\n"),
      };
    } finally {
      await cache.stop();
    }
  },
};
