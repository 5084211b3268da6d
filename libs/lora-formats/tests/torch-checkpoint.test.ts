import { LoraVerifier, type VerificationResult, type VerifierOptions } from "../src/index.js";
import {
  buildZip,
  type CentralRecord,
  chunked,
  fillerBytes,
  legacyTorchFile,
  localRecord,
  LORA_TENSORS,
  loraStorages,
  PickleWriter,
  stateDictPickle,
  torchZip,
  type ZipEntrySpec,
} from "@emprops/testkit";
import { maliciousPickles } from "./malicious-pickles.js";

function verify(bytes: Uint8Array, chunkSize = 64 * 1024, options: Partial<VerifierOptions> = {}): VerificationResult {
  const verifier = new LoraVerifier({ expectedExtension: "pt", maxSizeBytes: 1 << 30, ...options });
  for (const chunk of chunked(bytes, chunkSize)) verifier.update(chunk);
  return verifier.finish();
}

function expectInvalid(bytes: Uint8Array, message: RegExp): void {
  for (const size of [bytes.length, 1, 13]) {
    const result = verify(bytes, size);
    expect({ reason: result.reason, message: result.message }).toEqual({
      reason: "INVALID_FILE_FORMAT",
      message: expect.stringMatching(message),
    });
  }
}

const benign = stateDictPickle(LORA_TENSORS);
const benign4 = stateDictPickle(LORA_TENSORS, { protocol: 4 });

describe("raw pickle .pt files", () => {
  it.each([
    ["a protocol 2 state dict", benign],
    ["a protocol 4 state dict", benign4],
    [
      "torch's legacy five-pickle format with storage bytes",
      legacyTorchFile(stateDictPickle(LORA_TENSORS, { legacy: true }), loraStorages()),
    ],
  ])("accepts %s", (_label, bytes) => {
    for (const size of [1, 7, 64 * 1024]) {
      expect(verify(bytes, size)).toMatchObject({
        ok: true,
        format: "pickle",
        detectedType: "pickle",
        tensorCount: 3,
        unsafeGlobals: [],
      });
    }
  });

  it.each(
    maliciousPickles()
      .filter((m) => m.bytes[0] === 0x80)
      .map((m) => [m.label, m] as const),
  )("rejects %s as UNSAFE_PICKLE", (_label, { bytes, globals }) => {
    const result = verify(bytes, 3);
    expect(result).toMatchObject({ ok: false, reason: "UNSAFE_PICKLE", format: "pickle" });
    expect([...result.unsafeGlobals].sort()).toEqual([...globals].sort());
    for (const name of globals) expect(result.message).toContain(name);
    expect(result.message).toMatch(/loading it would run code/);
  });

  it.each(
    maliciousPickles()
      .filter((m) => m.bytes[0] !== 0x80)
      .map((m) => [m.label, m] as const),
  )("rejects %s as a raw .pt, since a protocol 0 pickle is no torch checkpoint", (_label, { bytes }) => {
    expect(verify(bytes)).toMatchObject({ ok: false, reason: "INVALID_FILE_FORMAT", detectedType: "text" });
  });

  it("reports an exploit found before the size limit was passed as UNSAFE_PICKLE", () => {
    const exploit = maliciousPickles()[0]?.bytes ?? new Uint8Array();
    const result = verify(exploit, 1, { maxSizeBytes: exploit.length - 3 });
    expect(result).toMatchObject({ reason: "UNSAFE_PICKLE", unsafeGlobals: ["os.system"] });
  });

  it("scans every pickle torch's legacy loader would run, whatever byte it starts with", () => {
    const protocol0Exploit = new PickleWriter()
      .global("os", "system")
      .mark()
      .string("'id'")
      .tuple()
      .reduce()
      .stop()
      .bytes();
    const magic = new PickleWriter()
      .proto(2)
      .long1([0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19])
      .stop()
      .bytes();
    const result = verify(Buffer.concat([magic, protocol0Exploit]));
    expect(result).toMatchObject({ reason: "UNSAFE_PICKLE", unsafeGlobals: ["os.system"] });
  });

  it("treats what follows the fifth pickle as storage data", () => {
    const exploit = maliciousPickles()[0]?.bytes ?? new Uint8Array();
    const file = legacyTorchFile(stateDictPickle(LORA_TENSORS, { legacy: true }), [exploit, ...loraStorages()]);
    expect(verify(file)).toMatchObject({ ok: true, tensorCount: 3 });
  });

  it("rejects garbage after a pickle and truncated pickles", () => {
    expectInvalid(
      Buffer.concat([benign, Buffer.from([0xff, 0x00])]),
      /Pickle number 2 in the file is malformed: unknown opcode 0xff at byte \d+/,
    );
    expectInvalid(
      benign.subarray(0, benign.length - 1),
      /The pickle is truncated: it ends after byte \d+, before its STOP opcode/,
    );
  });
});

