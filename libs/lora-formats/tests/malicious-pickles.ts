// Malicious pickles written opcode by opcode, each paired with the globals a scanner must name.
import { PickleWriter } from "@emprops/testkit";

export interface MaliciousPickle {
  label: string;
  bytes: Uint8Array;
  globals: string[];
}

const CALLS: [string, string, string][] = [
  ["os", "system", "echo pwned"],
  ["posix", "system", "echo pwned"],
  ["nt", "system", "echo pwned"],
  ["subprocess", "Popen", "id"],
  ["builtins", "eval", "__import__('os').system('id')"],
  ["builtins", "exec", "import os"],
  ["builtins", "__import__", "os"],
  ["runpy", "_run_code", "print(1)"],
  ["webbrowser", "open", "https://example.invalid"],
  ["__builtin__", "eval", "1+1"],
  ["torch.serialization", "load", "/tmp/evil.pt"],
];

/** module.name(arg) through the given way of putting the callable on the stack. */
function call(w: PickleWriter, arg: string): PickleWriter {
  return w.mark().binUnicode(arg).tuple().reduce();
}

function viaGlobal(module: string, name: string, arg: string): Uint8Array {
  return call(new PickleWriter().proto(2).global(module, name), arg).stop().bytes();
}

function viaProtocol0(module: string, name: string, arg: string): Uint8Array {
  return new PickleWriter()
    .global(module, name)
    .mark()
    .string(`'${arg.replaceAll("'", "\\'")}'`)
    .tuple()
    .reduce()
    .stop()
    .bytes();
}

function viaStackGlobal(module: string, name: string, arg: string): Uint8Array {
  return call(new PickleWriter().proto(4).shortBinUnicode(module).shortBinUnicode(name).stackGlobal(), arg)
    .stop()
    .bytes();
}

/** Strings memoized long before use and fetched back with BINGET / LONG_BINGET / GET. */
function viaMemo(
  module: string,
  name: string,
  arg: string,
  kind: "memoize" | "binput" | "longbinput" | "put",
): Uint8Array {
  const w = new PickleWriter().proto(4);
  const store = (index: number): void => {
    if (kind === "memoize") w.memoize();
    else if (kind === "binput") w.binPut(index);
    else if (kind === "longbinput") w.longBinPut(index + 300);
    else w.put(index);
  };
  const load = (index: number): void => {
    if (kind === "longbinput") w.longBinGet(index + 300);
    else if (kind === "put") w.get(index);
    else w.binGet(index);
  };
  w.binUnicode(module);
  store(0);
  w.pop().binUnicode(name);
  store(1);
  w.pop();
  // noise between the strings and their use
  w.emptyDict().shortBinUnicode("k").binInt1(1).setItem().pop();
  load(0);
  load(1);
  w.stackGlobal();
  return call(w, arg).stop().bytes();
}

function viaInst(module: string, name: string, arg: string): Uint8Array {
  return new PickleWriter()
    .mark()
    .string(`'${arg.replaceAll("'", "\\'")}'`)
    .inst(module, name)
    .stop()
    .bytes();
}

function viaObj(module: string, name: string, arg: string): Uint8Array {
  return new PickleWriter().proto(2).mark().global(module, name).binUnicode(arg).obj().stop().bytes();
}

/** The exploit sits as one value of an otherwise torch-like OrderedDict. */
function hiddenInStateDict(module: string, name: string, arg: string): Uint8Array {
  const w = new PickleWriter().proto(2).global("collections", "OrderedDict").binPut(0).emptyTuple().reduce().binPut(1);
  w.mark()
    .binUnicode("lora.alpha")
    .binInt1(8)
    .binUnicode("payload")
    .global(module, name)
    .mark()
    .binUnicode(arg)
    .tuple()
    .reduce();
  return w.setItems().stop().bytes();
}

export function maliciousPickles(): MaliciousPickle[] {
  const out: MaliciousPickle[] = [];
  for (const [module, name, arg] of CALLS) {
    const g = [`${module}.${name}`];
    out.push({ label: `${module}.${name} via GLOBAL`, bytes: viaGlobal(module, name, arg), globals: g });
    out.push({ label: `${module}.${name} via protocol 0`, bytes: viaProtocol0(module, name, arg), globals: g });
    out.push({ label: `${module}.${name} via STACK_GLOBAL`, bytes: viaStackGlobal(module, name, arg), globals: g });
    for (const kind of ["memoize", "binput", "longbinput", "put"] as const) {
      out.push({
        label: `${module}.${name} via STACK_GLOBAL of ${kind} strings`,
        bytes: viaMemo(module, name, arg, kind),
        globals: g,
      });
    }
    out.push({ label: `${module}.${name} via INST`, bytes: viaInst(module, name, arg), globals: g });
    out.push({ label: `${module}.${name} via OBJ`, bytes: viaObj(module, name, arg), globals: g });
    out.push({
      label: `${module}.${name} inside a state dict`,
      bytes: hiddenInStateDict(module, name, arg),
      globals: g,
    });
  }
  // getattr(__import__("os"), "system")("id")
  out.push({
    label: "builtins.getattr chain",
    bytes: new PickleWriter()
      .proto(2)
      .global("builtins", "getattr")
      .mark()
      .global("builtins", "__import__")
      .mark()
      .binUnicode("os")
      .tuple()
      .reduce()
      .binUnicode("system")
      .tuple()
      .reduce()
      .mark()
      .binUnicode("id")
      .tuple()
      .reduce()
      .stop()
      .bytes(),
    globals: ["builtins.getattr", "builtins.__import__"],
  });
  // The same chain with STACK_GLOBAL, the module string memoized once and fetched back.
  out.push({
    label: "builtins.getattr chain via STACK_GLOBAL and MEMOIZE",
    bytes: new PickleWriter()
      .proto(4)
      .shortBinUnicode("builtins")
      .memoize()
      .shortBinUnicode("getattr")
      .stackGlobal()
      .mark()
      .binGet(0)
      .shortBinUnicode("__import__")
      .stackGlobal()
      .mark()
      .shortBinUnicode("os")
      .tuple()
      .reduce()
      .shortBinUnicode("system")
      .tuple()
      .reduce()
      .mark()
      .shortBinUnicode("id")
      .tuple()
      .reduce()
      .stop()
      .bytes(),
    globals: ["builtins.getattr", "builtins.__import__"],
  });
  return out;
}
