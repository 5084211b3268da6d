/** The reference implementation refuses headers above 100 MB; so do we, before buffering them. */
export const SAFETENSORS_MAX_HEADER_BYTES = 100_000_000;
/**
 * Tensors one header may declare (the reference has no limit). A LoRA has a few hundred to a few thousand, a full
 * SDXL checkpoint about 2,500; the cap keeps a 100 MB header of tiny tensors from costing gigabytes.
 */
export const SAFETENSORS_MAX_TENSORS = 100_000;
/** Entries of `__metadata__` (kohya writes about 50); for the same reason. */
export const SAFETENSORS_MAX_METADATA_ENTRIES = 100_000;
