// The only globals a LoRA pickle may import. Everything else is UNSAFE_PICKLE: importing a module runs its code,
// and REDUCE/NEWOBJ/INST/OBJ/BUILD can only call what a global put on the stack, so checking every global bounds
// everything the pickle can call. Each entry is what `torch.save(state_dict)` writes for dense tensors and is safe
// because calling it only builds data:
const ALLOWED: readonly (readonly [module: string, name: string, why: string])[] = [
  ["collections", "OrderedDict", "the state-dict container and the empty backward-hooks dict; builds a dict"],
  ["torch._utils", "_rebuild_tensor", "legacy tensor rebuild: a strided view over a storage"],
  ["torch._utils", "_rebuild_tensor_v2", "current tensor rebuild: a strided view over a storage"],
  ["torch._utils", "_rebuild_parameter", "wraps a rebuilt tensor in nn.Parameter"],
  [
    "torch._utils",
    "_rebuild_parameter_with_state",
    "nn.Parameter plus attribute state set on that parameter instance only",
  ],
  [
    "torch._tensor",
    "_rebuild_from_type_v2",
    "tensors with Python attributes; only calls a callable already on the stack, itself allow-listed",
  ],
  ["torch", "Tensor", "the type argument of _rebuild_from_type_v2; its constructor only allocates"],
  ["torch", "FloatStorage", "storage dtype tag in persistent ids; constructor only allocates"],
  ["torch", "HalfStorage", "storage dtype tag"],
  ["torch", "BFloat16Storage", "storage dtype tag"],
  ["torch", "DoubleStorage", "storage dtype tag"],
  ["torch", "LongStorage", "storage dtype tag"],
  ["torch", "IntStorage", "storage dtype tag"],
  ["torch", "ShortStorage", "storage dtype tag"],
  ["torch", "CharStorage", "storage dtype tag"],
  ["torch", "ByteStorage", "storage dtype tag"],
  ["torch", "BoolStorage", "storage dtype tag"],
];
// Deliberately absent: torch.Size, torch.device, builtins.set/frozenset/slice, _codecs.encode, numpy.*,
// torch.storage.UntypedStorage and _rebuild_qtensor/_rebuild_sparse_tensor. torch.save never writes them for a
// dense state dict, so a LoRA has no reason to import them, and every extra entry widens what a hostile pickle
// can reach.

/** Globals whose call rebuilds one tensor; counted as the pickle's tensors. */
const TENSOR_REBUILDERS = new Set(["torch._utils\n_rebuild_tensor", "torch._utils\n_rebuild_tensor_v2"]);

const allowedKeys = new Set(ALLOWED.map(([module, name]) => globalKey(module, name)));

// Module and name are compared as a pair: "torch" + "_utils._rebuild_tensor_v2" (a dotted name, resolved by
// attribute walk in protocol 4) must not pass for the allow-listed pair.
function globalKey(module: string, name: string): string {
  return `${module}\n${name}`;
}

export function isAllowedGlobal(module: string, name: string): boolean {
  return allowedKeys.has(globalKey(module, name));
}

export function isTensorRebuilder(module: string, name: string): boolean {
  return TENSOR_REBUILDERS.has(globalKey(module, name));
}

/** The allow-list as "module.name" strings, for documentation and tests. */
export const ALLOWED_PICKLE_GLOBALS: readonly string[] = ALLOWED.map(([module, name]) => `${module}.${name}`);
