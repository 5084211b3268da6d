// Element sizes in bits of every dtype the safetensors format defines (safetensors/src/tensor.rs `Dtype::bitsize`).
// Sub-byte types (F4, F6_*) are legal as long as a tensor's elements fill whole bytes.
const DTYPE_BITS = {
  BOOL: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  F8_E4M3FNUZ: 8,
  F8_E5M2FNUZ: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  C64: 64,
  F64: 64,
  I64: 64,
  U64: 64,
} as const;

export type SafetensorsDtype = keyof typeof DTYPE_BITS;

export const SAFETENSORS_DTYPES: readonly SafetensorsDtype[] = Object.keys(DTYPE_BITS) as SafetensorsDtype[];

export function isSafetensorsDtype(value: string): value is SafetensorsDtype {
  return Object.prototype.hasOwnProperty.call(DTYPE_BITS, value);
}

export function dtypeBits(dtype: SafetensorsDtype): number {
  return DTYPE_BITS[dtype];
}
