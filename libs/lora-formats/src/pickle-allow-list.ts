// The globals a pickle inside a LoRA file may import: the weights-only allow-list of torch-pickle.ts. The
// PickleScanner (CPython's unpickler, modelled symbolically) uses it to name what a pickle found where none should
// be, e.g. inside a safetensors file, would import.
import { ALLOWED_TORCH_GLOBALS } from "./torch-pickle.js";

const allowed = new Set(
  ALLOWED_TORCH_GLOBALS.map((label) =>
    globalKey(label.slice(0, label.lastIndexOf(".")), label.slice(label.lastIndexOf(".") + 1)),
  ),
);

/** Globals whose call rebuilds one tensor; counted as the pickle's tensors. */
const TENSOR_REBUILDERS = new Set(["torch._utils\n_rebuild_tensor", "torch._utils\n_rebuild_tensor_v2"]);

// Module and name are compared as a pair: "torch" + "_utils._rebuild_tensor_v2" (a dotted name, resolved by
// attribute walk in protocol 4) must not pass for the allow-listed pair.
function globalKey(module: string, name: string): string {
  return `${module}\n${name}`;
}

export function isAllowedGlobal(module: string, name: string): boolean {
  return allowed.has(globalKey(module, name));
}

export function isTensorRebuilder(module: string, name: string): boolean {
  return TENSOR_REBUILDERS.has(globalKey(module, name));
}

/** The allow-list as "module.name" strings, for documentation and tests. */
export const ALLOWED_PICKLE_GLOBALS: readonly string[] = ALLOWED_TORCH_GLOBALS;
