import { ErrorReason, FileFormat, ValidationStatus } from "@emprops/contracts";
import { callPickle, PickleWriter, stateDictPickle, torchZip } from "@emprops/testkit";
import { newBlob, pathOf } from "./support/ids.js";
import { type GatewayUnderTest, startGatewayForTest } from "./support/start-gateway.js";

let t: GatewayUnderTest;

beforeAll(async () => {
  t = await startGatewayForTest("pickle-scan");
});

afterAll(async () => {
  await t?.stop();
});

async function verifyPt(content: Buffer) {
  const blob = newBlob("pt");
  await t.userContainer.getBlockBlobClient(pathOf(blob)).uploadData(content);
  const { verification } = await t.client.verifyBlob({ blob });
  return verification!;
}

const p = () => new PickleWriter();

/** Each payload is what an attacker writes by hand; the names are what the scan must report. */
const MALICIOUS: [string, Buffer, string[]][] = [
  ["os.system", callPickle("os", "system", "id"), ["os.system"]],
  ["posix.system", callPickle("posix", "system", "id"), ["posix.system"]],
  ["nt.system", callPickle("nt", "system", "calc.exe"), ["nt.system"]],
  [
    "subprocess.Popen with an argument list",
    p()
      .proto(2)
      .global("subprocess", "Popen")
      .emptyList()
      .mark()
      .binUnicode("sh")
      .binUnicode("-c")
      .binUnicode("id")
      .appends()
      .tuple1()
      .reduce()
      .stop()
      .bytes(),
    ["subprocess.Popen"],
  ],
  ["builtins.eval", callPickle("builtins", "eval", "__import__('os').system('id')", 3), ["builtins.eval"]],
  ["__builtin__.eval (protocol 2 spelling)", callPickle("__builtin__", "eval", "1+1"), ["__builtin__.eval"]],
  ["builtins.exec", callPickle("builtins", "exec", "import os; os.system('id')", 3), ["builtins.exec"]],
  [
    "getattr(__import__('os'), 'system')('id')",
    p()
      .proto(2)
      .global("builtins", "getattr")
      .global("builtins", "__import__")
      .binUnicode("os")
      .tuple1()
      .reduce()
      .binUnicode("system")
      .tuple2()
      .reduce()
      .binUnicode("id")
      .tuple1()
      .reduce()
      .stop()
      .bytes(),
    // the scan stops at the first import outside the allow-list
    ["builtins.getattr"],
  ],
  ["__import__ alone", callPickle("builtins", "__import__", "os", 3), ["builtins.__import__"]],
  [
    "STACK_GLOBAL (protocol 4)",
    p()
      .proto(4)
      .shortBinUnicode("os")
      .shortBinUnicode("system")
      .stackGlobal()
      .shortBinUnicode("id")
      .tuple1()
      .reduce()
      .stop()
      .bytes(),
    ["os.system"],
  ],
  [
    "STACK_GLOBAL with names fetched from the memo",
    p()
      .proto(4)
      .shortBinUnicode("posix")
      .memoize()
      .shortBinUnicode("system")
      .binPut(7)
      .binGet(0)
      .binGet(7)
      .stackGlobal()
      .shortBinUnicode("id")
      .tuple1()
      .reduce()
      .stop()
      .bytes(),
    ["posix.system"],
  ],
  ["INST", p().proto(2).mark().shortBinString("id").inst("os", "system").stop().bytes(), ["os.system"]],
  [
    "NEWOBJ of a forbidden class",
    p().proto(2).global("subprocess", "Popen").binUnicode("id").tuple1().newObj().stop().bytes(),
    ["subprocess.Popen"],
  ],
  ["runpy._run_code", callPickle("runpy", "_run_code", "import os"), ["runpy._run_code"]],
  ["importlib.import_module", callPickle("importlib", "import_module", "os"), ["importlib.import_module"]],
  ["socket.create_connection", callPickle("socket", "create_connection", "evil:1"), ["socket.create_connection"]],
  ["webbrowser.open", callPickle("webbrowser", "open", "http://evil.example"), ["webbrowser.open"]],
  ["pickle.loads (a pickle in a pickle)", callPickle("pickle", "loads", "x"), ["pickle.loads"]],
  ["builtins.compile", callPickle("builtins", "compile", "x", 3), ["builtins.compile"]],
  ["builtins.open", callPickle("builtins", "open", "/etc/passwd", 3), ["builtins.open"]],
  ["torch.load", callPickle("torch", "load", "other.pt"), ["torch.load"]],
  [
    "a dotted name behind an allowed module",
    callPickle("torch._utils", "_rebuild_tensor_v2.__globals__", "x", 4),
    ["torch._utils._rebuild_tensor_v2.__globals__"],
  ],
  [
    "a payload hidden inside an otherwise normal state dict",
    (() => {
      const benign = stateDictPickle([
        { name: "lora_up.weight", storage: "FloatStorage", key: "0", numel: 32, shape: [4, 8] },
      ]);
      // Replace STOP with one more dict entry whose value runs a command; the dict is still returned.
      const tail = p().binUnicode("extra").global("os", "system").binUnicode("id").tuple1().reduce().setItem().stop();
      return Buffer.concat([benign.subarray(0, -1), tail.bytes()]);
    })(),
    ["os.system"],
  ],
];

