import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import {
  bufferSource,
  FormatError,
  LoraVerifier,
  parseSafetensorsHeader,
  type RandomAccessSource,
  TorchToSafetensors,
  UnsafePickleError,
} from "../src/index.js";
import { LORA_TENSORS, loraStorages, orderedDictPickle, pushTensor, stateDictPickle, torchZip } from "@emprops/testkit";

// Conversion round trips: checkpoints written by the real torch.save (fixtures/make-torch-fixtures.py records
// each tensor's dtype, shape and the sha256 of its bytes as torch has them) converted, re-read, and compared.
const FIXTURES = path.join(__dirname, "../fixtures");
const expected = JSON.parse(readFileSync(path.join(FIXTURES, "expected.json"), "utf8")) as {
  files: Record<string, { kind: string; tensors?: Record<string, { dtype: string; shape: number[]; sha256: string }> }>;
};
const TORCH_DTYPES: Record<string, string> = {
  "torch.float16": "F16",
  "torch.float32": "F32",
  "torch.float64": "F64",
  "torch.bfloat16": "BF16",
  "torch.int8": "I8",
  "torch.int16": "I16",
  "torch.int32": "I32",
  "torch.int64": "I64",
  "torch.uint8": "U8",
  "torch.bool": "BOOL",
  "torch.complex64": "C64",
};
const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

async function convert(source: RandomAccessSource, chunkBytes?: number) {
  const conversion = await TorchToSafetensors.open(source, { chunkBytes });
  const chunks: Uint8Array[] = [];
  for await (const chunk of conversion.chunks()) chunks.push(Buffer.from(chunk));
  const output = Buffer.concat(chunks);
  return { conversion, output, largest: Math.max(...chunks.map((c) => c.length)) };
}

function headerOf(output: Buffer) {
  const n = Number(output.readBigUInt64LE(0));
  return { n, header: parseSafetensorsHeader(output.subarray(8, 8 + n), output.length - 8 - n) };
}

describe("converting torch.save checkpoints to safetensors", () => {
  const benign = Object.entries(expected.files).filter(([, f]) => f.kind === "benign");

  it.each(benign)("converts %s with the bytes torch has for every tensor", async (file, f) => {
    const bytes = readFileSync(path.join(FIXTURES, "torch", file));
    const { conversion, output } = await convert(bufferSource(bytes), 64);
    expect(output.length).toBe(conversion.sizeBytes);
    expect(conversion.sha256).toBe(sha256(output));
    const verifier = new LoraVerifier({ expectedExtension: "safetensors", maxSizeBytes: 1 << 30 });
    verifier.update(output);
    expect(verifier.finish()).toMatchObject({ ok: true, format: "safetensors" });

    const { n, header } = headerOf(output);
    const data = output.subarray(8 + n);
    const got = Object.fromEntries(
      header.tensors.map((t) => [
        t.name,
        { dtype: t.dtype, shape: t.shape, sha256: sha256(data.subarray(t.dataOffsets[0], t.dataOffsets[1])) },
      ]),
    );
    const want = Object.fromEntries(
      Object.entries(f.tensors ?? {}).map(([name, t]) => [
        name,
        { dtype: TORCH_DTYPES[t.dtype], shape: t.shape, sha256: t.sha256 },
      ]),
    );
    expect(got).toEqual(want);
    expect(Object.fromEntries(conversion.tensors.map((t) => [t.name, t.sha256]))).toEqual(
      Object.fromEntries(Object.entries(want).map(([name, t]) => [name, t.sha256])),
    );
  });

  it("keeps the non-tensor values as JSON in __metadata__", async () => {
    const { output } = await convert(bufferSource(readFileSync(path.join(FIXTURES, "torch", "values.pt"))));
    expect(headerOf(output).header.metadata).toEqual({
      size: "[2,3]",
      dtype: '"torch.float16"',
      epoch: "3",
      lr: "0.0001",
      name: '"my-lora"',
      tags: '["a","b"]',
      pair: "[1,null]",
      flag: "true",
      big: "1180591620717411303424",
    });
  });

  it("names nested tensors by their path and writes them in the reference writer's order", async () => {
    const { output, conversion } = await convert(bufferSource(readFileSync(path.join(FIXTURES, "torch", "nested.pt"))));
    const { header } = headerOf(output);
    expect(header.metadata).toEqual({ epoch: "12", meta: '{"rank":4}' });
    expect(conversion.tensors.map((t) => t.name)).toEqual([
      "state_dict.lora_unet_up.alpha",
      "state_dict.lora_unet_up.lora_down.weight",
      "state_dict.lora_unet_up.lora_up.weight",
    ]);
  });

  it("streams in bounded chunks", async () => {
    const storages = loraStorages();
    const { output, largest } = await convert(bufferSource(torchZip(stateDictPickle(LORA_TENSORS), storages)), 100);
    expect(largest).toBeLessThanOrEqual(Math.max(100, headerOf(output).n + 8));
    const { n, header } = headerOf(output);
    for (const t of header.tensors) {
      const key = Number(LORA_TENSORS.find((l) => l.name === t.name)?.key);
      expect(Buffer.from(output.subarray(8 + n + t.dataOffsets[0], 8 + n + t.dataOffsets[1]))).toEqual(
        Buffer.from(storages[key]!),
      );
    }
  });

  it("materialises a transposed view from its storage", async () => {
    // A 3×4 float storage holding 0..11, saved as its transpose (shape [4, 3], stride [1, 4]).
    const storage = Buffer.alloc(48);
    for (let i = 0; i < 12; i++) storage.writeFloatLE(i, i * 4);
    const pickle = orderedDictPickle((w) =>
      pushTensor(w.binUnicode("t"), { storage: "FloatStorage", key: "0", numel: 12, shape: [4, 3], stride: [1, 4] }),
    );
    const { output } = await convert(bufferSource(torchZip(pickle, [storage])), 8);
    const { n } = headerOf(output);
    const values = Array.from({ length: 12 }, (_, i) => output.readFloatLE(8 + n + i * 4));
    expect(values).toEqual([0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
  });

  it("refuses what cannot be converted, and what is unsafe, before producing a byte", async () => {
    const open = (file: string) =>
      TorchToSafetensors.open(bufferSource(readFileSync(path.join(FIXTURES, "torch", file))));
    await expect(open("complex128.pt")).rejects.toThrow(FormatError);
    await expect(open("complex128.pt")).rejects.toThrow(/ComplexDoubleStorage, which has no safetensors dtype/);
    await expect(open("os_system_payload.pt")).rejects.toThrow(UnsafePickleError);
    await expect(open("legacy_format.pt")).rejects.toThrow(/not a PyTorch checkpoint in torch\.save's ZIP format/);
  });

  it("fails when the source returns fewer bytes than asked for", async () => {
    const bytes = torchZip(stateDictPickle(LORA_TENSORS), loraStorages());
    let short = false;
    const source: RandomAccessSource = {
      size: bytes.length,
      read: (offset, length) => Promise.resolve(bytes.subarray(offset, offset + (short ? length - 1 : length))),
    };
    const conversion = await TorchToSafetensors.open(source);
    short = true;
    const drain = async () => {
      for await (const chunk of conversion.chunks()) void chunk;
    };
    await expect(drain()).rejects.toThrow(/the source returned/);
  });
});
