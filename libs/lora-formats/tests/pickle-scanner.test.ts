import { ALLOWED_PICKLE_GLOBALS, FormatError, PickleScanner } from "../src/index.js";
import { chunked, LORA_TENSORS, PickleWriter, prng, stateDictPickle } from "@emprops/testkit";
import { maliciousPickles } from "./malicious-pickles.js";

function scan(bytes: Uint8Array, chunkSize = bytes.length || 1): PickleScanner {
  const scanner = new PickleScanner();
  let consumed = 0;
  for (const chunk of chunked(bytes, chunkSize)) consumed += scanner.update(chunk);
  scanner.finish();
  expect(consumed).toBe(bytes.length);
  return scanner;
}

function scanError(bytes: Uint8Array): string {
  try {
    scan(bytes);
  } catch (error) {
    expect(error).toBeInstanceOf(FormatError);
    return (error as Error).message;
  }
  throw new Error("expected a FormatError");
}

describe("PickleScanner on torch state dicts", () => {
  it.each([2, 4] as const)("passes a protocol %i state dict and counts its tensors", (protocol) => {
    const scanner = scan(stateDictPickle(LORA_TENSORS, { protocol }));
    expect(scanner.done).toBe(true);
    expect(scanner.unsafeGlobals).toEqual([]);
    expect(scanner.tensorCount).toBe(3);
    expect(scanner.protocolVersion).toBe(protocol);
    expect([...scanner.globals].sort()).toEqual(
      ["collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch.FloatStorage", "torch.HalfStorage"].sort(),
    );
  });

  it("gives the same answer whatever the chunking", () => {
    const bytes = stateDictPickle(LORA_TENSORS, { protocol: 4 });
    for (const size of [1, 2, 3, 7, 64]) {
      const scanner = scan(bytes, size);
      expect([scanner.tensorCount, scanner.unsafeGlobals.length, scanner.globals.length]).toEqual([3, 0, 4]);
    }
  });

  it("stops at STOP and reports how many bytes it consumed", () => {
    const pickle = stateDictPickle(LORA_TENSORS);
    const withTail = new Uint8Array(pickle.length + 5);
    withTail.set(pickle);
    const scanner = new PickleScanner();
    expect(scanner.update(withTail)).toBe(pickle.length);
    expect(scanner.done).toBe(true);
    expect(scanner.update(new Uint8Array([1, 2]))).toBe(0);
  });

  it("allow-lists only what a dense state dict needs", () => {
    expect(ALLOWED_PICKLE_GLOBALS).toEqual([
      "collections.OrderedDict",
      "torch._utils._rebuild_tensor_v2",
      "torch._utils._rebuild_tensor",
      "torch._utils._rebuild_parameter",
      "torch.Size",
      "torch.DoubleStorage",
      "torch.FloatStorage",
      "torch.HalfStorage",
      "torch.BFloat16Storage",
      "torch.LongStorage",
      "torch.IntStorage",
      "torch.ShortStorage",
      "torch.CharStorage",
      "torch.ByteStorage",
      "torch.BoolStorage",
      "torch.ComplexFloatStorage",
      "torch.ComplexDoubleStorage",
      "torch.float16",
      "torch.float32",
      "torch.float64",
      "torch.bfloat16",
      "torch.int8",
      "torch.int16",
      "torch.int32",
      "torch.int64",
      "torch.uint8",
      "torch.bool",
      "torch.complex32",
      "torch.complex64",
      "torch.complex128",
    ]);
  });
});

