import os from "node:os";
import path from "node:path";
import {
  aria2Label,
  baselineSteps,
  cachedVsHealth,
  coldEnsure,
  CURL,
  lastDownloadLog,
  type MachineCacheCalls,
  machineCacheCalls,
  type MachineCacheUnderTest,
  measureRounds,
  type StepRun,
  THREE_SEQUENTIAL,
  THREE_TOGETHER,
  threeLoras,
  UNDICI,
} from "../../../services/machine-cache/bench/machine-cache-bench.js";
import type { Watched } from "../harness/cpu.js";
import { ensureDownloadTools } from "../harness/download-tools.js";
import type { BenchEnvironment } from "../harness/environment.js";
import { table } from "../harness/report.js";
import type { ServiceProcess } from "../harness/service-process.js";
import { signedReadUrl } from "../harness/shaped-link.js";
import { mb, median, MiB, percentile } from "../harness/stats.js";
import { type Figure, requireEnv, type Suite, type SuiteContext } from "../harness/suite.js";

export function callsOf(env: BenchEnvironment, cache: MachineCacheUnderTest) {
  return machineCacheCalls(cache, {
    userId: env.userId,
    machineToken: env.tokens.machine,
    adminToken: env.tokens.admin,
    dispatcher: env.dispatcher,
  });
}

/** The cold-fetch variants of one run and what the machine cache used (for aria2c's settings). */
export interface ColdFetchRows {
  rows: Record<string, StepRun[]>;
  connections: number;
  partBytes: number;
}

export const ENSURE_COLD = "EnsureLoras, cold";

/**
 * Rounds of: the baselines (curl, aria2c, undici) of a fresh signed URL, and
 * a cold EnsureLoras of the same LoRA. A warm-up download first tells the
 * connections and part size the cache uses, which aria2c then gets.
 */
export async function coldFetchRounds(
  ctx: SuiteContext,
  opts: { cache: ServiceProcess; calls: MachineCacheCalls; loraId: string; url: () => Promise<string> },
): Promise<ColdFetchRows> {
  const env = requireEnv(ctx);
  ensureDownloadTools(ctx.log);
  await coldEnsure(opts.calls, opts.cache, opts.loraId, "warm-up"); // Azurite's first read of its extents is slower
  const used = lastDownloadLog(opts.cache);
  const connections = used?.connections ?? 4;
  const partBytes = used?.part_bytes ?? 16 * MiB;
  let job = 0;
  const rows = await measureRounds(
    {
      ...baselineSteps({
        url: opts.url,
        file: path.join(env.work, "baseline.download"),
        dispatcher: env.dispatcher,
        aria2: { connections, partBytes },
      }),
      [ENSURE_COLD]: () => coldEnsure(opts.calls, opts.cache, opts.loraId, `cold-${++job}`),
    },
    ctx.sizes.rounds,
    { log: ctx.log, what: "cold fetch round", watched: watchedOf(env, opts.cache) },
  );
  return { rows, connections, partBytes };
}

/** The processes whose CPU use a machine-cache step is shown with. */
export function watchedOf(env: BenchEnvironment, ...services: (ServiceProcess | Watched)[]): Watched[] {
  return [
    ...services.map((s) => ({ name: s.name, pid: s.pid })),
    { name: "Azurite", pid: env.azurite.pid },
    // The harness drives the calls and, on the shaped link, is the shaping proxy.
    { name: "harness", pid: process.pid },
  ];
}

/**
 * Median cores each watched process, and the whole machine (other work on a
 * shared machine included), kept busy during each step: where the time went.
 */
export function coresTable(rows: Record<string, StepRun[]>, cores: number): string {
  const names = Object.keys(Object.values(rows)[0]?.[0]?.cores ?? {});
  return table(
    ["cores busy during the step (median)", ...names.map((n) => (n === "machine" ? `machine (of ${cores})` : n))],
    Object.entries(rows).map(([label, runs]) => [
      label,
      ...names.map((n) => median(runs.map((r) => r.cores?.[n] ?? NaN)).toFixed(2)),
    ]),
  );
}

