import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type LoraSize, LoraSizeSchema } from "@emprops/contracts";
import type { LoraSizeRow } from "./lora-query.js";

const GIB = 1024 ** 3;

export function toLoraSize(r: LoraSizeRow): LoraSize {
  return create(LoraSizeSchema, {
    id: r.id,
    name: r.name,
    sizeBytes: BigInt(r.size_bytes),
    sizeGb: Number(r.size_bytes) / GIB,
    pending: r.pending,
    lastUsedAt: r.last_used_at ? timestampFromDate(r.last_used_at) : undefined,
  });
}
