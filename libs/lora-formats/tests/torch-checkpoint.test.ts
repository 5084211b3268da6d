import { LoraVerifier, type VerificationResult, type VerifierOptions } from "../src/index.js";
import {
  buildZip,
  type CentralRecord,
  chunked,
  fillerBytes,
  legacyTorchFile,
  LORA_TENSORS,
  loraStorages,
  orderedDictPickle,
  PickleWriter,
  pushTensor,
  stateDictPickle,
  tarArchive,
  torchZip,
  type ZipEntrySpec,
} from "@emprops/testkit";
import { maliciousPickles } from "./malicious-pickles.js";

function verify(bytes: Uint8Array, chunkSize = 64 * 1024, options: Partial<VerifierOptions> = {}): VerificationResult {
  const verifier = new LoraVerifier({ expectedExtension: "pt", maxSizeBytes: 1 << 30, ...options });
  for (const chunk of chunked(bytes, chunkSize)) verifier.update(chunk);
  return verifier.finish();
}

/** The verdict must not depend on how the bytes arrive. */
function expectRefused(bytes: Uint8Array, reason: "INVALID_FILE_FORMAT" | "UNSAFE_PICKLE", message: RegExp): void {
  for (const size of [bytes.length, 1, 13]) {
    const result = verify(bytes, size);
    expect({ reason: result.reason, message: result.message }).toEqual({
      reason,
      message: expect.stringMatching(message),
    });
  }
}

const benign = stateDictPickle(LORA_TENSORS);
const benign4 = stateDictPickle(LORA_TENSORS, { protocol: 4 });
const storages = loraStorages();
/** One float tensor of 4 elements, "w", whose storage is data/0 of 16 bytes. */
const oneTensor = (extra: (w: PickleWriter) => void = () => {}): Buffer =>
  orderedDictPickle((w) => {
    pushTensor(w.binUnicode("w"), { storage: "FloatStorage", key: "0", numel: 4, shape: [4] });
    extra(w);
  });
const zipOf = (pickle: Uint8Array, data: Uint8Array[] = [fillerBytes(16)]) => torchZip(pickle, data);
const RESAVE = /Re-save it with torch\.save .*or convert it to \.safetensors/;

describe("torch checkpoints as torch.save writes them", () => {
  it.each<[string, Buffer]>([
    ["protocol 2 (torch.save's default)", torchZip(benign, storages)],
    ["protocol 4", torchZip(benign4, storages)],
    ["with sizes in the local headers", torchZip(benign, storages, { entry: { descriptor: false } })],
    ["with ZIP64 records", torchZip(benign, storages, { entry: { zip64: true }, zip64End: true })],
    [
      "in torch 1.13's layout (no byteorder, format or serialization id records)",
      buildZip([
        { name: "archive/data.pkl", data: benign },
        ...storages.map((data, i) => ({ name: `archive/data/${i}`, data })),
        { name: "archive/version", data: Buffer.from("3\n") },
      ]),
    ],
  ])("accepts %s, in any chunking", (_label, bytes) => {
    for (const size of [1, 7, 64 * 1024]) {
      expect(verify(bytes, size)).toMatchObject({
        ok: true,
        format: "torch_zip",
        detectedType: "zip",
        tensorCount: 3,
        unsafeGlobals: [],
      });
    }
  });
});

