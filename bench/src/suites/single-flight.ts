import { azuriteConnectionString, startFaultProxy } from "@emprops/testkit";
import { expectDownloaded } from "../../../services/machine-cache/bench/machine-cache-bench.js";
import { table } from "../harness/report.js";
import { mb, median } from "../harness/stats.js";
import { requireEnv, type Suite } from "../harness/suite.js";
import { callsOf } from "./machine-cache.js";

const CALLERS = 64;

/** Bytes a GET asked for: its Range, or the whole blob. */
function requestedBytes(range: string | undefined, size: number): number {
  const m = /^bytes=(\d+)-(\d*)$/.exec(range ?? "");
  if (!m) return size;
  const end = m[2] ? Math.min(Number(m[2]), size - 1) : size - 1;
  return end - Number(m[1]) + 1;
}

/**
 * 64 concurrent EnsureLoras for one uncached LoRA against a single caller.
 * Blob reads are counted by the counting proxy of the machine-cache tests:
 * a registry and gateway of their own sign URLs whose endpoint is the proxy.
 */
export const singleFlightSuite: Suite = {
  id: "single-flight",
  title: "64 concurrent EnsureLoras for one uncached LoRA vs a single caller",
  needsEnvironment: true,
  async run(ctx) {
    const env = requireEnv(ctx);
    const lora = await ctx.loras.get("main", ctx.sizes.mainBytes);
    const endpoint = new URL(env.azurite.blobEndpoint);
    const proxy = await startFaultProxy(endpoint.origin);
    const proxied = await env.startRegistryAndGateway({
      azureConnectionString: azuriteConnectionString(`${proxy.origin}${endpoint.pathname}`),
    });
    const cache = await env.startMachineCache("single-flight", { registryUrl: proxied.registry.url });
    try {
      const calls = callsOf(env, cache);
      const blobPath = `/users/${env.userId}/loras/${lora.loraId}.safetensors`;
      const reads = (from: number) =>
        proxy.requests
          .slice(from)
          .filter(
            (r) =>
              r.method === "GET" &&
              r.path.split("?")[0]?.endsWith(blobPath) &&
              r.path.includes("sig=") &&
              r.status < 300,
          );
      const round = async (callers: number, job: string) => {
        await calls.evict([lora.loraId]);
        const from = proxy.requests.length;
        const started = performance.now();
        const answers = await Promise.all(
          Array.from({ length: callers }, (_, i) => calls.ensure([lora.loraId], `${job}-${i}`)),
        );
        const seconds = (performance.now() - started) / 1000;
        const results = answers.flatMap((a) => a.results);
        if (results.length !== callers || results.some((r) => r.error)) {
          throw new Error(`unexpected EnsureLoras answers: ${JSON.stringify(results.filter((r) => r.error))}`);
        }
        expectDownloaded(
          results.filter((r) => Number(r.bytesDownloaded ?? 0) > 0),
          1,
        );
        const seen = reads(from);
        const bytes = seen.reduce((n, r) => n + requestedBytes(r.range, lora.sizeBytes), 0);
        return { seconds, gets: seen.length, copies: bytes / lora.sizeBytes };
      };
      const single: Awaited<ReturnType<typeof round>>[] = [];
      const many: Awaited<ReturnType<typeof round>>[] = [];
      for (let r = 1; r <= ctx.sizes.rounds; r++) {
        single.push(await round(1, `one-${r}`));
        many.push(await round(CALLERS, `many-${r}`));
        ctx.log(`single flight round ${r}/${ctx.sizes.rounds}`);
      }
      const copies = Math.max(...many.map((m) => m.copies));
      if (copies > 1.0001) throw new Error(`${CALLERS} callers made the blob be read ${copies.toFixed(2)} times`);
      const s1 = median(single.map((x) => x.seconds));
      const s64 = median(many.map((x) => x.seconds));
      return {
        figures: [
          {
            benchmark: `${CALLERS} concurrent EnsureLoras, one uncached ${mb(lora.sizeBytes).toFixed(0)} MB LoRA: blob downloads`,
            measured: `${copies.toFixed(2)} × the blob`,
            baseline: `1 (one download)`,
            ratio: copies,
            ratioOf: "downloads",
            target: "= 1",
          },
          {
            benchmark: `${CALLERS} concurrent EnsureLoras vs a single caller`,
            measured: `${s64.toFixed(2)} s until all ${CALLERS} answered`,
            baseline: `${s1.toFixed(2)} s`,
            ratio: s64 / s1,
            ratioOf: "wall time",
          },
        ],
        details: [
          `The LoRA is evicted before each round. Each of the ${CALLERS} callers is resolved (and access-checked) ` +
            `by the registry on its own; the file is downloaded once and the others wait for that download. Blob ` +
            `reads counted by the counting proxy (\`libs/testkit/src/fault-proxy.ts\`) as ` +
            `successful signed GETs of the blob; "× the blob" = bytes those GETs asked for ÷ blob size (a download ` +
            `is several ranged GETs).`,
          "",
          table(
            ["round", "callers", "wall s", "signed GETs of the blob", "× the blob"],
            [...single.map((x, i) => [i + 1, 1, x]), ...many.map((x, i) => [i + 1, CALLERS, x])].map(([i, n, x]) => {
              const r = x as { seconds: number; gets: number; copies: number };
              return [i as number, n as number, r.seconds.toFixed(2), r.gets, r.copies.toFixed(2)];
            }),
          ),
        ].join("\n"),
      };
    } finally {
      await cache.stop();
      await proxied.registry.stop();
      await proxied.gateway.stop();
      await proxy.close();
    }
  },
};
