import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { health, LoraService } from "@emprops/contracts";
import { bearerInterceptor, mintToken } from "@emprops/platform";
import { cpuShareDuring } from "../harness/cpu.js";
import { BENCH_SECRET } from "../harness/environment.js";
import { type ClosedLoop, closedLoop } from "../harness/load.js";
import { table } from "../harness/report.js";
import { percentile } from "../harness/stats.js";
import { requireEnv, type Suite } from "../harness/suite.js";

const CONCURRENCY = 32;

/** GetLora at 32 concurrent callers against the health check at the same concurrency, same client. */
export const getLoraRpsSuite: Suite = {
  id: "get-lora-rps",
  title: "GetLora requests per second at 32 concurrent callers vs the health check",
  needsEnvironment: true,
  async run(ctx) {
    const env = requireEnv(ctx);
    const lora = await ctx.loras.get("main", ctx.sizes.mainBytes);
    const token = await mintToken(BENCH_SECRET, { subject: env.userId, roles: [], ttlSeconds: 86_400 });
    // One HTTP/2 connection, as a backend's gRPC channel; both calls through the same client.
    const transport = createGrpcTransport({ baseUrl: env.main.registry.url, interceptors: [bearerInterceptor(token)] });
    const loras = createClient(LoraService, transport);
    const checks = createClient(health.Health, transport);
    const getLora = async () => {
      const res = await loras.getLora({ loraId: lora.loraId });
      if (res.lora?.id !== lora.loraId) throw new Error("GetLora answered another LoRA");
    };
    const check = async () => {
      const res = await checks.check({});
      if (res.status !== health.HealthCheckResponse_ServingStatus.SERVING) throw new Error("registry not serving");
    };
    for (let i = 0; i < 200; i++) await Promise.all([getLora(), check()]);
    const pids = [env.main.registry.pid, process.pid];
    const runs: Record<string, { loop: ClosedLoop; shares: number[] }[]> = { GetLora: [], "health check": [] };
    // Interleaved halves, so both see the same moment of a shared machine.
    for (let half = 0; half < 2; half++) {
      for (const [label, call] of [
        ["health check", check],
        ["GetLora", getLora],
      ] as const) {
        const { result, shares } = await cpuShareDuring(pids, () =>
          closedLoop(CONCURRENCY, ctx.sizes.rpsSeconds / 2, call),
        );
        runs[label]!.push({ loop: result, shares });
      }
    }
    const summary = (label: string) => {
      const r = runs[label]!;
      const calls = r.reduce((n, x) => n + x.loop.calls, 0);
      const seconds = r.reduce((n, x) => n + x.loop.seconds, 0);
      const latencies = r.flatMap((x) => x.loop.latenciesMs);
      const share = (i: number) => r.reduce((n, x) => n + x.shares[i]! * x.loop.seconds, 0) / seconds;
      return { rps: calls / seconds, calls, latencies, registryCpu: share(0), clientCpu: share(1) };
    };
    const g = summary("GetLora");
    const h = summary("health check");
    return {
      figures: [
        {
          benchmark: `GetLora at ${CONCURRENCY} concurrent callers vs the health check`,
          measured: `${g.rps.toFixed(0)} req/s`,
          baseline: `${h.rps.toFixed(0)} req/s`,
          ratio: g.rps / h.rps,
          ratioOf: "requests/s",
        },
      ],
      details: [
        `${CONCURRENCY} callers in a closed loop for ${ctx.sizes.rpsSeconds} s per call (two interleaved halves), gRPC ` +
          `over one HTTP/2 connection from the harness process to the registry process (auth interceptor, ` +
          `PostgreSQL read of the LoRA with its usage and workflows). CPU is the share of one core each process ` +
          `used meanwhile (from /proc; 1.00 = one core busy).`,
        "",
        table(
          ["", "req/s", "calls", "p50 ms", "p99 ms", "registry CPU", "client CPU"],
          [
            ["GetLora", g],
            ["health check", h],
          ].map(([label, x]) => {
            const r = x as typeof g;
            return [
              label as string,
              r.rps.toFixed(0),
              r.calls,
              percentile(r.latencies, 50).toFixed(2),
              percentile(r.latencies, 99).toFixed(2),
              r.registryCpu.toFixed(2),
              r.clientCpu.toFixed(2),
            ];
          }),
        ),
      ].join("\n"),
    };
  },
};