describe(".pt files in other formats", () => {
  it.each<[string, Uint8Array, RegExp]>([
    ["a raw pickle", benign, /raw pickle \(torch's legacy format/],
    [
      "torch's legacy five-pickle stream",
      legacyTorchFile(stateDictPickle(LORA_TENSORS, { legacy: true }), storages),
      /raw pickle/,
    ],
    [
      "a tar archive (torch's pre-1.6 format)",
      tarArchive([
        { name: "sys_info", data: new PickleWriter().proto(2).emptyDict().stop().bytes() },
        { name: "pickle", data: maliciousPickles()[0]?.bytes ?? new Uint8Array() },
        { name: "storages", data: new PickleWriter().proto(2).emptyList().stop().bytes() },
        { name: "tensors", data: new PickleWriter().proto(2).emptyList().stop().bytes() },
      ]),
      /tar archive \(torch's pre-1\.6 legacy format/,
    ],
    [
      "a protocol 0 exploit",
      maliciousPickles().find((m) => m.bytes[0] !== 0x80)?.bytes ?? new Uint8Array(),
      /text file/,
    ],
    [
      "a ZIP that does not start with a local header",
      Buffer.concat([Buffer.from("junk"), torchZip(benign, storages)]),
      /text|unknown/,
    ],
  ])("refuses %s as INVALID_FILE_FORMAT with the fix", (_label, bytes, message) => {
    expectRefused(bytes, "INVALID_FILE_FORMAT", message);
    expect(verify(bytes).message).toMatch(RESAVE);
  });
});

describe("the pickle follows torch's weights-only grammar", () => {
  it.each(maliciousPickles().map((m) => [m.label, m] as const))(
    "refuses %s in data.pkl as UNSAFE_PICKLE",
    (_label, m) => {
      const result = verify(zipOf(m.bytes), 5);
      expect(result).toMatchObject({ ok: false, reason: "UNSAFE_PICKLE" });
      expect(result.message).toMatch(/could run code/);
      // It stops at the first unsafe construct: at most one global is named.
      expect(result.unsafeGlobals.length).toBeLessThanOrEqual(1);
      if (result.unsafeGlobals.length === 1) expect(m.globals).toContain(result.unsafeGlobals[0]);
    },
  );

  const p = () => new PickleWriter().proto(2);
  it.each<[string, Uint8Array, RegExp]>([
    ["INST", p().mark().binUnicode("id").inst("collections", "OrderedDict").stop().bytes(), /opcode INST/],
    ["OBJ", p().mark().global("collections", "OrderedDict").obj().stop().bytes(), /opcode OBJ/],
    ["NEWOBJ", p().global("collections", "OrderedDict").emptyTuple().newObj().stop().bytes(), /opcode NEWOBJ/],
    [
      "NEWOBJ_EX",
      new PickleWriter()
        .proto(4)
        .global("collections", "OrderedDict")
        .emptyTuple()
        .emptyDict()
        .newObjEx()
        .stop()
        .bytes(),
      /opcode NEWOBJ_EX/,
    ],
    ["a protocol 5 out-of-band buffer", new PickleWriter().proto(5).nextBuffer().stop().bytes(), /opcode NEXT_BUFFER/],
    ["a protocol 5 bytearray", new PickleWriter().proto(5).byteArray8([1, 2]).stop().bytes(), /opcode BYTEARRAY8/],
    ["EXT1", p().ext1(1).stop().bytes(), /opcode EXT1/],
    ["a protocol 0 persistent id (PERSID)", p().persId("0").stop().bytes(), /opcode PERSID/],
    [
      "a persistent id that is a plain string",
      p().binUnicode("storage").binPersId().stop().bytes(),
      /persistent id that is a str/,
    ],
    [
      "a persistent id with an extra field",
      stateDictPickle(LORA_TENSORS, { legacy: true }),
      /persistent id with 6 fields instead of 5/,
    ],
    [
      "a persistent id of another kind",
      p()
        .mark()
        .binUnicode("module")
        .global("collections", "OrderedDict")
        .binUnicode("x")
        .tuple()
        .binPersId()
        .stop()
        .bytes(),
      /persistent id of kind "module"/,
    ],
    [
      "BUILD on a class",
      p().global("collections", "OrderedDict").emptyDict().build().stop().bytes(),
      /BUILD on collections\.OrderedDict/,
    ],
    [
      "BUILD on a tensor",
      orderedDictPickle((w) => {
        pushTensor(w.binUnicode("w"), { storage: "FloatStorage", key: "0", numel: 4, shape: [4] });
        w.mark().none().tuple().build();
      }),
      /BUILD on a tensor/,
    ],
    ["SETITEM on a list", p().emptyList().binUnicode("k").none().setItem().stop().bytes(), /SETITEM on a list/],
    ["APPEND to a dict", p().emptyDict().none().append().stop().bytes(), /APPEND on a dict/],
    [
      "a call to a storage class (allocates at load)",
      p()
        .global("torch", "FloatStorage")
        .mark()
        .binInt(1 << 30)
        .tuple()
        .reduce()
        .stop()
        .bytes(),
      /REDUCE calling torch\.FloatStorage/,
    ],
    [
      "a call to a dtype",
      p().global("torch", "float16").emptyTuple().reduce().stop().bytes(),
      /REDUCE calling torch\.float16/,
    ],
    ["torch.Tensor", p().global("torch", "Tensor").stop().bytes(), /imports torch\.Tensor/],
    [
      "_rebuild_parameter_with_state",
      p().global("torch._utils", "_rebuild_parameter_with_state").stop().bytes(),
      /imports torch\._utils\._rebuild_parameter_with_state/,
    ],
    [
      "_rebuild_from_type_v2",
      p().global("torch._tensor", "_rebuild_from_type_v2").stop().bytes(),
      /imports torch\._tensor\._rebuild_from_type_v2/,
    ],
    [
      "a dotted name",
      p().global("torch", "_utils._rebuild_tensor_v2").stop().bytes(),
      /imports torch\._utils\._rebuild_tensor_v2/,
    ],
    ["DUP (outside torch's opcode table)", p().none().dup().stop().bytes(), /opcode DUP/],
    ["BINBYTES", new PickleWriter().proto(3).binBytes([1]).stop().bytes(), /opcode BINBYTES/],
    [
      "STACK_GLOBAL in a protocol 2 pickle",
      p().binUnicode("os").binUnicode("system").stackGlobal().stop().bytes(),
      /STACK_GLOBAL in a protocol 2/,
    ],
    [
      "STACK_GLOBAL of values that are not str",
      new PickleWriter().proto(4).binInt1(1).binUnicode("system").stackGlobal().stop().bytes(),
      /STACK_GLOBAL of an int and a str/,
    ],
    ["a pickle without PROTO", new PickleWriter().none().stop().bytes(), /without a PROTO header/],
    ["pickle protocol 1", new PickleWriter().proto(1).none().stop().bytes(), /pickle protocol 1/],
  ])("refuses %s as UNSAFE_PICKLE, naming it", (_label, pickle, message) => {
    expectRefused(zipOf(pickle), "UNSAFE_PICKLE", message);
  });

  it("keeps the memo exact after hundreds of thousands of entries: BUILD on a memoized class is still refused", () => {
    const w = new PickleWriter().proto(2).global("collections", "OrderedDict").binPut(0).emptyList().mark();
    for (let i = 1; i <= 300_000; i++) w.none().longBinPut(i);
    w.appends().binGet(0).emptyDict().build().stop();
    expectRefused(zipOf(w.bytes()), "UNSAFE_PICKLE", /BUILD on collections\.OrderedDict/);
  });

  it("resolves STACK_GLOBAL operands fetched from a large memo exactly", () => {
    const w = new PickleWriter().proto(4).shortBinUnicode("os").binPut(0).shortBinUnicode("system").binPut(1);
    w.emptyList().mark();
    for (let i = 2; i < 300_000; i++) w.none().longBinPut(i);
    w.appends().binGet(0).binGet(1).stackGlobal().stop();
    const result = verify(zipOf(w.bytes()), 1 << 20);
    expect(result).toMatchObject({ reason: "UNSAFE_PICKLE", unsafeGlobals: ["os.system"] });
  });

  it("refuses a memo larger than its cap instead of forgetting values", () => {
    // MEMOIZE stores the top of the stack without popping it: one value, four million memo entries.
    const w = new PickleWriter().proto(4).none();
    for (let i = 0; i <= 4_000_000; i++) w.memoize();
    const result = verify(zipOf(w.stop().bytes()), 1 << 20);
    expect(result).toMatchObject({
      reason: "INVALID_FILE_FORMAT",
      message: expect.stringMatching(/memo holds more than 4000000 values/),
    });
    // Indices out of order are kept apart, and capped lower.
    const sparse = new PickleWriter().proto(2).none();
    for (let i = 1; i <= 1_000_001; i++) sparse.longBinPut(i * 2);
    expect(verify(zipOf(sparse.stop().bytes()), 1 << 20).message).toMatch(
      /holds more than 1000000 values out of order/,
    );
  });

  it.each<[string, Uint8Array, RegExp]>([
    [
      "a FRAME that runs past STOP",
      (() => {
        const body = new PickleWriter().emptyDict().stop().bytes();
        return Buffer.concat([
          new PickleWriter()
            .proto(4)
            .frame(body.length + 10)
            .bytes(),
          body,
          Buffer.alloc(10, 0x4e),
        ]);
      })(),
      /FRAME runs 10 bytes past STOP/,
    ],
    [
      "a FRAME longer than the pickle",
      new PickleWriter().proto(4).frame(100).emptyDict().stop().bytes(),
      /FRAME of 100 bytes runs past the end/,
    ],
    [
      "an opcode that straddles its FRAME",
      new PickleWriter().proto(4).frame(3).binInt(1).stop().bytes(),
      /opcode runs past the end of its FRAME/,
    ],
    [
      "a FRAME inside a FRAME",
      new PickleWriter().proto(4).frame(10).frame(1).none().stop().bytes(),
      /FRAME begins before the current frame ends/,
    ],
    ["bytes after STOP", Buffer.concat([benign, Buffer.from([0x4e, 0x2e])]), /2 bytes follow its STOP opcode/],
    ["a truncated pickle", benign.subarray(0, benign.length - 1), /ends before its STOP opcode/],
    ["a stack underflow", new PickleWriter().proto(2).tuple1().stop().bytes(), /stack underflow/],
    [
      "a memo index never stored",
      new PickleWriter().proto(2).binGet(5).stop().bytes(),
      /memo index 5 was never stored/,
    ],
    [
      "a byte that is no opcode",
      new PickleWriter().proto(2).raw(0xff).stop().bytes(),
      /byte 0xff at offset 2 is not a pickle opcode/,
    ],
  ])("refuses %s as INVALID_FILE_FORMAT", (_label, pickle, message) => {
    expectRefused(zipOf(pickle), "INVALID_FILE_FORMAT", message);
  });

  it("accepts protocol 4 framing as CPython writes it (frames, then an unframed tail)", () => {
    const body = new PickleWriter().global("collections", "OrderedDict").emptyTuple().reduce().bytes();
    const pickle = Buffer.concat([new PickleWriter().proto(4).frame(body.length).bytes(), body, Buffer.from([0x2e])]);
    expect(verify(zipOf(pickle, []))).toMatchObject({ ok: true, tensorCount: 0 });
  });
});

describe("the archive holds exactly what torch.save writes", () => {
  const withEntries = (edit: (entries: ZipEntrySpec[]) => void, options = {}) => {
    const entries: ZipEntrySpec[] = [
      { name: "archive/data.pkl", data: benign },
      ...storages.map((data, i) => ({ name: `archive/data/${i}`, data })),
      { name: "archive/version", data: Buffer.from("3\n") },
    ];
    edit(entries);
    return buildZip(entries, options);
  };
  const exploit = maliciousPickles()[0]?.bytes ?? new Uint8Array();

  it.each<[string, Uint8Array, RegExp]>([
    [
      "a pickle hidden in another member",
      withEntries((e) => e.push({ name: "archive/extra.pkl", data: exploit })),
      /"archive\/extra\.pkl", which torch\.save does not write \(a hidden member\)/,
    ],
    [
      "a member outside the archive's folder",
      withEntries((e) => e.push({ name: "other/data.pkl", data: exploit })),
      /lies outside the archive's folder "archive"/,
    ],
    [
      "a storage no tensor references",
      withEntries((e) => e.push({ name: "archive/data/7", data: fillerBytes(4) })),
      /storage no tensor of its pickle references/,
    ],
    [
      "a missing storage",
      withEntries((e) => e.splice(2, 1)),
      /references storage "1", but "archive\/data\/1" is missing/,
    ],
    [
      "a storage of the wrong size",
      withEntries((e) => (e[1] = { name: "archive/data/0", data: fillerBytes(12) })),
      /holds 12 bytes, but its persistent id \(256 × FloatStorage\) needs 1,024 bytes/,
    ],
    [
      "the same member twice",
      withEntries((e) => e.push({ name: "archive/version", data: Buffer.from("3\n") })),
      /holds the entry "archive\/version" twice/,
    ],
    [
      "two names that differ only in case",
      withEntries((e) => e.push({ name: "archive/VERSION", data: Buffer.from("3\n") })),
      /holds the entry "archive\/VERSION" twice/,
    ],
    [
      "a compressed data.pkl",
      withEntries((e) => (e[0] = { name: "archive/data.pkl", data: benign, method: "deflated" })),
      /is compressed \(method 8\)/,
    ],
    [
      "a first entry that is not data.pkl",
      withEntries((e) => e.reverse()),
      /its first entry is "archive\/version", not <folder>\/data\.pkl/,
    ],
    [
      "a TorchScript archive",
      withEntries((e) => e.push({ name: "archive/constants.pkl", data: exploit })),
      /TorchScript archive, which carries code/,
    ],
    ["no version record", withEntries((e) => e.pop()), /has no "archive\/version" record/],
    [
      "a big-endian checkpoint",
      withEntries((e) => e.push({ name: "archive/byteorder", data: Buffer.from("big") })),
      /only little-endian/,
    ],
    ["an archive comment", withEntries(() => {}, { comment: "PK\x05\x06 hidden end record" }), /archive comment/],
    [
      "an entry comment",
      withEntries(() => {}, { editCentral: (r: CentralRecord[]) => (r[0]!.comment = "x") }),
      /has a comment/,
    ],
    [
      "a central directory in another order",
      withEntries(() => {}, { editCentral: (r: CentralRecord[]) => r.reverse() }),
      /disagrees with its local header \(name\)/,
    ],
    [
      "overlapping entries",
      withEntries(() => {}, { editCentral: (r: CentralRecord[]) => (r[1]!.offset = r[0]!.offset) }),
      /disagrees with its local header \(offset\)/,
    ],
    [
      "a central CRC that differs",
      withEntries(() => {}, { editCentral: (r: CentralRecord[]) => (r[1]!.crc ^= 1) }),
      /disagrees with its local header \(CRC-32\)/,
    ],
    [
      "a central size that differs",
      withEntries(() => {}, { editCentral: (r: CentralRecord[]) => (r[1]!.uncompressedSize += 1) }),
      /disagrees with its local header/,
    ],
    [
      "central flags that differ",
      withEntries(() => {}, { editCentral: (r: CentralRecord[]) => (r[1]!.flags = 0x0800) }),
      /disagrees with its local header \(flags\)/,
    ],
    [
      "an entry hidden between the entries and the central directory",
      withEntries(() => {}, { rawBeforeCentral: Buffer.from("PK\x03\x04 junk") }),
      /lists|record|local/,
    ],
    [
      "data appended after the end record",
      Buffer.concat([torchZip(benign, storages), Buffer.from("tail")]),
      /unexpected data after the end-of-central-directory record/,
    ],
  ])("refuses %s", (_label, bytes, message) => {
    expectRefused(bytes, "INVALID_FILE_FORMAT", message);
  });

  it("refuses a data descriptor that lies about the entry's size", () => {
    const bytes = torchZip(benign, storages);
    const descriptor = bytes.indexOf(Buffer.from([0x50, 0x4b, 0x07, 0x08]));
    bytes.writeUInt32LE(bytes.readUInt32LE(descriptor + 8) + 1, descriptor + 8);
    bytes.writeUInt32LE(bytes.readUInt32LE(descriptor + 12) + 1, descriptor + 12);
    expectRefused(bytes, "INVALID_FILE_FORMAT", /ZIP archive is invalid/);
  });

  it("refuses an extra field torch does not write", () => {
    const bytes = torchZip(benign, storages);
    const nameLength = bytes.readUInt16LE(26);
    expect(bytes.readUInt16LE(30 + nameLength)).toBe(0x4246);
    bytes.writeUInt16LE(0x5555, 30 + nameLength);
    expectRefused(bytes, "INVALID_FILE_FORMAT", /extra field 0x5555/);
  });

  it("refuses a ZIP64 end record that miscounts the entries", () => {
    const bytes = torchZip(benign, storages, { entry: { zip64: true }, zip64End: true });
    const end64 = bytes.lastIndexOf(Buffer.from([0x50, 0x4b, 0x06, 0x06]));
    bytes.writeBigUInt64LE(99n, end64 + 24);
    expectRefused(bytes, "INVALID_FILE_FORMAT", /ZIP64 end record counts a different number of entries/);
  });
});

describe("tensors are views torch would build", () => {
  it.each<[string, Uint8Array, RegExp]>([
    [
      "a view past the end of its storage",
      orderedDictPickle((w) =>
        pushTensor(w.binUnicode("w"), { storage: "FloatStorage", key: "0", numel: 4, shape: [5] }),
      ),
      /a view reaching element 4 of a storage of 4 elements/,
    ],
    [
      "one storage referenced with two types",
      oneTensor((w) => pushTensor(w.binUnicode("v"), { storage: "HalfStorage", key: "0", numel: 8, shape: [8] })),
      /storage "0" is referenced with two different types or sizes/,
    ],
    [
      "a device torch does not know",
      orderedDictPickle((w) => {
        w.binUnicode("w")
          .global("torch._utils", "_rebuild_tensor_v2")
          .mark()
          .mark()
          .binUnicode("storage")
          .global("torch", "FloatStorage");
        w.binUnicode("0").binUnicode("evil").binInt(4).tuple().binPersId();
      }),
      /device is "evil"/,
    ],
  ])("refuses %s", (_label, pickle, message) => {
    expectRefused(zipOf(pickle), "INVALID_FILE_FORMAT", message);
  });
});

describe("checkpoints safetensors cannot represent", () => {
  it.each<[string, Uint8Array, RegExp]>([
    ["a float that JSON cannot hold", oneTensor((w) => w.binUnicode("lr").binFloat(Number.NaN)), /"lr" is NaN/],
    ["an int key", oneTensor((w) => w.binInt1(3).binUnicode("x")), /has a key that is an int/],
    [
      "a tensor named __metadata__",
      orderedDictPickle((w) =>
        pushTensor(w.binUnicode("__metadata__"), { storage: "FloatStorage", key: "0", numel: 4, shape: [4] }),
      ),
      /safetensors reserves/,
    ],
    [
      "two names that collide once joined",
      oneTensor((w) => {
        const t = { storage: "FloatStorage", key: "0", numel: 4, shape: [4] };
        pushTensor(w.binUnicode("a.b"), t);
        pushTensor(w.binUnicode("a").emptyDict().binUnicode("b"), t).setItem();
      }),
      /two values are both named "a\.b"/,
    ],
    ["a set", oneTensor((w) => w.binUnicode("s").emptySet()), /a set, which JSON cannot hold/],
    [
      "a bare tensor instead of a dict",
      pushTensor(new PickleWriter().proto(2), { storage: "FloatStorage", key: "0", numel: 4, shape: [4] })
        .stop()
        .bytes(),
      /holds a tensor, not a state dict/,
    ],
  ])("refuses %s as INVALID_FILE_FORMAT", (_label, pickle, message) => {
    expectRefused(zipOf(pickle), "INVALID_FILE_FORMAT", message);
    expect(verify(zipOf(pickle)).message).toMatch(/cannot be converted to safetensors|reserves|cannot/);
  });
});
