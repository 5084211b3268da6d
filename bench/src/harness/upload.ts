import { BlockBlobClient } from "@azure/storage-blob";
import type { Client } from "@connectrpc/connect";
import type { LoraService } from "@emprops/contracts";
import { safetensorsBlocks } from "./safetensors.js";

/** Put Blocks in flight at once, as the gateway's own streaming upload does. */
export const BLOCKS_IN_FLIGHT = 4;

/** Put Block of every block (at most BLOCKS_IN_FLIGHT at a time), then Put Block List. */
export async function putBlocks(blob: BlockBlobClient, blocks: Iterable<Buffer>): Promise<number> {
  const ids: string[] = [];
  const inFlight = new Set<Promise<unknown>>();
  let bytes = 0;
  for (const block of blocks) {
    const id = Buffer.from(String(ids.length).padStart(8, "0")).toString("base64");
    ids.push(id);
    bytes += block.length;
    const p = blob.stageBlock(id, block, block.length).finally(() => inFlight.delete(p));
    inFlight.add(p);
    if (inFlight.size >= BLOCKS_IN_FLIGHT) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  await blob.commitBlockList(ids);
  return bytes;
}

/** When a step ran, on the monotonic clock of --cpu-prof profiles (µs). */
export interface StepWindow {
  fromUs: number;
  toUs: number;
}

/** Now on the monotonic clock V8's CPU profiles use (µs). */
export const monotonicUs = (): number => Number(process.hrtime.bigint() / 1000n);

export interface TimedUpload {
  loraId: string;
  sha256: string;
  /** CreateLoraUpload. */
  createSeconds: number;
  /** Put Block × n + Put Block List with the signed URL. */
  blocksSeconds: number;
  /** CompleteLoraUpload (the gateway's verification pass). */
  completeSeconds: number;
  windows: { create: StepWindow; blocks: StepWindow; complete: StepWindow };
}

/**
 * A LoRA of `sizeBytes` through the registry's public flow, each step
 * timed: CreateLoraUpload, the blocks in the recommended block size, then
 * CompleteLoraUpload. The data are generated on the fly (never all in memory).
 */
export async function uploadLora(
  lora: Client<typeof LoraService>,
  name: string,
  sizeBytes: number,
): Promise<TimedUpload> {
  let from = monotonicUs();
  const lap = (): StepWindow => {
    const window = { fromUs: from, toUs: monotonicUs() };
    from = window.toUs;
    return window;
  };
  const seconds = (w: StepWindow) => (w.toUs - w.fromUs) / 1e6;
  const created = await lora.createLoraUpload({ name, sizeBytes: BigInt(sizeBytes) });
  const create = lap();
  const blockBytes = Number(created.blockSizeBytes) || 8 * 1024 * 1024;
  const blob = new BlockBlobClient(created.uploadUrl);
  await putBlocks(blob, safetensorsBlocks(sizeBytes, { blockBytes }));
  const blocks = lap();
  const done = await lora.completeLoraUpload({ uploadId: created.upload?.uploadId ?? "" }, { timeoutMs: 1_200_000 });
  const complete = lap();
  if (!done.lora?.id || Number(done.lora.sizeBytes) !== sizeBytes) {
    throw new Error(`upload of ${name} did not complete as expected`);
  }
  return {
    loraId: done.lora.id,
    sha256: done.lora.sha256,
    createSeconds: seconds(create),
    blocksSeconds: seconds(blocks),
    completeSeconds: seconds(complete),
    windows: { create, blocks, complete },
  };
}