const medianOf = (runs: StepRun[], f: (r: StepRun) => number | undefined) => median(runs.map((r) => f(r) ?? NaN));

/** The figures and table of a cold-fetch run: EnsureLoras against each baseline, and CPU per GB. */
export function coldFetchReport(
  run: ColdFetchRows,
  opts: { sizeBytes: number; where: string; targets: { curl?: string; aria2?: string; cpu?: string } },
): { figures: Figure[]; table: string } {
  const { rows } = run;
  const s = (label: string) => medianOf(rows[label]!, (r) => r.seconds);
  const cpuPerGb = (label: string) => medianOf(rows[label]!, (r) => r.cpuSeconds) / (opts.sizeBytes / 1e9);
  const size = `${mb(opts.sizeBytes).toFixed(0)} MB`;
  const aria2 = aria2Label(run.connections, run.partBytes);
  const secs = (label: string) => `${s(label).toFixed(2)} s (${(mb(opts.sizeBytes) / s(label)).toFixed(0)} MB/s)`;
  const versus = (label: string, what: string, target?: string): Figure => ({
    benchmark: `Cold fetch of ${size}, ${opts.where}: EnsureLoras vs ${what}`,
    measured: secs(ENSURE_COLD),
    baseline: secs(label),
    ratio: s(ENSURE_COLD) / s(label),
    ratioOf: "wall time",
    target,
  });
  const figures: Figure[] = [
    versus(CURL, "one curl stream", opts.targets.curl),
    versus(
      aria2,
      `aria2c with the same ${run.connections} connections and ${run.partBytes / MiB} MiB parts`,
      opts.targets.aria2,
    ),
    versus(UNDICI, "a plain undici download"),
    {
      benchmark: `CPU per GB fetched, ${opts.where}: machine-cache (EnsureLoras) vs curl + sha256sum of the file`,
      measured: `${cpuPerGb(ENSURE_COLD).toFixed(2)} CPU s/GB`,
      baseline: `${cpuPerGb(CURL).toFixed(2)} CPU s/GB`,
      ratio: cpuPerGb(ENSURE_COLD) / cpuPerGb(CURL),
      ratioOf: "CPU seconds",
      target: opts.targets.cpu,
    },
  ];
  const curlS = s(CURL);
  return {
    figures,
    table: [
      table(
        ["", "median s", "MB/s", "÷ curl's time", "CPU s", "CPU s/GB", "all rounds, s"],
        Object.keys(rows).map((label) => {
          const cpu = medianOf(rows[label]!, (r) => r.cpuSeconds);
          return [
            label,
            s(label).toFixed(2),
            (mb(opts.sizeBytes) / s(label)).toFixed(0),
            (s(label) / curlS).toFixed(2),
            Number.isFinite(cpu) ? cpu.toFixed(2) : "",
            Number.isFinite(cpu) ? cpuPerGb(label).toFixed(2) : "",
            rows[label]!.map((x) => x.seconds.toFixed(2)).join(" "),
          ];
        }),
      ),
      "",
      coresTable(rows, os.cpus().length),
    ].join("\n"),
  };
}

