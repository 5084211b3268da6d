/**
 * What checking cache hits again costs the registry. A machine checks a
 * cached LoRA with the registry at most once per LORA_REVALIDATE_AFTER_SECONDS
 * (one ResolveLoras per EnsureLoras batch, with every due LoRA of the batch,
 * no read URLs signed): at most machines × L / interval calls per second,
 * L being the distinct LoRAs a machine uses per interval. This measures the
 * registry's side of one such call — latency and the registry process's CPU
 * per call (/proc) over many calls, with 1 and 3 LoRAs per call — and turns
 * it into calls/s and registry cores per 1,000 machines for the 900 s
 * interval of before and the 60 s of now.
 *
 *   npm run bench:revalidation -w services/machine-cache
 *   BENCH_REVALIDATION_CALLS=4000 npm run bench:revalidation -w services/machine-cache
 */
import { performance } from "node:perf_hooks";
import { LoraSource } from "@emprops/contracts";
import { cpuSecondsOf } from "../../../bench/src/harness/cpu.js";
import { startBenchEnvironment } from "../../../bench/src/harness/environment.js";
import { median, percentile } from "../../../bench/src/harness/stats.js";
import { uploadLora } from "../../../bench/src/harness/upload.js";

const CONCURRENCY = 8;

async function main(): Promise<void> {
  const calls = Number(process.env.BENCH_REVALIDATION_CALLS ?? 2000);
  const env = await startBenchEnvironment();
  try {
    const ids: string[] = [];
    for (const name of ["a", "b", "c"])
      ids.push((await uploadLora(env.lora, `reval-${name}.safetensors`, 4096)).loraId);
    const measure = async (refs: number) => {
      const request = {
        userId: env.userId,
        jobId: "bench-revalidation",
        machineId: "bench-machine",
        refs: ids.slice(0, refs).map((identifier) => ({ source: LoraSource.USER, identifier })),
        skipDownloadUrls: true,
      };
      for (let i = 0; i < 100; i++) await env.resolver.resolveLoras(request); // warm-up
      const latencies: number[] = [];
      const cpuBefore = cpuSecondsOf(env.main.registry.pid);
      const started = performance.now();
      let next = 0;
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (next++ < calls) {
            const t = performance.now();
            const answer = await env.resolver.resolveLoras(request);
            latencies.push(performance.now() - t);
            if (answer.results.some((r) => r.outcome.case !== "lora")) throw new Error("a LoRA did not resolve");
          }
        }),
      );
      const seconds = (performance.now() - started) / 1000;
      const cpuMsPerCall = ((cpuSecondsOf(env.main.registry.pid) - cpuBefore) * 1000) / calls;
      return { refs, p50: median(latencies), p99: percentile(latencies, 99), perSecond: calls / seconds, cpuMsPerCall };
    };
    const rows = [await measure(1), await measure(3)];
    console.log(`${calls} ResolveLoras (skip_download_urls) per row, ${CONCURRENCY} at a time, registry on PostgreSQL`);
    console.log("| LoRAs per call | p50 | p99 | calls/s (this registry) | registry CPU per call |");
    console.log("|---|---|---|---|---|");
    for (const r of rows) {
      console.log(
        `| ${r.refs} | ${r.p50.toFixed(2)} ms | ${r.p99.toFixed(2)} ms | ${r.perSecond.toFixed(0)} | ${r.cpuMsPerCall.toFixed(3)} ms |`,
      );
    }
    const cpu = rows[0]!.cpuMsPerCall;
    console.log(
      "\n| interval | LoRAs used per machine per interval | calls/s per 1,000 machines (at most) | registry cores |",
    );
    console.log("|---|---|---|---|");
    for (const interval of [900, 60]) {
      for (const distinct of [1, 5]) {
        const perSecond = (1000 * distinct) / interval;
        console.log(
          `| ${interval} s | ${distinct} | ${perSecond.toFixed(1)} | ${((perSecond * cpu) / 1000).toFixed(3)} |`,
        );
      }
    }
  } finally {
    await env.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
