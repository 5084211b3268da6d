import fs from "node:fs/promises";
import path from "node:path";
import { BlobServiceClient } from "@azure/storage-blob";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { LoraService } from "@emprops/contracts";
import { bearerInterceptor, mintToken } from "@emprops/platform";
import { startAzurite } from "@emprops/testkit";
import { type ProfileSummary, summariseProfile } from "../harness/cpu-profile.js";
import { BENCH_SECRET } from "../harness/environment.js";
import { table } from "../harness/report.js";
import { profileSelf } from "../harness/self-profile.js";
import { requireEnv, type Suite } from "../harness/suite.js";
import { monotonicUs, type StepWindow, uploadLora } from "../harness/upload.js";
import { callsOf } from "./machine-cache.js";

interface Step {
  name: string;
  window: StepWindow;
  /** The processes doing this step's work, by profile file. */
  processes: string[];
}

interface Flow {
  name: string;
  steps: Step[];
}

const seconds = (w: StepWindow) => (w.toUs - w.fromUs) / 1e6;

/**
 * One upload + complete, one cold fetch and a series of cached hits against a
 * registry, gateway, machine cache and Azurite all started with --cpu-prof
 * (and the harness profiling itself as the uploading client); each flow's
 * slowest step is found from its own timings, and the profiles of the
 * processes doing that step are summarised over exactly its time window.
 */