describe("PickleScanner on malicious pickles", () => {
  const cases = maliciousPickles();

  it.each(cases.map((c) => [c.label, c] as const))("names the globals of %s", (_label, { bytes, globals }) => {
    for (const size of [bytes.length, 1, 5]) {
      const scanner = scan(bytes, size);
      expect([...scanner.unsafeGlobals].sort()).toEqual([...globals].sort());
    }
  });

  it.each([
    ["a module that only looks allowed", "torch", "load"],
    ["a dotted name under an allowed module", "torch", "_utils._rebuild_tensor_v2"],
    ["an attribute of an allowed global", "collections", "OrderedDict.__init__"],
    ["a storage type outside the list", "torch", "UntypedStorage"],
    ["a harmless but unneeded builtin", "builtins", "set"],
    ["numpy", "numpy.core.multiarray", "_reconstruct"],
    ["codecs", "_codecs", "encode"],
    ["functools.partial", "functools", "partial"],
  ])("flags %s", (_label, module, name) => {
    const bytes = new PickleWriter()
      .proto(4)
      .shortBinUnicode(module)
      .shortBinUnicode(name)
      .stackGlobal()
      .stop()
      .bytes();
    expect(scan(bytes).unsafeGlobals).toEqual([`${module}.${name}`]);
  });

  it("resolves STACK_GLOBAL operands through DUP and POP like the unpickler", () => {
    const bytes = new PickleWriter()
      .proto(4)
      .shortBinUnicode("os")
      .dup()
      .pop()
      .shortBinUnicode("system")
      .stackGlobal()
      .stop()
      .bytes();
    expect(scan(bytes).unsafeGlobals).toEqual(["os.system"]);
  });

  it("reads the memo as last written, not as first written", () => {
    const bytes = new PickleWriter()
      .proto(4)
      .shortBinUnicode("torch")
      .binPut(0)
      .pop()
      .shortBinUnicode("os")
      .binPut(0)
      .pop()
      .binGet(0)
      .shortBinUnicode("FloatStorage")
      .stackGlobal()
      .stop()
      .bytes();
    expect(scan(bytes).unsafeGlobals).toEqual(["os.FloatStorage"]);
  });

  it("decodes protocol 0 escapes before comparing names", () => {
    const viaUnicode = new PickleWriter().unicode("o\\u0073").unicode("syst\\u0065m").stackGlobal().stop().bytes();
    expect(scan(viaUnicode).unsafeGlobals).toEqual(["os.system"]);
    const viaString = new PickleWriter().string("'\\x6fs'").string('"sys\\164em"').stackGlobal().stop().bytes();
    expect(scan(viaString).unsafeGlobals).toEqual(["os.system"]);
  });

  it.each([
    ["NONE operands", new PickleWriter().proto(4).none().none().stackGlobal().stop()],
    [
      "bytes operands",
      new PickleWriter().proto(4).shortBinBytes([0x6f, 0x73]).shortBinUnicode("system").stackGlobal().stop(),
    ],
    [
      "a computed operand",
      new PickleWriter()
        .proto(4)
        .global("collections", "OrderedDict")
        .emptyTuple()
        .reduce()
        .shortBinUnicode("system")
        .stackGlobal()
        .stop(),
    ],
  ])("treats a STACK_GLOBAL over %s as unsafe", (_label, writer) => {
    const scanner = scan(writer.bytes());
    expect(scanner.unsafeGlobals.some((g) => g.includes("<unresolved>"))).toBe(true);
  });

  it.each([
    ["EXT1", new PickleWriter().proto(2).ext1(1), "copyreg extension code 1"],
    ["EXT2", new PickleWriter().proto(2).ext2(513), "copyreg extension code 513"],
    ["EXT4", new PickleWriter().proto(2).ext4(70000), "copyreg extension code 70000"],
  ])("treats %s as unsafe", (_label, writer, entry) => {
    expect(scan(writer.mark().tuple().reduce().stop().bytes()).unsafeGlobals).toEqual([entry]);
  });

  it("flags BUILD applied to a global itself", () => {
    const bytes = new PickleWriter()
      .proto(2)
      .global("collections", "OrderedDict")
      .emptyDict()
      .shortBinUnicode("__init__")
      .global("collections", "OrderedDict")
      .setItem()
      .build()
      .stop()
      .bytes();
    expect(scan(bytes).unsafeGlobals).toEqual(["collections.OrderedDict (attributes set by BUILD)"]);
  });

  it("keeps names printable in reports", () => {
    const bytes = new PickleWriter()
      .proto(4)
      .shortBinUnicode("os\u0007")
      .binUnicode("x".repeat(300))
      .stackGlobal()
      .stop()
      .bytes();
    const [name] = scan(bytes).unsafeGlobals;
    expect(name).toMatch(/^os\\x07\.x{120}…$/);
  });
});

