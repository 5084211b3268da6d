import os from "node:os";
import path from "node:path";
import { VERIFY, VERIFY_ONE_STREAM, verifyOnce } from "../../../services/blob-gateway/bench/verify-throughput.js";
import { aria2Download, ensureDownloadTools, removeDownload } from "../harness/download-tools.js";
import { table } from "../harness/report.js";
import { describeLink, type ShapedLink, startShapedLink } from "../harness/shaped-link.js";
import { mb, median, MiB } from "../harness/stats.js";
import { requireEnv, type Suite, type SuiteContext } from "../harness/suite.js";
import { measureRounds } from "../../../services/machine-cache/bench/machine-cache-bench.js";
import { verifyTargetOf } from "./verify.js";
import {
  callsOf,
  coldFetchReport,
  coldFetchRounds,
  ENSURE_COLD,
  coresTable,
  threeLoraIds,
  threeLorasReport,
  watchedOf,
} from "./machine-cache.js";

/**
 * The run's shaped link, started by the first suite that needs it and shared
 * by the others (its registry and gateway cost seconds to start); stopped
 * with the run (stopShapedLink).
 */
const links = new WeakMap<SuiteContext["earlier"], Promise<ShapedLink>>();

async function withShapedLink<T>(ctx: SuiteContext, fn: (link: ShapedLink) => Promise<T>): Promise<T> {
  let link = links.get(ctx.earlier);
  if (!link) {
    link = startShapedLink(requireEnv(ctx), ctx.link);
    links.set(ctx.earlier, link);
  }
  return fn(await link);
}

/** Stops the run's shaped link, if a suite started one. */
export async function stopShapedLink(ctx: SuiteContext): Promise<void> {
  const link = links.get(ctx.earlier);
  links.delete(ctx.earlier);
  await (await link?.catch(() => undefined))?.stop();
}

const proxyNote = (ctx: SuiteContext) =>
  `The link: libs/testkit's fault proxy shaping every connection (${describeLink(ctx.link)}) in front of the ` +
  `run's Azurite; a registry and gateway of the suite's own sign URLs through it, so the machine cache, the ` +
  `gateway and every baseline tool cross the same shaped link. The proxy runs in the harness process.`;

export const shapedFetchSuite: Suite = {
  id: "shaped-fetch",
  title: "Cold fetch on a link shaped like the cloud: EnsureLoras vs aria2c, curl and undici",
  needsEnvironment: true,
  async run(ctx) {
    const env = requireEnv(ctx);
    const lora = await ctx.loras.get("main", ctx.sizes.mainBytes);
    return withShapedLink(ctx, async (link) => {
      const cache = await env.startMachineCache("shaped", { registryUrl: link.pair.registry.url });
      try {
        const run = await coldFetchRounds(ctx, {
          cache,
          calls: callsOf(env, cache),
          loraId: lora.loraId,
          url: () => link.readUrl(lora.loraId),
        });
        const { figures, table: rows } = coldFetchReport(run, {
          sizeBytes: lora.sizeBytes,
          where: "shaped link",
          targets: { curl: "≤ 0.3", aria2: "≤ 1.1", cpu: "≤ 1.2" },
        });
        return {
          data: { ensureSeconds: median(run.rows[ENSURE_COLD]!.map((r) => r.seconds)) },
          figures,
          details: [
            `The cold fetch of the loopback suite (same steps, same default machine cache) on a shaped link. ` +
              `${proxyNote(ctx)} aria2c gets the connections and part size the cache used ` +
              `(${run.connections}, ${run.partBytes / MiB} MiB). ${ctx.sizes.rounds} rounds, median.`,
            "",
            rows,
          ].join("\n"),
        };
      } finally {
        await cache.stop();
      }
    });
  },
};

