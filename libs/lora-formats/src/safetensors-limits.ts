/** The reference implementation refuses headers above 100 MB; so do we, before buffering them. */
export const SAFETENSORS_MAX_HEADER_BYTES = 100_000_000;
