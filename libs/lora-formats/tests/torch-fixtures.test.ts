import { readFileSync } from "node:fs";
import path from "node:path";
import { LoraVerifier } from "../src/index.js";
import { headAgrees } from "./head-agreement.js";

// Files written by the real torch.save (fixtures/make-torch-fixtures.py) with torch's own verdict,
// torch.load(path, weights_only=True), recorded next to them.
const FIXTURES = path.join(__dirname, "../fixtures");

interface Expected {
  torch: string;
  files: Record<string, { kind: string; torch_load_weights_only: { ok: boolean; error?: string } }>;
}
const expected = JSON.parse(readFileSync(path.join(FIXTURES, "expected.json"), "utf8")) as Expected;

/** Files torch 1.13's weights-only loader refuses that a dense state dict may be: documented in the README. */
const ACCEPTED_BEYOND_TORCH_1_13: Record<string, RegExp> = {
  // protocol 4 (FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL): no torch version's table has these opcodes
  "protocol4.pt": /Unsupported operand 149/,
  // a float value (BINFLOAT): accepted by torch 2.x
  "values.pt": /Unsupported operand 71/,
};

/** The verifier's verdict; the head check must agree with it (see head-agreement.ts). */
function verify(file: string) {
  const bytes = readFileSync(path.join(FIXTURES, "torch", file));
  const verifier = new LoraVerifier({ expectedExtension: "pt", maxSizeBytes: 1 << 30 });
  verifier.update(bytes);
  const result = verifier.finish();
  headAgrees(bytes, "pt", result);
  return result;
}

describe(`checkpoints written by torch ${expected.torch}`, () => {
  const files = Object.entries(expected.files);

  it("cover the benign kinds the grammar must accept and the ones it must not", () => {
    expect(files.filter(([, f]) => f.kind === "benign").length).toBeGreaterThanOrEqual(10);
    expect(files.map(([name]) => name)).toEqual(
      expect.arrayContaining(["os_system_payload.pt", "legacy_format.pt", "complex128.pt", "views.pt", "dtypes.pt"]),
    );
  });

  it.each(files.filter(([, f]) => f.kind === "benign"))("accepts %s", (file, f) => {
    const result = verify(file);
    expect(result).toMatchObject({ ok: true, format: "torch_zip" });
    if (!f.torch_load_weights_only.ok)
      expect(f.torch_load_weights_only.error).toMatch(ACCEPTED_BEYOND_TORCH_1_13[file] ?? /^$/);
  });

  it("refuses every file torch's weights-only loader refuses, except the documented ones", () => {
    for (const [file, f] of files) {
      if (f.torch_load_weights_only.ok || ACCEPTED_BEYOND_TORCH_1_13[file]) continue;
      expect([file, verify(file).ok]).toEqual([file, false]);
    }
  });

  it("refuses torch.save output that would run code, naming the import", () => {
    expect(verify("os_system_payload.pt")).toMatchObject({
      ok: false,
      reason: "UNSAFE_PICKLE",
      unsafeGlobals: ["posix.system"],
    });
  });

  it("refuses the legacy format torch still loads, with the fix", () => {
    expect(expected.files["legacy_format.pt"]?.torch_load_weights_only.ok).toBe(true);
    expect(verify("legacy_format.pt")).toMatchObject({
      reason: "INVALID_FILE_FORMAT",
      message: expect.stringMatching(/raw pickle.*Re-save it with torch\.save/),
    });
  });

  it("refuses a checkpoint torch loads but safetensors cannot hold (complex128)", () => {
    expect(expected.files["complex128.pt"]?.torch_load_weights_only.ok).toBe(true);
    expect(verify("complex128.pt")).toMatchObject({
      reason: "INVALID_FILE_FORMAT",
      message: expect.stringMatching(/ComplexDoubleStorage, which has no safetensors dtype/),
    });
  });
});