export const shapedThreeSuite: Suite = {
  id: "shaped-three",
  title: "Three LoRAs in one EnsureLoras vs one after another, on a link shaped like the cloud",
  needsEnvironment: true,
  async run(ctx) {
    const env = requireEnv(ctx);
    const ids = await threeLoraIds(ctx);
    try {
      return await withShapedLink(ctx, async (link) => {
        const cache = await env.startMachineCache("shaped-three", { registryUrl: link.pair.registry.url });
        try {
          const { figure, table: rows } = await threeLorasReport(ctx, {
            calls: callsOf(env, cache),
            ids,
            where: "shaped link",
            target: "≤ 0.5",
            watched: watchedOf(env, cache),
          });
          return {
            figures: [figure],
            details: [
              `All three evicted before each variant. ${proxyNote(ctx)} ${ctx.sizes.rounds} rounds, median.`,
              "",
              rows,
            ].join("\n"),
          };
        } finally {
          await cache.stop();
        }
      });
    } finally {
      for (const n of [1, 2, 3]) await ctx.loras.drop(`three-${n}`);
    }
  },
};

const ARIA2_READ = "aria2c reading the blob";

export const shapedVerifySuite: Suite = {
  id: "shaped-verify",
  title: "VerifyBlob on a link shaped like the cloud vs aria2c reading the same blob",
  needsEnvironment: true,
  async run(ctx) {
    const env = requireEnv(ctx);
    const lora = await ctx.loras.get("main", ctx.sizes.mainBytes);
    ensureDownloadTools(ctx.log);
    return withShapedLink(ctx, async (link) => {
      const target = verifyTargetOf(env, lora);
      const gateway = link.pair.gateway;
      // The same link, a gateway reading every blob as one stream: what the ranged reads are measured against.
      const oneStream = await env.startGateway({
        env: { VERIFY_READ_CONNECTIONS: "1" },
        azureConnectionString: link.proxy.viaConnectionString(env.azurite.connectionString),
      });
      const file = path.join(env.work, "verify-baseline.download");
      const aria2 = { connections: 4, partBytes: 16 * MiB };
      const verify = async (g: typeof gateway) => ({
        seconds: (await verifyOnce(g, env.tokens.service, target)).seconds,
      });
      try {
        await verify(gateway); // warm-up
        const rows = await measureRounds(
          {
            [ARIA2_READ]: async () => {
              const got = await aria2Download(await link.readUrl(lora.loraId), file, aria2);
              await removeDownload(file);
              return got;
            },
            [VERIFY]: () => verify(gateway),
            [VERIFY_ONE_STREAM]: () => verify(oneStream),
          },
          ctx.sizes.rounds,
          {
            log: ctx.log,
            what: "shaped verify round",
            watched: watchedOf(
              env,
              { name: "blob-gateway (ranged)", pid: gateway.pid },
              { name: "blob-gateway (one stream)", pid: oneStream.pid },
            ),
          },
        );
        const s = (label: string) => median(rows[label]!.map((r) => r.seconds));
        const secs = (label: string) => `${s(label).toFixed(2)} s (${(mb(lora.sizeBytes) / s(label)).toFixed(0)} MB/s)`;
        return {
          figures: [
            {
              benchmark: `VerifyBlob of ${mb(lora.sizeBytes).toFixed(0)} MB, shaped link: vs aria2c reading the same blob (${aria2.connections} connections)`,
              measured: secs(VERIFY),
              baseline: secs(ARIA2_READ),
              ratio: s(VERIFY) / s(ARIA2_READ),
              ratioOf: "wall time",
            },
          ],
          details: [
            `The gateway of the shaped link verifies the main LoRA's blob (VerifyBlob: magic bytes, strict safetensors ` +
              `header, sha256, size), reading it through the link. Baseline: aria2c downloading the same blob to ` +
              `disk through the same link (${aria2.connections} connections, ${aria2.partBytes / MiB} MiB splits); and a ` +
              `gateway of the same link reading the blob as one stream (VERIFY_READ_CONNECTIONS=1). ` +
              `${proxyNote(ctx)} ${ctx.sizes.rounds} rounds, median.`,
            "",
            table(
              ["", "median s", "MB/s", "÷ aria2c's time", "all rounds, s"],
              Object.keys(rows).map((label) => [
                label,
                s(label).toFixed(2),
                (mb(lora.sizeBytes) / s(label)).toFixed(0),
                (s(label) / s(ARIA2_READ)).toFixed(2),
                rows[label]!.map((x) => x.seconds.toFixed(2)).join(" "),
              ]),
            ),
            "",
            coresTable(rows, os.cpus().length),
          ].join("\n"),
        };
      } finally {
        await oneStream.stop();
      }
    });
  },
};
