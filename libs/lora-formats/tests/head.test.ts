import { readFileSync } from "node:fs";
import path from "node:path";
import { crc32 } from "node:zlib";
import {
  assembleSafetensors,
  buildSafetensors,
  callPickle,
  fillerBytes,
  kohyaMetadata,
  LORA_TENSORS,
  loraStorages,
  loraTensors,
  randomLoraSafetensors,
  stateDictPickle,
  tarArchive,
  torchZip,
} from "@emprops/testkit";
import { portableCrc32 } from "../src/crc32.js";
import { checkHead, HEAD_MAX_BYTES, headLength } from "../src/head.js";
import { LoraVerifier, SAFETENSORS_MAX_HEADER_BYTES } from "../src/index.js";
import { headAgrees } from "./head-agreement.js";

const FIXTURES = path.join(__dirname, "../fixtures");
const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), fillerBytes(100)]);
const jpeg = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), fillerBytes(100)]);

function verify(file: Uint8Array, extension: "safetensors" | "pt") {
  const verifier = new LoraVerifier({ expectedExtension: extension, maxSizeBytes: 1 << 30 });
  verifier.update(file);
  return verifier.finish();
}

/** The head check of a file's first MiB, checked against the verifier's verdict on the whole file. */
function head(file: Uint8Array, extension: "safetensors" | "pt" = "safetensors", cut = HEAD_MAX_BYTES) {
  return headAgrees(file, extension, verify(file, extension), cut);
}

/** A safetensors file whose header holds `metadataBytes` of metadata, with `dataBytes` of tensor data. */
function withMetadata(metadataBytes: number, dataBytes = 64): Buffer {
  const header = {
    __metadata__: { padding: "x".repeat(metadataBytes) },
    t: { dtype: "U8", shape: [dataBytes], data_offsets: [0, dataBytes] },
  };
  return assembleSafetensors(JSON.stringify(header), fillerBytes(dataBytes));
}

describe("head check of a .safetensors file", () => {
  it("passes benign LoRAs of every size once their header is read, small or far beyond the head", () => {
    expect(head(buildSafetensors(loraTensors(), kohyaMetadata("small")))).toEqual({ outcome: "passed" });
    expect(head(randomLoraSafetensors(8))).toEqual({ outcome: "passed" });
    const big = randomLoraSafetensors(3 * HEAD_MAX_BYTES);
    expect(head(big)).toEqual({ outcome: "passed" });
    expect(checkHead(big.subarray(0, HEAD_MAX_BYTES), { extension: "safetensors", sizeBytes: big.length })).toEqual({
      outcome: "passed",
    });
  });

  it("is undecided, not refused, when the header goes on beyond the first MiB", () => {
    const file = withMetadata(2 * HEAD_MAX_BYTES);
    expect(verify(file, "safetensors").ok).toBe(true);
    expect(head(file)).toEqual({ outcome: "undecided" });
    // Shorter heads of the same file: only the first bytes are known, never a reason to refuse.
    for (const cut of [0, 1, 7, 8, 9, 16, 511, 512, 4096])
      expect(head(file, "safetensors", cut).outcome).toBe("undecided");
  });

  it("refuses content of another type, with the verifier's message", () => {
    for (const file of [png, torchZip(callPickle("os", "system", "id")), Buffer.from("")]) {
      const verdict = head(file);
      expect(verdict).toMatchObject({
        outcome: "refused",
        reason: "INVALID_FILE_FORMAT",
        message: verify(file, "safetensors").message,
      });
    }
    expect(head(png)).toMatchObject({ message: "The file is named .safetensors but its content is a PNG image." });
  });

  it("refuses a header length above the limit or beyond the declared size from the first 8 bytes", () => {
    // The verifier decides on the first 16 bytes (or the whole file, when shorter).
    const huge = assembleSafetensors("{}", fillerBytes(64), BigInt(SAFETENSORS_MAX_HEADER_BYTES + 1));
    expect(checkHead(huge.subarray(0, 8), { extension: "safetensors", sizeBytes: 5 * HEAD_MAX_BYTES }).outcome).toBe(
      "undecided",
    );
    expect(checkHead(huge.subarray(0, 16), { extension: "safetensors", sizeBytes: 5 * HEAD_MAX_BYTES })).toMatchObject({
      outcome: "refused",
      reason: "INVALID_FILE_FORMAT",
      message: expect.stringMatching(/header length is 100,000,001 bytes, above the limit/),
    });
    // 50 MB declared for a 2 MiB file: the header would end past the file.
    const overflowing = assembleSafetensors('{"a":', fillerBytes(16), 50_000_000n);
    const verdict = checkHead(overflowing.subarray(0, 16), { extension: "safetensors", sizeBytes: 2 * HEAD_MAX_BYTES });
    expect(verdict).toMatchObject({
      outcome: "refused",
      reason: "INVALID_FILE_FORMAT",
      message:
        "The safetensors header is truncated: it declares 50,000,000 bytes but the file ends after 2,097,144 bytes of it.",
    });
  });

  it("refuses a header inside the head that the verifier refuses, and a data section the declared size cannot hold", () => {
    const badDtype = assembleSafetensors('{"t":{"dtype":"F17","shape":[4],"data_offsets":[0,4]}}', fillerBytes(4));
    expect(head(badDtype)).toMatchObject({
      outcome: "refused",
      reason: "INVALID_FILE_FORMAT",
      message: expect.stringMatching(/F17/),
    });
    // The header asks for 2 MiB of data; the file declares a different size.
    const file = randomLoraSafetensors(2 * HEAD_MAX_BYTES);
    const first = file.subarray(0, HEAD_MAX_BYTES);
    for (const sizeBytes of [file.length - 1, file.length + 1]) {
      const verdict = checkHead(first, { extension: "safetensors", sizeBytes });
      expect(verdict).toMatchObject({ outcome: "refused", reason: "INVALID_FILE_FORMAT" });
      const cutOrPadded =
        sizeBytes < file.length ? file.subarray(0, sizeBytes) : Buffer.concat([file, Buffer.alloc(1)]);
      expect(verdict).toMatchObject({ message: verify(cutOrPadded, "safetensors").message });
    }
  });

  it("refuses the polyglots its first bytes show: a tar header, a pickle", () => {
    const tarred = tarArchive([{ name: "a", data: fillerBytes(2000) }]);
    const asTar = Buffer.concat([tarred, fillerBytes(3 * HEAD_MAX_BYTES)]);
    expect(verify(asTar, "safetensors").ok).toBe(false);
    expect(head(asTar).outcome).toBe("refused");
  });
});

