import { verifyOnce } from "../../../services/blob-gateway/bench/verify-throughput.js";
import { fetchMemory } from "../../../services/machine-cache/bench/machine-cache-bench.js";
import type { PeakMemory } from "../harness/memory.js";
import { table } from "../harness/report.js";
import { mb } from "../harness/stats.js";
import { requireEnv, type Suite } from "../harness/suite.js";
import { callsOf } from "./machine-cache.js";
import { verifyTargetOf } from "./verify.js";

/**
 * Peak RSS of a fresh machine-cache process fetching the main LoRA and then a
 * fresh one fetching the big one; the same for a fresh gateway verifying each.
 */
export const peakMemorySuite: Suite = {
  id: "peak-memory",
  title: "Peak memory (RSS) while fetching and verifying: the big LoRA vs the main one",
  needsEnvironment: true,
  async run(ctx) {
    const env = requireEnv(ctx);
    const sizes = [
      { name: "main", bytes: ctx.sizes.mainBytes },
      { name: "big", bytes: ctx.sizes.bigBytes },
    ];
    const fetches: { seconds: number; memory: PeakMemory }[] = [];
    const verifies: { seconds: number; memory: PeakMemory }[] = [];
    for (const { name, bytes } of sizes) {
      const lora = await ctx.loras.get(name, bytes);
      const cache = await env.startMachineCache(`memory-${name}`);
      try {
        fetches.push(await fetchMemory({ cache, calls: callsOf(env, cache), loraId: lora.loraId }));
      } finally {
        await cache.stop();
      }
      const gateway = await env.startGateway();
      try {
        verifies.push(await verifyOnce(gateway, env.tokens.service, verifyTargetOf(env, lora)));
      } finally {
        await gateway.stop();
      }
      ctx.log(`peak memory: ${name} done`);
    }
    await ctx.loras.drop("big");
    const label = (bytes: number) => `${mb(bytes).toFixed(0)} MB`;
    const [small, big] = sizes.map((s) => label(s.bytes));
    const figure = (who: string, xs: { memory: PeakMemory }[]) => ({
      benchmark: `${who}: peak RSS at ${big} vs ${small}`,
      measured: `${mb(xs[1]!.memory.peak).toFixed(0)} MB`,
      baseline: `${mb(xs[0]!.memory.peak).toFixed(0)} MB`,
      ratio: xs[1]!.memory.peak / xs[0]!.memory.peak,
      ratioOf: "peak RSS",
      target: "flat (≈ 1)",
    });
    const rows = (who: string, xs: { seconds: number; memory: PeakMemory }[]) =>
      xs.map((x, i) => [
        who,
        label(sizes[i]!.bytes),
        x.seconds.toFixed(2),
        (mb(sizes[i]!.bytes) / x.seconds).toFixed(0),
        mb(x.memory.before).toFixed(0),
        mb(x.memory.peak).toFixed(0),
        mb(x.memory.peak - x.memory.before).toFixed(0),
        mb(x.memory.hwm).toFixed(0),
      ]);
    return {
      figures: [figure("machine-cache fetching", fetches), figure("blob-gateway verifying", verifies)],
      details: [
        `Each measurement in a fresh process of the service (its own RSS): VmRSS of /proc/<pid>/status sampled ` +
          `every 10 ms during the call, and VmHWM (the kernel's high-water mark over the process's life) after it.`,
        "",
        table(
          ["process", "file", "s", "MB/s", "RSS before MB", "peak RSS MB", "growth MB", "VmHWM MB"],
          [...rows("machine-cache, EnsureLoras (cold)", fetches), ...rows("blob-gateway, VerifyBlob", verifies)],
        ),
      ].join("\n"),
    };
  },
};
