import { createHash } from "node:crypto";
import { crc32 } from "node:zlib";
import {
  bufferSource,
  FormatError,
  LoraVerifier,
  parseSafetensorsHeader,
  type RandomAccessSource,
  TorchToSafetensors,
  UnsafePickleError,
} from "../src/index.js";
import {
  LORA_TENSORS,
  loraStorages,
  orderedDictPickle,
  pushTensor,
  SAFETENSORS_DTYPE_OF_TORCH,
  stateDictPickle,
  torchSaveFixture,
  torchSaveFixtures,
  torchZip,
} from "@emprops/testkit";

// Conversion round trips: checkpoints written by the real torch.save (fixtures/make-torch-fixtures.py records
// each tensor's dtype, shape and the sha256 of its bytes as torch has them) converted, re-read, and compared.
const expected = torchSaveFixtures();
const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

async function convert(source: RandomAccessSource, chunkBytes?: number, tensorSha256?: boolean) {
  const conversion = await TorchToSafetensors.open(source, { chunkBytes, tensorSha256 });
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
    const bytes = torchSaveFixture(file);
    const { conversion, output } = await convert(bufferSource(bytes), 64, true);
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
        { dtype: SAFETENSORS_DTYPE_OF_TORCH[t.dtype], shape: t.shape, sha256: t.sha256 },
      ]),
    );
    expect(got).toEqual(want);
    expect(Object.fromEntries(conversion.tensors.map((t) => [t.name, t.sha256]))).toEqual(
      Object.fromEntries(Object.entries(want).map(([name, t]) => [name, t.sha256])),
    );
  });

  it("keeps the non-tensor values as JSON in __metadata__", async () => {
    const { output } = await convert(bufferSource(torchSaveFixture("values.pt")));
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
    const { output, conversion } = await convert(bufferSource(torchSaveFixture("nested.pt")));
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
    const open = (file: string) => TorchToSafetensors.open(bufferSource(torchSaveFixture(file)));
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

/** Offset of the first data byte of the archive entry `name` (its local header found by name). */
function dataOffsetOf(zip: Buffer, name: string): number {
  const at = zip.indexOf(Buffer.from(name, "latin1"));
  const header = at - 30;
  if (at < 0 || zip.readUInt32LE(header) !== 0x04034b50) throw new Error(`no local header for ${name}`);
  return at + zip.readUInt16LE(header + 26) + zip.readUInt16LE(header + 28);
}

/** A copy of `bytes` with the byte at `offset` inverted. */
function flipped(bytes: Buffer, offset: number): Buffer {
  const copy = Buffer.from(bytes);
  copy.writeUInt8(copy.readUInt8(offset) ^ 0xff, offset);
  return copy;
}

/** A source that serves `before` until switch() is called, then `after` (a blob replaced between the passes). */
function switchingSource(before: Buffer, after: Buffer) {
  let current = before;
  const reads: { offset: number; length: number }[] = [];
  const source: RandomAccessSource = {
    size: before.length,
    read(offset, length) {
      reads.push({ offset, length });
      return Promise.resolve(current.subarray(offset, offset + length));
    },
  };
  return { source, reads, switch: () => void (current = after) };
}

async function drain(conversion: TorchToSafetensors): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of conversion.chunks()) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

describe("the conversion's two passes", () => {
  it("reads no storage bytes before it plans the output", async () => {
    const tensors = [0, 1, 2].map((i) => ({
      name: `t${i}`,
      storage: "ByteStorage",
      key: String(i),
      numel: 1 << 20,
      shape: [1 << 20],
    }));
    const bytes = torchZip(
      stateDictPickle(tensors),
      tensors.map((_, i) => Buffer.alloc(1 << 20, i + 1)),
    );
    const { source, reads } = switchingSource(bytes, bytes);
    const conversion = await TorchToSafetensors.open(source);
    const storageRanges = [0, 1, 2].map((i) => {
      const start = dataOffsetOf(bytes, `archive/data/${i}`);
      return { start, end: start + (1 << 20) };
    });
    const storageBytesRead = reads.reduce(
      (sum, r) =>
        sum +
        storageRanges.reduce(
          (s, range) => s + Math.max(0, Math.min(range.end, r.offset + r.length) - Math.max(range.start, r.offset)),
          0,
        ),
      0,
    );
    // Only the local header's neighbourhood of each record (at most a few KiB), never its megabyte of data.
    expect(storageBytesRead).toBeLessThan(3 * 1024);
    expect(conversion.sizeBytes).toBeGreaterThan(3 << 20);
    const output = await drain(conversion);
    expect(output.length).toBe(conversion.sizeBytes);
  });

  it("fails when a storage's bytes change between the passes (its CRC-32 no longer matches)", async () => {
    const bytes = torchZip(stateDictPickle(LORA_TENSORS), loraStorages());
    const changed = flipped(bytes, dataOffsetOf(bytes, "archive/data/1") + 5);
    const { source, switch: replace } = switchingSource(bytes, changed);
    const conversion = await TorchToSafetensors.open(source);
    replace();
    await expect(drain(conversion)).rejects.toThrow(FormatError);
    const again = switchingSource(bytes, changed);
    const second = await TorchToSafetensors.open(again.source);
    again.switch();
    await expect(drain(second)).rejects.toThrow(/no data descriptor matching the bytes of entry "archive\/data\/1"/);
  });

  it("fails when a storage only a view reaches changes between the passes", async () => {
    const storage = Buffer.alloc(48);
    for (let i = 0; i < 12; i++) storage.writeFloatLE(i, i * 4);
    const pickle = orderedDictPickle((w) =>
      pushTensor(w.binUnicode("t"), { storage: "FloatStorage", key: "0", numel: 12, shape: [4, 3], stride: [1, 4] }),
    );
    const bytes = torchZip(pickle, [storage]);
    const changed = flipped(bytes, dataOffsetOf(bytes, "archive/data/0") + 47);
    const { source, switch: replace } = switchingSource(bytes, changed);
    const conversion = await TorchToSafetensors.open(source);
    replace();
    await expect(drain(conversion)).rejects.toThrow(/archive\/data\/0/);
  });

  it("refuses, as the verifier does, a storage whose bytes hold a data descriptor matching the bytes before it", async () => {
    // 16 bytes, then what a stream reader takes for their data descriptor, then 16 more: the entry would end early.
    const head = Buffer.alloc(16, 7);
    const descriptor = Buffer.alloc(16);
    descriptor.writeUInt32LE(0x08074b50, 0);
    descriptor.writeUInt32LE(crc32(head), 4);
    descriptor.writeUInt32LE(16, 8);
    descriptor.writeUInt32LE(16, 12);
    const storage = Buffer.concat([head, descriptor, Buffer.alloc(16, 9)]);
    const tensors = [{ name: "t", storage: "ByteStorage", key: "0", numel: 48, shape: [48] }];
    const bytes = torchZip(stateDictPickle(tensors), [storage]);
    const verifier = new LoraVerifier({ expectedExtension: "pt", maxSizeBytes: 1 << 30 });
    verifier.update(bytes);
    expect(verifier.finish()).toMatchObject({ ok: false, reason: "INVALID_FILE_FORMAT" });
    const conversion = await TorchToSafetensors.open(bufferSource(bytes));
    await expect(drain(conversion)).rejects.toThrow(FormatError);
  });

  it("converts tensors that share a storage, each from a read checked against the record", async () => {
    const storage = Buffer.alloc(64);
    for (let i = 0; i < 64; i++) storage[i] = i;
    const pickle = orderedDictPickle((w) => {
      pushTensor(w.binUnicode("a"), { storage: "ByteStorage", key: "0", numel: 64, shape: [64] });
      pushTensor(w.binUnicode("b"), { storage: "ByteStorage", key: "0", numel: 64, shape: [8, 8] });
      return w;
    });
    const bytes = torchZip(pickle, [storage]);
    const { output, conversion } = await convert(bufferSource(bytes), 16, true);
    const { n, header } = headerOf(output);
    for (const t of header.tensors) {
      expect(Buffer.from(output.subarray(8 + n + t.dataOffsets[0], 8 + n + t.dataOffsets[1]))).toEqual(storage);
    }
    expect(new Set(conversion.tensors.map((t) => t.sha256))).toEqual(new Set([sha256(storage)]));
    const changed = flipped(bytes, dataOffsetOf(bytes, "archive/data/0"));
    const again = switchingSource(bytes, changed);
    const second = await TorchToSafetensors.open(again.source);
    again.switch();
    await expect(drain(second)).rejects.toThrow(FormatError);
  });
});
