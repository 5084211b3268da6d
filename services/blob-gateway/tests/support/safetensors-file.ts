/** Bytes per element of the safetensors dtypes the tests use. */
export const DTYPE_SIZES: Record<string, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

export interface TensorSpec {
  name: string;
  dtype: string;
  shape: number[];
}

export interface TensorEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

/** The header of a well-formed file: contiguous tensors in the given order. */
export function safetensorsHeader(
  tensors: TensorSpec[],
  metadata?: Record<string, string>,
): { header: Record<string, unknown>; dataBytes: number } {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    const bytes = t.shape.reduce((a, b) => a * b, 1) * (DTYPE_SIZES[t.dtype] ?? 1);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] } satisfies TensorEntry;
    offset += bytes;
  }
  return { header, dataBytes: offset };
}

/** 8-byte little-endian length, the header text padded with spaces to 8 bytes, then the data. */
export function safetensorsPrefix(headerText: string | Buffer, declaredLength?: number): Buffer {
  const text = typeof headerText === "string" ? Buffer.from(headerText, "utf8") : headerText;
  const padded = Buffer.concat([text, Buffer.alloc((8 - (text.length % 8)) % 8, " ")]);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(declaredLength ?? padded.length));
  return Buffer.concat([length, padded]);
}

/** A whole, valid safetensors file with deterministic tensor data. */
export function safetensorsFile(tensors: TensorSpec[], metadata?: Record<string, string>): Buffer {
  const { header, dataBytes } = safetensorsHeader(tensors, metadata);
  const data = Buffer.alloc(dataBytes);
  for (let i = 0; i < dataBytes; i++) data[i] = (i * 31 + 7) & 0xff;
  return Buffer.concat([safetensorsPrefix(JSON.stringify(header)), data]);
}

/** A few LoRA-shaped tensors (down/up/alpha per layer), as kohya writes them. */
export function loraTensors(layers = 2, rank = 4, width = 16): TensorSpec[] {
  const specs: TensorSpec[] = [];
  for (let i = 0; i < layers; i++) {
    const base = `lora_unet_down_blocks_0_attentions_${i}_proj_in`;
    specs.push({ name: `${base}.lora_down.weight`, dtype: "F16", shape: [rank, width] });
    specs.push({ name: `${base}.lora_up.weight`, dtype: "F16", shape: [width, rank] });
    specs.push({ name: `${base}.alpha`, dtype: "F16", shape: [] });
  }
  return specs;
}