describe("head check of a .pt file", () => {
  const fixtures = (
    JSON.parse(readFileSync(path.join(FIXTURES, "expected.json"), "utf8")) as { files: Record<string, unknown> }
  ).files;

  it.each(Object.keys(fixtures))("agrees with the verifier on torch.save's %s, whole and cut short", (name) => {
    const file = readFileSync(path.join(FIXTURES, "torch", name));
    const full = verify(file, "pt");
    // The whole file in the head: the verifier's own verdict.
    expect(head(file, "pt")).toMatchObject(
      full.ok ? { outcome: "passed" } : { outcome: "refused", reason: full.reason, message: full.message },
    );
    for (const cut of [16, 100, 512, 1000, Math.floor(file.length / 2), file.length - 1]) head(file, "pt", cut);
  });

  it("refuses an unsafe import in data.pkl within the first MiB although the file goes on", () => {
    const payload = torchZip(callPickle("os", "system", "id"), [fillerBytes(3 * HEAD_MAX_BYTES)]);
    expect(head(payload, "pt")).toMatchObject({
      outcome: "refused",
      reason: "UNSAFE_PICKLE",
      detectedType: "zip",
      unsafeGlobals: ["os.system"],
      message: expect.stringMatching(/os\.system/),
    });
    const benign = torchZip(stateDictPickle(LORA_TENSORS), loraStorages());
    expect(verify(benign, "pt").ok).toBe(true);
    for (const cut of [64, 200, benign.length - 30]) expect(head(benign, "pt", cut).outcome).toBe("undecided");
  });

  it("refuses what is no torch.save ZIP from its first bytes, as the verifier does", () => {
    const cases = [
      callPickle("os", "system", "id"),
      tarArchive([{ name: "a", data: fillerBytes(10) }]),
      randomLoraSafetensors(64),
      jpeg,
    ];
    for (const file of cases) {
      const padded = Buffer.concat([file, fillerBytes(2 * HEAD_MAX_BYTES)]);
      expect(head(padded, "pt")).toMatchObject({
        outcome: "refused",
        reason: "INVALID_FILE_FORMAT",
        message: verify(padded, "pt").message,
      });
    }
  });
});

describe("the portable CRC-32 a browser's head check uses for a .pt", () => {
  it("equals zlib's, whole and continued", () => {
    const data = fillerBytes(100_000, 7);
    expect(portableCrc32(data)).toBe(crc32(data));
    expect(portableCrc32(data.subarray(5000), portableCrc32(data.subarray(0, 5000)))).toBe(crc32(data));
    expect(portableCrc32(new Uint8Array(0))).toBe(0);
  });
});

describe("checkHead's arguments", () => {
  it("takes at most the first MiB, never more than the file", () => {
    expect(headLength(10)).toBe(10);
    expect(headLength(5 * HEAD_MAX_BYTES)).toBe(HEAD_MAX_BYTES);
    expect(() => checkHead(new Uint8Array(HEAD_MAX_BYTES + 1), { extension: "pt", sizeBytes: 1 << 30 })).toThrow(
      RangeError,
    );
    expect(() => checkHead(new Uint8Array(10), { extension: "pt", sizeBytes: 9 })).toThrow(RangeError);
  });
});
