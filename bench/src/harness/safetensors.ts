import { randomBytes } from "node:crypto";
import { MiB } from "./stats.js";

export interface SafetensorsOptions {
  /** Bytes per tensor (F16); the last tensor takes the remainder as U8. Default 2 MiB. */
  tensorBytes?: number;
  /** Size of the yielded blocks. Default 8 MiB. */
  blockBytes?: number;
}

/**
 * A valid LoRA-like safetensors file of exactly `totalBytes`, as blocks:
 * kohya metadata, 2 MiB F16 tensors of random noise tiling the data
 * section, the header padded with spaces. Never held in memory whole.
 */
export function* safetensorsBlocks(totalBytes: number, opts: SafetensorsOptions = {}): Generator<Buffer> {
  const tensorBytes = opts.tensorBytes ?? 2 * MiB;
  const blockBytes = opts.blockBytes ?? 8 * MiB;
  const headerFor = (dataBytes: number) => {
    const header: Record<string, unknown> = {
      __metadata__: { ss_network_dim: "64", ss_network_alpha: "32", ss_base_model_version: "sdxl_base_v1-0" },
    };
    for (let begin = 0, i = 0; begin < dataBytes; begin += tensorBytes, i++) {
      const end = Math.min(dataBytes, begin + tensorBytes);
      const whole = end - begin === tensorBytes && tensorBytes % 2 === 0;
      header[`lora_unet_block_${i}.lora_down.weight`] = {
        dtype: whole ? "F16" : "U8",
        shape: whole ? [tensorBytes / 2] : [end - begin],
        data_offsets: [begin, end],
      };
    }
    return JSON.stringify(header);
  };
  // The header's length depends on the data size and the other way round: grow it until it fits.
  let headerBytes = 0;
  let text = headerFor(totalBytes - 8);
  while (text.length > headerBytes) {
    headerBytes = Math.ceil((text.length + 64) / 8) * 8;
    if (totalBytes - 8 - headerBytes < 0) throw new Error(`${totalBytes} bytes cannot hold a safetensors header`);
    text = headerFor(totalBytes - 8 - headerBytes);
  }
  text = text.padEnd(headerBytes, " ");
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(headerBytes));
  const noise = randomBytes(blockBytes);
  let head: Buffer = Buffer.concat([length, Buffer.from(text)]);
  let data = totalBytes - 8 - headerBytes;
  while (head.length > 0 || data > 0) {
    if (head.length >= blockBytes) {
      yield head.subarray(0, blockBytes);
      head = head.subarray(blockBytes);
      continue;
    }
    const take = Math.min(data, blockBytes - head.length);
    // Only the block holding the header is copied; the others are views of the noise.
    yield head.length > 0 ? Buffer.concat([head, noise.subarray(0, take)]) : noise.subarray(0, take);
    head = Buffer.alloc(0);
    data -= take;
  }
}