export const profilesSuite: Suite = {
  id: "profiles",
  title: "CPU profiles (node --cpu-prof) of the slowest step of each flow",
  needsEnvironment: true,
  async run(ctx) {
    const env = requireEnv(ctx);
    // Only the last run's profiles of a mode are kept (an Azurite profile alone can be tens of MB).
    const dir = path.join(ctx.profileDir, ctx.mode);
    await fs.rm(dir, { recursive: true, force: true });
    await fs.mkdir(dir, { recursive: true });
    const prof = (name: string) => ["--cpu-prof", `--cpu-prof-dir=${dir}`, `--cpu-prof-name=${name}.cpuprofile`];
    const file = (name: string) => path.join(dir, `${name}.cpuprofile`);
    const azurite = await startAzurite({ nodeArgs: prof("azurite") });
    const flows: Flow[] = [];
    try {
      const service = BlobServiceClient.fromConnectionString(azurite.connectionString);
      await Promise.all(
        [env.userContainer, env.sharedContainer].map((c) => service.getContainerClient(c).createIfNotExists()),
      );
      const pair = await env.startRegistryAndGateway({
        azureConnectionString: azurite.connectionString,
        nodeArgs: { registry: prof("lora-registry"), gateway: prof("blob-gateway") },
      });
      const cache = await env.startMachineCache("profiled", {
        registryUrl: pair.registry.url,
        nodeArgs: prof("machine-cache"),
      });
      try {
        const token = await mintToken(BENCH_SECRET, { subject: env.userId, roles: [], ttlSeconds: 86_400 });
        const lora = createClient(
          LoraService,
          createGrpcTransport({ baseUrl: pair.registry.url, interceptors: [bearerInterceptor(token)] }),
        );
        ctx.log("profiling an upload + complete ...");
        const upload = await profileSelf(file("harness-client"), () =>
          uploadLora(lora, "bench-profiled.safetensors", ctx.sizes.mainBytes),
        );
        flows.push({
          name: "upload + complete",
          steps: [
            { name: "CreateLoraUpload", window: upload.windows.create, processes: ["lora-registry", "blob-gateway"] },
            {
              name: "Put Block × n + Put Block List (client → storage)",
              window: upload.windows.blocks,
              processes: ["azurite", "harness-client"],
            },
            {
              name: "CompleteLoraUpload (verification)",
              window: upload.windows.complete,
              processes: ["blob-gateway", "azurite", "lora-registry"],
            },
          ],
        });

        ctx.log("profiling a cold fetch ...");
        const calls = callsOf(env, cache);
        const fromUs = monotonicUs();
        const cold = await calls.ensure([upload.loraId], "profile-cold");
        const toUs = monotonicUs();
        if (!cold.results[0] || cold.results[0].error || cold.results[0].cacheHit) {
          throw new Error(`unexpected cold fetch: ${JSON.stringify(cold.results)}`);
        }
        // The service logs how long its download took (reserve, transfer, sha256, fsync, rename, register).
        const downloaded = cache
          .output()
          .split("\n")
          .filter((l) => l.includes('"downloaded LoRA"'))
          .map((l) => JSON.parse(l) as { ms: number })
          .pop();
        if (!downloaded) throw new Error("the machine cache logged no download");
        const downloadUs = downloaded.ms * 1000;
        flows.push({
          name: "cold fetch (EnsureLoras, not cached)",
          steps: [
            {
              name: "download: reserve, transfer, sha256, fsync, rename, register",
              // Ends when the service answered; its own clock's duration, placed before the answer.
              window: { fromUs: toUs - downloadUs, toUs },
              processes: ["machine-cache", "azurite"],
            },
            {
              name: "the rest: resolve through the registry, pin, answer",
              window: { fromUs, toUs: toUs - downloadUs },
              processes: ["machine-cache", "lora-registry", "blob-gateway"],
            },
          ],
        });

        ctx.log("profiling cached hits ...");
        const hitsFrom = monotonicUs();
        for (let i = 0; i < ctx.sizes.latencyCalls; i++) {
          const hit = await calls.ensure([upload.loraId], `profile-hit-${i}`);
          if (!hit.results[0]?.cacheHit) throw new Error("expected a cache hit");
        }
        flows.push({
          name: `cached hit (${ctx.sizes.latencyCalls} EnsureLoras, one at a time)`,
          steps: [
            {
              name: "EnsureLoras answered from model_cache.db",
              window: { fromUs: hitsFrom, toUs: monotonicUs() },
              processes: ["machine-cache"],
            },
          ],
        });
      } finally {
        await cache.stop();
        await pair.registry.stop();
        await pair.gateway.stop();
      }
    } finally {
      await azurite.stop();
    }

    const sections: string[] = [
      `Profiles of one run against a registry, gateway, machine cache and Azurite each started with \`node ` +
        `--cpu-prof\`, and the harness (the uploading client) profiled through the inspector; written to ` +
        `\`${path.relative(path.resolve(ctx.profileDir, "../.."), dir)}/\` (not committed). Each step's window is ` +
        `taken from the harness's own clock (the profiles' monotonic clock); self time of the busiest frames of ` +
        `the processes doing the slowest step, as a share of that process's busy (non-idle) time in the window.`,
    ];
    const slowest: {
      flow: string;
      step: string;
      seconds: number;
      summaries: { process: string; s: ProfileSummary }[];
    }[] = [];
    for (const flow of flows) {
      const total = flow.steps.reduce((n, x) => n + seconds(x.window), 0);
      const step = [...flow.steps].sort((a, b) => seconds(b.window) - seconds(a.window))[0]!;
      const summarise = (st: Step) =>
        st.processes
          .map((process) => ({ process, s: summariseProfile(file(process), st.window, 10) }))
          .sort((a, b) => b.s.busyMs - a.s.busyMs);
      slowest.push({ flow: flow.name, step: step.name, seconds: seconds(step.window), summaries: summarise(step) });
      sections.push(
        "",
        `#### ${flow.name}`,
        "",
        table(
          ["step", "s", "share of the flow"],
          flow.steps.map((st) => [
            st === step ? `**${st.name}** (slowest)` : st.name,
            seconds(st.window).toFixed(3),
            `${((100 * seconds(st.window)) / total).toFixed(0)} %`,
          ]),
        ),
      );
      // The slowest step, and any other that takes a quarter of the flow or more.
      const shown = [step, ...flow.steps.filter((st) => st !== step && seconds(st.window) >= total / 4)];
      for (const st of shown) {
        // The two processes that worked most in the step's window.
        for (const { process, s } of summarise(st).filter((x, i) => i < 2 && x.s.busyMs > 0)) {
          sections.push(
            "",
            `*${st.name}* — ${process}: busy ${s.busyMs.toFixed(0)} ms of the ${s.windowMs.toFixed(0)} ms window ` +
              `(${((100 * s.busyMs) / s.windowMs).toFixed(0)} % of one core). By origin: ` +
              s.areas
                .filter((a) => a.share >= 0.02)
                .map((a) => `${a.area} ${(100 * a.share).toFixed(0)} %`)
                .join(", ") +
              ".",
            "",
            table(
              ["frame (self time)", "called from", "ms", "share"],
              s.top.map((f) => [
                `\`${f.frame}\``,
                f.via ? `\`${f.via}\`` : "",
                f.selfMs.toFixed(0),
                `${(100 * f.share).toFixed(1)} %`,
              ]),
            ),
          );
        }
      }
    }
    return { figures: [], data: slowest, details: sections.join("\n") };
  },
};
