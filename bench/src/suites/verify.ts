import { BlobServiceClient } from "@azure/storage-blob";
import {
  PLAIN_READ,
  PLAIN_READ_SHA,
  RANGED_READ,
  SHA_IN_MEMORY,
  VERIFY,
  VERIFY_ONE_STREAM,
  type VerifyTarget,
  verifyThroughput,
} from "../../../services/blob-gateway/bench/verify-throughput.js";
import type { BenchEnvironment } from "../harness/environment.js";
import { table } from "../harness/report.js";
import { mb, median } from "../harness/stats.js";
import { requireEnv, type Suite } from "../harness/suite.js";

/** What VerifyBlob must find for a LoRA uploaded through the registry. */
export function verifyTargetOf(
  env: BenchEnvironment,
  lora: { loraId: string; sizeBytes: number; sha256: string },
): VerifyTarget {
  return {
    blob: BlobServiceClient.fromConnectionString(env.azurite.connectionString)
      .getContainerClient(env.userContainer)
      .getBlockBlobClient(`users/${env.userId}/loras/${lora.loraId}.safetensors`),
    ref: { userId: env.userId, loraId: lora.loraId, extension: "safetensors" },
    size: lora.sizeBytes,
    sha256: lora.sha256,
  };
}

/** VerifyBlob on the main LoRA's blob against plain reads and sha256 in memory (the gateway's bench). */
export const verifySuite: Suite = {
  id: "verify",
  title: "VerifyBlob vs a plain sequential read and vs sha256 in memory",
  needsEnvironment: true,
  async run(ctx) {
    const env = requireEnv(ctx);
    const lora = await ctx.loras.get("main", ctx.sizes.mainBytes);
    const oneStream = await env.startGateway({ env: { VERIFY_READ_CONNECTIONS: "1" } });
    const { rows, memory } = await verifyThroughput({
      target: verifyTargetOf(env, lora),
      gateway: env.main.gateway,
      oneStream,
      token: env.tokens.service,
      rounds: ctx.sizes.rounds,
      log: ctx.log,
    }).finally(() => oneStream.stop());
    const s = (label: string) => median(rows[label]!);
    const rate = (label: string) => `${(mb(lora.sizeBytes) / s(label)).toFixed(0)} MB/s`;
    const size = `${mb(lora.sizeBytes).toFixed(0)} MB`;
    return {
      figures: [
        {
          benchmark: `VerifyBlob of ${size} vs a plain sequential read (same client)`,
          measured: rate(VERIFY),
          baseline: rate(PLAIN_READ),
          ratio: s(PLAIN_READ) / s(VERIFY),
          ratioOf: "throughput",
        },
        {
          benchmark: `VerifyBlob of ${size} vs sha256 of the same bytes in memory`,
          measured: rate(VERIFY),
          baseline: rate(SHA_IN_MEMORY),
          ratio: s(SHA_IN_MEMORY) / s(VERIFY),
          ratioOf: "throughput",
        },
      ],
      details: [
        `The gateway (its own process) verifies the main LoRA's blob: its reads (by default ranged GETs of ` +
          `VERIFY_READ_RANGE_MB, VERIFY_READ_CONNECTIONS in flight, in byte order) with magic bytes, strict ` +
          `safetensors header parse, sha256 and size; a second gateway reads it as one stream. Baselines in the harness process with @azure/storage-blob ` +
          `(shared key): the same blob read sequentially, read and hashed, read as 4 × 8 MiB ranges, and sha256 of ` +
          `its bytes already in memory (8 MiB slices). Rounds interleaved; ${ctx.sizes.rounds} rounds, median.`,
        "",
        table(
          ["", "median s", "MB/s", "÷ VerifyBlob throughput", "all rounds, s"],
          [PLAIN_READ, PLAIN_READ_SHA, RANGED_READ, SHA_IN_MEMORY, VERIFY, VERIFY_ONE_STREAM].map((label) => [
            label,
            s(label).toFixed(2),
            (mb(lora.sizeBytes) / s(label)).toFixed(0),
            (s(VERIFY) / s(label)).toFixed(2),
            rows[label]!.map((x) => x.toFixed(2)).join(" "),
          ]),
        ),
        "",
        `Gateway RSS during the calls: ${mb(memory.before).toFixed(0)} MB before, peak ${mb(memory.peak).toFixed(0)} MB.`,
      ].join("\n"),
    };
  },
};