describe("PickleScanner on malformed pickles", () => {
  it.each<[string, PickleWriter, RegExp]>([
    ["an unknown opcode", new PickleWriter().proto(2).raw(0xff), /unknown opcode 0xff at byte 2/],
    ["an unsupported protocol", new PickleWriter().proto(6), /unsupported protocol 6 \(PROTO at byte 0\)/],
    ["a negative BINSTRING length", new PickleWriter().raw(0x54, 0xff, 0xff, 0xff, 0xff), /negative byte count -1/],
    ["a GET of a missing memo entry", new PickleWriter().proto(2).binGet(3).stop(), /memo index 3 was never stored/],
    ["a REDUCE on an empty stack", new PickleWriter().proto(2).reduce(), /stack underflow \(REDUCE at byte 2\)/],
    [
      "a STACK_GLOBAL with one operand",
      new PickleWriter().proto(4).shortBinUnicode("os").stackGlobal(),
      /stack underflow/,
    ],
    ["a POP_MARK without MARK", new PickleWriter().proto(2).popMark(), /no MARK on the stack/],
    ["popping through a MARK", new PickleWriter().proto(2).none().mark().tuple2(), /stack underflow/],
    ["an unquoted STRING", new PickleWriter().string("os").stop(), /STRING argument is not a quoted string/],
    ["a bad \\u escape in UNICODE", new PickleWriter().unicode("\\u00zz").stop(), /UNICODE argument has a bad escape/],
    ["a non-numeric GET", new PickleWriter().none().put(0).get(Number.NaN).stop(), /memo index is not an integer/],
    ["STOP on an empty stack", new PickleWriter().proto(2).stop(), /stack underflow \(STOP at byte 2\)/],
  ])("rejects %s", (_label, writer, message) => {
    expect(scanError(writer.bytes())).toMatch(message);
  });

  it.each<[string, Uint8Array, RegExp]>([
    [
      "no STOP",
      new PickleWriter().proto(2).none().bytes(),
      /is truncated: it ends after byte 3, before its STOP opcode/,
    ],
    [
      "a cut BINUNICODE",
      new PickleWriter().proto(2).binUnicode("collections").bytes().subarray(0, 9),
      /inside the argument of BINUNICODE at byte 2/,
    ],
    [
      "a cut GLOBAL line",
      new PickleWriter().global("os", "system").bytes().subarray(0, 5),
      /inside the argument of GLOBAL at byte 0/,
    ],
    ["nothing at all", new Uint8Array(0), /ends after byte 0/],
  ])("rejects a truncated pickle with %s", (_label, bytes, message) => {
    expect(scanError(bytes)).toMatch(message);
  });

  it("refuses pickles longer than its byte limit", () => {
    const pickle = stateDictPickle(LORA_TENSORS);
    const exact = new PickleScanner({ maxBytes: pickle.length });
    expect(exact.update(pickle)).toBe(pickle.length);
    const short = new PickleScanner({ maxBytes: pickle.length - 1, label: "The pickle x.pkl" });
    expect(() => {
      for (const chunk of chunked(pickle, 7)) short.update(chunk);
    }).toThrow(`The pickle x.pkl is larger than ${(pickle.length - 1).toLocaleString("en-US")} bytes`);
  });

  it("keeps failing after an error", () => {
    const scanner = new PickleScanner();
    expect(() => scanner.update(Uint8Array.of(0xff))).toThrow(FormatError);
    expect(() => scanner.update(Uint8Array.of(0x2e))).toThrow(/unknown opcode/);
    expect(() => scanner.finish()).toThrow(/unknown opcode/);
  });

  it("throws nothing but FormatError on random and mutated input", () => {
    const random = prng(7);
    const seeds = [
      stateDictPickle(LORA_TENSORS),
      stateDictPickle(LORA_TENSORS, { protocol: 4 }),
      ...maliciousPickles().map((m) => m.bytes),
    ];
    for (let n = 0; n < 3000; n++) {
      let bytes: Uint8Array;
      if (n % 3 === 0) {
        bytes = Uint8Array.from({ length: 1 + Math.floor(random() * 64) }, () => Math.floor(random() * 256));
      } else {
        bytes = Uint8Array.from(seeds[Math.floor(random() * seeds.length)] as Uint8Array);
        for (let k = 1 + Math.floor(random() * 4); k > 0; k--)
          bytes[Math.floor(random() * bytes.length)] = Math.floor(random() * 256);
      }
      const scanner = new PickleScanner();
      try {
        let at = 0;
        while (at < bytes.length && !scanner.done)
          at += scanner.update(bytes.subarray(at, at + 1 + Math.floor(random() * 16)));
        scanner.finish();
      } catch (error) {
        if (!(error instanceof FormatError)) throw new Error(`case ${n}: ${String(error)}`);
      }
    }
  });
});
