import { table } from "../harness/report.js";
import { mb, median } from "../harness/stats.js";
import { requireEnv, type Suite } from "../harness/suite.js";
import { type TimedUpload, uploadLora } from "../harness/upload.js";
import { verifyOnce } from "../../../services/blob-gateway/bench/verify-throughput.js";
import { verifyTargetOf } from "./verify.js";

export interface UploadSteps {
  create: number;
  blocks: number;
  complete: number;
}

/**
 * The user's upload of the "500 MB" LoRA through the public flow, each step
 * timed: the baseline is the block upload with the signed URL alone (Put
 * Block × n + Put Block List, same bytes, same client, the same moment).
 */
export const uploadSuite: Suite = {
  id: "upload",
  title: "Upload: block upload with the signed URL + CompleteLoraUpload vs the block upload alone",
  needsEnvironment: true,
  async run(ctx) {
    const env = requireEnv(ctx);
    const size = ctx.sizes.mainBytes;
    const uploads: (TimedUpload & { verifyAgain: number })[] = [];
    for (let round = 1; round <= ctx.sizes.rounds; round++) {
      const u = await uploadLora(env.lora, `bench-upload-${round}.safetensors`, size);
      // The same verification once more, of a blob storage has now read before: how much of the
      // completion is the first read of freshly written data.
      const again = await verifyOnce(
        env.main.gateway,
        env.tokens.service,
        verifyTargetOf(env, { ...u, sizeBytes: size }),
      );
      uploads.push({ ...u, verifyAgain: again.seconds });
      // The first upload serves the other suites as the main LoRA; the others go at once (Azurite keeps blobs in memory).
      if (round > 1) await env.lora.deleteLora({ loraId: u.loraId });
      ctx.log(`upload round ${round}/${ctx.sizes.rounds}: ${(u.blocksSeconds + u.completeSeconds).toFixed(2)} s`);
    }
    ctx.loras.adopt("main", uploads[0]!, size);
    const total = (u: TimedUpload) => u.createSeconds + u.blocksSeconds + u.completeSeconds;
    const steps: UploadSteps = {
      create: median(uploads.map((u) => u.createSeconds)),
      blocks: median(uploads.map((u) => u.blocksSeconds)),
      complete: median(uploads.map((u) => u.completeSeconds)),
    };
    const flow = median(uploads.map(total));
    const rate = (s: number) => `${(mb(size) / s).toFixed(0)} MB/s`;
    return {
      data: steps,
      figures: [
        {
          benchmark: `Upload of ${mb(size).toFixed(0)} MB: Create + blocks + CompleteLoraUpload vs the blocks alone`,
          measured: `${flow.toFixed(2)} s (${rate(flow)})`,
          baseline: `${steps.blocks.toFixed(2)} s (${rate(steps.blocks)})`,
          ratio: flow / steps.blocks,
          ratioOf: "wall time",
          target: "≤ 1.5",
        },
      ],
      details: [
        `${ctx.sizes.rounds} uploads of ${size.toLocaleString("en")} bytes through the registry (gRPC), blocks of the ` +
          `recommended size, 4 in flight, with @azure/storage-blob and the write-only signed URL. CompleteLoraUpload ` +
          `is the gateway's single verification pass (magic bytes, safetensors header, sha256, size) plus the ` +
          `registry's transaction. "VerifyBlob of it again": the gateway verifying the same blob right after, ` +
          `outside the flow (not counted), to tell the first read of freshly written data from a later one.`,
        "",
        table(
          [
            "round",
            "CreateLoraUpload s",
            "Put Block × n + Put Block List s",
            "CompleteLoraUpload s",
            "VerifyBlob of it again s",
            "flow s",
            "flow ÷ blocks",
          ],
          uploads.map((u, i) => [
            i + 1,
            u.createSeconds.toFixed(3),
            u.blocksSeconds.toFixed(2),
            u.completeSeconds.toFixed(2),
            u.verifyAgain.toFixed(2),
            total(u).toFixed(2),
            (total(u) / u.blocksSeconds).toFixed(2),
          ]),
        ),
      ].join("\n"),
    };
  },
};