export const coldFetchSuite: Suite = {
  id: "cold-fetch",
  title: "Cold fetch through EnsureLoras vs curl, aria2c and undici on loopback",
  needsEnvironment: true,
  async run(ctx) {
    const env = requireEnv(ctx);
    const lora = await ctx.loras.get("main", ctx.sizes.mainBytes);
    const cache = await env.startMachineCache("cold");
    try {
      const run = await coldFetchRounds(ctx, {
        cache,
        calls: callsOf(env, cache),
        loraId: lora.loraId,
        url: () => signedReadUrl(env.resolver, env.userId, lora.loraId),
      });
      const { figures, table: rows } = coldFetchReport(run, {
        sizeBytes: lora.sizeBytes,
        where: "loopback",
        targets: { curl: "≤ 1.0", cpu: "≤ 1.2" },
      });
      return {
        data: {
          ensureSeconds: median(run.rows[ENSURE_COLD]!.map((r) => r.seconds)),
          curlSeconds: median(run.rows[CURL]!.map((r) => r.seconds)),
        },
        figures,
        details: [
          `EnsureLoras (Connect JSON over HTTP/1.1, as ComfyUI's node calls it) on a machine cache with the default ` +
            `settings whose copy was just evicted: resolve through the registry, reserve space, download (ranged ` +
            `parts), sha256 while downloading, fsync, rename, register. Baselines, of a fresh signed URL of the same ` +
            `blob (straight to Azurite on loopback) written to the same disk: one \`curl\` stream (its CPU counted ` +
            `together with a \`sha256sum\` of the file afterwards), \`aria2c\` with the connections and part size the ` +
            `cache used (${run.connections}, ${run.partBytes / MiB} MiB), and undici as the service's HTTP client alone. ` +
            `CPU: the machine-cache process's user + system time during the call (/proc), the tools' from their ` +
            `shell's cutime + cstime. Rounds interleaved and rotated; ${ctx.sizes.rounds} rounds, median.`,
          "",
          rows,
        ].join("\n"),
      };
    } finally {
      await cache.stop();
    }
  },
};

/** The three LoRAs of the three-LoRA figures (uploaded once per run). */
export async function threeLoraIds(ctx: SuiteContext): Promise<string[]> {
  const ids: string[] = [];
  for (const n of [1, 2, 3]) ids.push((await ctx.loras.get(`three-${n}`, ctx.sizes.threeBytes)).loraId);
  return ids;
}

/** Three LoRAs in one EnsureLoras against three sequential ones on one machine cache: figure and table. */
export async function threeLorasReport(
  ctx: SuiteContext,
  opts: { calls: MachineCacheCalls; ids: string[]; where: string; target?: string; watched?: Watched[] },
): Promise<{ figure: Figure; table: string }> {
  const rows = await threeLoras({
    calls: opts.calls,
    ids: opts.ids,
    rounds: ctx.sizes.rounds,
    log: ctx.log,
    watched: opts.watched,
  });
  const s = (label: string) => median(rows[label]!.map((r) => r.seconds));
  return {
    figure: {
      benchmark: `3 × ${mb(ctx.sizes.threeBytes).toFixed(0)} MB, ${opts.where}: one EnsureLoras vs 3 sequential`,
      measured: `${s(THREE_TOGETHER).toFixed(2)} s`,
      baseline: `${s(THREE_SEQUENTIAL).toFixed(2)} s`,
      ratio: s(THREE_TOGETHER) / s(THREE_SEQUENTIAL),
      ratioOf: "wall time",
      target: opts.target,
    },
    table: [
      table(
        ["", "median s", "MB/s", "all rounds, s"],
        Object.keys(rows).map((label) => [
          label,
          s(label).toFixed(2),
          ((3 * mb(ctx.sizes.threeBytes)) / s(label)).toFixed(0),
          rows[label]!.map((x) => x.seconds.toFixed(2)).join(" "),
        ]),
      ),
      "",
      coresTable(rows, os.cpus().length),
    ].join("\n"),
  };
}

export const threeLorasSuite: Suite = {
  id: "three-loras",
  title: "Three LoRAs in one EnsureLoras vs one after another, on loopback",
  needsEnvironment: true,
  async run(ctx) {
    const env = requireEnv(ctx);
    const ids = await threeLoraIds(ctx);
    const cache = await env.startMachineCache("three");
    try {
      const { figure, table: rows } = await threeLorasReport(ctx, {
        calls: callsOf(env, cache),
        ids,
        where: "loopback",
      });
      return {
        figures: [figure],
        details: [`All three evicted before each variant. ${ctx.sizes.rounds} rounds, median.`, "", rows].join("\n"),
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
        target: q === 50 ? "≤ 1.3" : "≤ 2",
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