describe("torch ZIP .pt files", () => {
  const storages = loraStorages();

  it.each<[string, Parameters<typeof torchZip>[2]]>([
    ["as torch writes it (stored, data descriptors)", {}],
    ["with sizes in the local headers", { entry: { descriptor: false } }],
    ["with ZIP64 records", { entry: { zip64: true }, zip64End: true }],
    ["with ZIP64 sizes in the local headers", { entry: { zip64: true, descriptor: false }, zip64End: true }],
    ["with a deflated data.pkl", { pklEntry: { method: "deflated" } }],
    ["with a deflated data.pkl of known size", { pklEntry: { method: "deflated", descriptor: false } }],
    ["with deflated storages", { entry: { method: "deflated" } }],
  ])("accepts an archive %s", (_label, options) => {
    const bytes = torchZip(benign4, storages, options);
    const results = [1, 7, 64 * 1024].map((size) => verify(bytes, size));
    for (const result of results) {
      expect(result).toMatchObject({
        ok: true,
        format: "torch_zip",
        detectedType: "zip",
        tensorCount: 3,
        unsafeGlobals: [],
      });
      expect(result).toEqual(results[0]);
    }
  });

  it("finds a false descriptor signature inside tensor bytes without ending the entry there", () => {
    const tricky = fillerBytes(200);
    tricky.set([0x50, 0x4b, 0x07, 0x08, 1, 2, 3, 4, 10, 0, 0, 0, 10, 0, 0, 0], 10); // sizes do not match 10
    tricky.set([0x50, 0x4b, 0x07, 0x08], 196); // cut off by the end of the data
    expect(verify(torchZip(benign, [tricky, ...storages]), 5)).toMatchObject({ ok: true });
  });

  it.each(maliciousPickles().map((m) => [m.label, m] as const))(
    "rejects %s in data.pkl as UNSAFE_PICKLE",
    (_label, { bytes, globals }) => {
      const result = verify(torchZip(bytes, storages), 11);
      expect(result).toMatchObject({ ok: false, reason: "UNSAFE_PICKLE", format: "torch_zip" });
      expect([...result.unsafeGlobals].sort()).toEqual([...globals].sort());
      expect(result.message).toContain("(in archive/data.pkl)");
    },
  );

  it("scans every .pkl entry, in any letter case, and deflated ones", () => {
    const exploit = maliciousPickles()[0]?.bytes ?? new Uint8Array();
    const entries: ZipEntrySpec[] = [
      { name: "archive/data.pkl", data: benign },
      { name: "archive/extra/Hidden.PKL", data: exploit, method: "deflated" },
      { name: "archive/version", data: Buffer.from("3\n") },
    ];
    const result = verify(buildZip(entries));
    expect(result).toMatchObject({ reason: "UNSAFE_PICKLE", unsafeGlobals: ["os.system"] });
    expect(result.message).toContain("(in archive/extra/Hidden.PKL)");
  });

  it("rejects an archive whose central directory points a loader at bytes the stream did not scan", () => {
    // A tensor entry carries a complete local record with an exploit; the central directory names it data.pkl.
    const exploit = maliciousPickles()[0]?.bytes ?? new Uint8Array();
    const hidden = localRecord({ name: "archive/data.pkl", data: exploit, descriptor: false }, 0).bytes;
    const first = localRecord({ name: "archive/data.pkl", data: benign }, 0).bytes;
    const carrierHeader =
      localRecord({ name: "archive/data/0", data: hidden, descriptor: false }, first.length).bytes.length -
      hidden.length;
    const bytes = buildZip(
      [
        { name: "archive/data.pkl", data: benign },
        { name: "archive/data/0", data: hidden, descriptor: false },
      ],
      {
        editCentral: (records) => {
          const pkl = records[0];
          const carrier = records[1];
          if (!pkl || !carrier) throw new Error("unexpected layout");
          Object.assign(pkl, {
            offset: first.length + carrierHeader,
            crc: 0,
            compressedSize: exploit.length,
            uncompressedSize: exploit.length,
          });
        },
      },
    );
    expectInvalid(
      bytes,
      /The ZIP archive is invalid: the central directory entry for "archive\/data.pkl" disagrees with its local header \(offset\)/,
    );
  });

  it.each<[string, (records: { name: string; offset: number; crc: number; compressedSize: number }[]) => void, RegExp]>(
    [
      [
        "a renamed entry",
        (r) => void ((r[1] as { name: string }).name = "archive/data/9"),
        /disagrees with its local header \(name\)/,
      ],
      ["a different CRC", (r) => void ((r[2] as { crc: number }).crc ^= 1), /\(CRC-32\)/],
      [
        "a different size",
        (r) => void ((r[3] as { compressedSize: number }).compressedSize += 1),
        /\(compressed size\)/,
      ],
      ["a missing entry", (r) => void r.pop(), /central directory lists 8 entries but the archive holds 9/],
      [
        "an extra entry",
        (r) =>
          void r.push({
            ...(r[0] as CentralRecord),
          }),
        /lists more entries than the archive holds/,
      ],
    ],
  )("rejects a central directory with %s", (_label, edit, message) => {
    expectInvalid(torchZip(benign, storages, { editCentral: edit }), message);
  });

  it("rejects trailing data, comments, encryption and unknown compression", () => {
    const good = torchZip(benign, storages);
    expectInvalid(
      Buffer.concat([good, Buffer.from("junk")]),
      /unexpected data after the end-of-central-directory record/,
    );
    expectInvalid(torchZip(benign, storages, { comment: "hi" }), /it has an archive comment, which is not accepted/);
    const encrypted = Buffer.from(good);
    encrypted.writeUInt16LE(0x0809, 6);
    expectInvalid(encrypted, /entry "archive\/data.pkl" is encrypted/);
    const bzip2 = Buffer.from(good);
    bzip2.writeUInt16LE(12, 8);
    expectInvalid(bzip2, /uses compression method 12; only stored and deflated entries are read/);
  });

  it("rejects truncated archives wherever they are cut", () => {
    const good = torchZip(benign, storages);
    for (let cut = 4; cut < good.length; cut += 97) {
      const result = verify(good.subarray(0, cut));
      expect(result.reason).toBe("INVALID_FILE_FORMAT");
      expect(result.message).toMatch(/truncated|malformed|STOP/);
    }
  });

  it("rejects corrupted tensor bytes through the CRC", () => {
    const withSizes = Buffer.from(torchZip(benign, storages, { entry: { descriptor: false } }));
    const at = withSizes.indexOf(Buffer.from(storages[1] ?? new Uint8Array()));
    withSizes[at + 5] = (withSizes[at + 5] ?? 0) ^ 0xff;
    expectInvalid(withSizes, /entry "archive\/data\/1" fails its CRC-32 check \(corrupt\)/);
    const torchStyle = Buffer.from(torchZip(benign, storages));
    const at2 = torchStyle.indexOf(Buffer.from(storages[1] ?? new Uint8Array())) + 5;
    torchStyle[at2] = (torchStyle[at2] ?? 0) ^ 0xff;
    expectInvalid(
      torchStyle,
      /no data descriptor matching the bytes of entry "archive\/data\/1" was found \(corrupt or truncated\)/,
    );
  });

  it("rejects archives that are not torch checkpoints", () => {
    expectInvalid(buildZip([{ name: "data.pkl", data: benign }]), /its first ZIP entry "data.pkl" is not in a folder/);
    expectInvalid(
      buildZip([{ name: "archive/weights.bin", data: storages[0] ?? new Uint8Array() }]),
      /the archive has no "archive\/data.pkl"/,
    );
    expectInvalid(
      buildZip([
        { name: "archive/data.pkl", data: benign },
        { name: "archive/code/__torch__/model.py", data: Buffer.from("def forward(self): ...") },
        { name: "archive/constants.pkl", data: benign },
      ]),
      /TorchScript archive/,
    );
    expectInvalid(Buffer.from([0x50, 0x4b, 0x05, 0x06, ...new Array(18).fill(0)]), /it has no entries/);
  });

  it("rejects bytes after the pickle's STOP inside data.pkl", () => {
    const padded = Buffer.concat([benign, Buffer.from([0x4e])]);
    expectInvalid(torchZip(padded, storages), /The pickle "archive\/data.pkl" continues after its STOP opcode/);
  });

  it("rejects a malformed data.pkl", () => {
    expectInvalid(torchZip(benign.subarray(0, 40), storages), /The pickle "archive\/data.pkl" is truncated/);
  });

  it("throws nothing and reports a reason for mutated archives", () => {
    const seedFiles = [
      torchZip(benign, storages),
      torchZip(benign4, storages, { entry: { zip64: true }, zip64End: true }),
    ];
    let state = 12345;
    const next = (): number => (state = (state * 1103515245 + 12345) >>> 0) / 2 ** 32;
    for (let n = 0; n < 1500; n++) {
      const bytes = Buffer.from(seedFiles[n % 2] as Uint8Array);
      for (let k = 1 + Math.floor(next() * 3); k > 0; k--)
        bytes[Math.floor(next() * bytes.length)] = Math.floor(next() * 256);
      const result = verify(bytes, 1 + Math.floor(next() * 300));
      if (!result.ok) expect(result.reason && result.message).toBeTruthy();
      else expect(result.unsafeGlobals).toEqual([]);
    }
  });
});
