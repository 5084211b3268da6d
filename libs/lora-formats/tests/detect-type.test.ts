import { gzipSync } from "node:zlib";
import { detectType, LoraVerifier, type VerificationResult } from "../src/index.js";
import { buildSafetensors, buildZip, LORA_TENSORS, stateDictPickle, torchZip, loraStorages } from "@emprops/testkit";

const PNG = Buffer.from("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489", "hex");
const JPEG = Buffer.from("ffd8ffe000104a46494600010100000100010000ffdb004300", "hex");
const GGUF = Buffer.concat([Buffer.from("GGUF"), Buffer.from([3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])]);
const safetensors = buildSafetensors([{ name: "w", dtype: "F32", shape: [2] }]);

function verify(bytes: Uint8Array, expectedExtension: "safetensors" | "pt"): VerificationResult {
  const verifier = new LoraVerifier({ expectedExtension, maxSizeBytes: 1 << 20 });
  verifier.update(bytes);
  return verifier.finish();
}

describe("detectType", () => {
  it.each<[string, Uint8Array]>([
    ["safetensors", safetensors],
    ["zip", torchZip(stateDictPickle(LORA_TENSORS), loraStorages())],
    ["pickle", stateDictPickle(LORA_TENSORS)],
    ["png", PNG],
    ["jpeg", JPEG],
    ["gzip", gzipSync(Buffer.from("hello"))],
    ["gguf", GGUF],
    ["gif", Buffer.from("GIF89a\u0001\u0000\u0001\u0000")],
    ["webp", Buffer.from("RIFF\u0024\u0000\u0000\u0000WEBPVP8 ")],
    ["pdf", Buffer.from("%PDF-1.7\n")],
    ["text", Buffer.from("just some words\n")],
    ["empty", new Uint8Array(0)],
    ["unknown", Uint8Array.from([0x00, 0xff, 0x10, 0x80, 0x7b])],
  ])("recognises %s", (type, bytes) => {
    expect(detectType(bytes.subarray(0, 16))).toBe(type);
  });

  it("reads a safetensors length starting with 0x80 0x02 as safetensors, not as a pickle", () => {
    const bytes = Buffer.alloc(16);
    bytes.writeBigUInt64LE(0x0280n);
    bytes[8] = 0x7b;
    expect(detectType(bytes)).toBe("safetensors");
  });
});

describe("content that does not match the extension", () => {
  it.each<[string, Uint8Array, "safetensors" | "pt", string, RegExp]>([
    [
      "a torch ZIP named .safetensors",
      torchZip(stateDictPickle(LORA_TENSORS), loraStorages()),
      "safetensors",
      "zip",
      /named \.safetensors but its content is a ZIP archive \(PyTorch \.pt\)/,
    ],
    [
      "a ZIP named .safetensors",
      buildZip([{ name: "a/b.txt", data: Buffer.from("x") }]),
      "safetensors",
      "zip",
      /content is a ZIP archive/,
    ],
    [
      "a pickle named .safetensors",
      stateDictPickle(LORA_TENSORS),
      "safetensors",
      "pickle",
      /content is a Python pickle/,
    ],
    ["a PNG named .safetensors", PNG, "safetensors", "png", /content is a PNG image/],
    ["a gzip named .safetensors", gzipSync(Buffer.from("x")), "safetensors", "gzip", /content is a gzip archive/],
    ["a GGUF named .safetensors", GGUF, "safetensors", "gguf", /content is a GGUF model/],
    [
      "a safetensors named .pt",
      safetensors,
      "pt",
      "safetensors",
      /named \.pt but its content is a safetensors file.*Upload it with the \.safetensors extension/,
    ],
    ["a JPEG named .pt", JPEG, "pt", "jpeg", /named \.pt but its content is a JPEG image, not a PyTorch checkpoint/],
    ["text named .pt", Buffer.from("not a model at all"), "pt", "text", /content is a text file/],
    ["an empty .pt", new Uint8Array(0), "pt", "empty", /^The file is empty\.$/],
    ["an empty .safetensors", new Uint8Array(0), "safetensors", "empty", /^The file is empty\.$/],
  ])("rejects %s", (_label, bytes, extension, detected, message) => {
    const result = verify(bytes, extension);
    expect(result).toMatchObject({
      ok: false,
      reason: "INVALID_FILE_FORMAT",
      detectedType: detected,
      sizeBytes: bytes.length,
    });
    expect(result.format).toBeUndefined();
    expect(result.message).toMatch(message);
  });

  it("lets the safetensors parser explain unrecognised content", () => {
    const result = verify(Buffer.from("0123456789abcdef0123"), "safetensors");
    expect(result).toMatchObject({ reason: "INVALID_FILE_FORMAT", detectedType: "text" });
    expect(result.message).toMatch(
      /header length is [\d,]+ bytes, above the limit of 100,000,000 bytes; this is not a safetensors file/,
    );
  });
});