describe("pickle scan of .pt files", () => {
  describe.each([["a torch zip archive", (pkl: Buffer) => torchZip(pkl), FileFormat.TORCH_ZIP]])(
    "inside %s",
    (_where, wrap, format) => {
      it.each(MALICIOUS)("rejects %s as UNSAFE_PICKLE", async (_name, payload, globals) => {
        const v = await verifyPt(wrap(payload));
        expect(v).toMatchObject({ status: ValidationStatus.REJECTED, reason: ErrorReason.UNSAFE_PICKLE, format });
        expect(v.unsafeGlobals).toEqual(expect.arrayContaining(globals));
        expect(v.message).toContain(globals[0]);
      });
    },
  );

  const tensors = [
    { name: "lora_unet_down.lora_down.weight", storage: "FloatStorage", key: "0", numel: 4 * 64, shape: [4, 64] },
    { name: "lora_unet_down.lora_up.weight", storage: "FloatStorage", key: "1", numel: 64 * 4, shape: [64, 4] },
  ];

  it("refuses a raw pickle .pt (torch's legacy format), even a benign one, with the fix", async () => {
    for (const raw of [stateDictPickle(tensors), callPickle("os", "system", "id")]) {
      const v = await verifyPt(raw);
      expect(v).toMatchObject({
        status: ValidationStatus.REJECTED,
        reason: ErrorReason.INVALID_FILE_FORMAT,
        detectedType: "pickle",
        message: expect.stringMatching(/raw pickle.*Re-save it with torch\.save/),
      });
    }
  });

  it("accepts a torch zip archive with its storages", async () => {
    const storages = [Buffer.alloc(4 * 64 * 4, 1), Buffer.alloc(64 * 4 * 4, 2)];
    const v = await verifyPt(torchZip(stateDictPickle(tensors), storages, { root: "lora_model" }));
    expect(v).toMatchObject({
      status: ValidationStatus.SAFE,
      format: FileFormat.TORCH_ZIP,
      detectedType: "zip",
      tensorCount: 2,
      unsafeGlobals: [],
    });
  });

  it("rejects a zip that is not a torch archive, and a truncated pickle, as INVALID_FILE_FORMAT", async () => {
    const truncated = stateDictPickle(tensors).subarray(0, 40);
    expect(await verifyPt(truncated)).toMatchObject({
      status: ValidationStatus.REJECTED,
      reason: ErrorReason.INVALID_FILE_FORMAT,
    });
    const textOnly = torchZip(Buffer.from("not a pickle at all"));
    expect(await verifyPt(textOnly)).toMatchObject({
      status: ValidationStatus.REJECTED,
      reason: ErrorReason.INVALID_FILE_FORMAT,
    });
  });
});
