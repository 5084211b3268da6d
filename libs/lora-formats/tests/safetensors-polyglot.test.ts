import { LoraVerifier, SAFETENSORS_MAX_METADATA_ENTRIES, SAFETENSORS_MAX_TENSORS } from "../src/index.js";
import {
  assembleSafetensors,
  callPickle,
  chunked,
  fillerBytes,
  safetensorsReferenceAccepts as referenceAccepts,
  torchZip,
} from "@emprops/testkit";
import { headAgrees } from "./head-agreement.js";

// Valid safetensors files (the reference accepts each) that another loader would open as something else.

/** The verifier's verdict; the head check of the first MiB must agree with it (see head-agreement.ts). */
function verify(bytes: Uint8Array, chunkSize = 1 << 20) {
  const verifier = new LoraVerifier({ expectedExtension: "safetensors", maxSizeBytes: 1 << 30 });
  for (const chunk of chunked(bytes, chunkSize)) verifier.update(chunk);
  const result = verifier.finish();
  headAgrees(bytes, "safetensors", result);
  return result;
}

/** A header of exactly `length` bytes: `prefix`, then a metadata string of padding, then `suffix`. */
function headerOfLength(length: number, prefix: string, suffix: string, pad = " "): Buffer {
  const fixed = `${prefix}"__metadata__":{"k":"`.length + `"}${suffix}`.length;
  const text = `${prefix}"__metadata__":{"k":"${pad.repeat(length - fixed)}"}${suffix}`;
  const bytes = Buffer.from(text, "utf8");
  if (bytes.length !== length) throw new Error(`header is ${bytes.length} bytes, not ${length}`);
  return bytes;
}

const exploit = torchZip(callPickle("os", "system", "echo pwned"));

function tensorHeader(dataBytes: number): string {
  return `{"t":{"dtype":"U8","shape":[${dataBytes}],"data_offsets":[0,${dataBytes}]},`;
}

describe("safetensors polyglots", () => {
  it("refuses a file whose header length makes it start with a ZIP local header (torch.load opens it as a zip)", () => {
    const length = 0x04034b50; // "PK\x03\x04" little-endian: 67,324,752
    const header = headerOfLength(length, tensorHeader(exploit.length), "}");
    const file = assembleSafetensors(header, exploit);
    expect(file.subarray(0, 4)).toEqual(Buffer.from("PK\x03\x04", "latin1"));
    expect(referenceAccepts(file)).toBe(true);
    expect(verify(file)).toMatchObject({
      ok: false,
      reason: "INVALID_FILE_FORMAT",
      message: expect.stringMatching(/first bytes are a ZIP local file header, so torch\.load would open it/),
    });
  });

  it("refuses a file whose tensor bytes end in a ZIP archive that ZIP readers find from the end", () => {
    const header = `{"t":{"dtype":"U8","shape":[${exploit.length}],"data_offsets":[0,${exploit.length}]}}`;
    const file = assembleSafetensors(header, exploit);
    expect(referenceAccepts(file)).toBe(true);
    for (const size of [1 << 20, 7]) {
      expect(verify(file, size).message).toMatch(/hold a ZIP end record pointing at a central directory/);
    }
  });

  it("refuses a file whose first 512 bytes are a valid tar header (torch.load tries tar first)", () => {
    const data = fillerBytes(16);
    const prefix = `{"t":{"dtype":"U8","shape":[16],"data_offsets":[0,16]},`;
    const header = Buffer.from(headerOfLength(1024, prefix, "}", "0"));
    const file = assembleSafetensors(header, data);
    // Write the checksum tarfile expects into bytes 148..155 (inside the metadata string): octal digits and a space.
    file.fill(0x20, 148, 156);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += file[i] as number;
    file.write(`${sum.toString(8).padStart(7, "0")} `, 148, "latin1");
    expect(referenceAccepts(file)).toBe(true);
    expect(verify(file).message).toMatch(/first 512 bytes are a valid tar header/);
  });

  it("refuses a file whose bytes from the start run as a pickle (torch.load's legacy path)", () => {
    // Header length 0x2253 = 'S' '"' 0 0 …: byte 0 is STRING, whose quoted argument runs to the first newline,
    // placed right after a closing quote; two "}" are EMPTY_DICTs, and the tensor bytes carry on the pickle.
    const pickleTail = Buffer.from("000cos\nsystem\n(S'echo pwned'\ntR.", "latin1");
    const data = Buffer.concat([pickleTail, fillerBytes(16)]);
    const length = 0x2253;
    const head = `{"t":{"dtype":"U8","shape":[${data.length}],"data_offsets":[0,${data.length}]},"__metadata__":{"k":"`;
    const tail = '"\n}}';
    // A Buffer, so the builder does not pad the header to a multiple of 8.
    const file = assembleSafetensors(
      Buffer.from(`${head}${"x".repeat(length - head.length - tail.length)}${tail}`),
      data,
    );
    expect(file.subarray(0, 2).toString("latin1")).toBe('S"');
    expect(referenceAccepts(file)).toBe(true);
    expect(verify(file, 3).message).toMatch(/bytes from the start read as a pickle/);
  });

  it("accepts ordinary files whose bytes happen to hold ZIP signatures", () => {
    // "PK\x05\x06" with no central directory behind it, and "PK\x01\x02" alone, as random tensor data may hold.
    const data = Buffer.concat([
      Buffer.from("PK\x01\x02", "latin1"),
      fillerBytes(100),
      Buffer.from("PK\x05\x06", "latin1"),
      Buffer.alloc(18, 1),
    ]);
    const file = assembleSafetensors(
      `{"t":{"dtype":"U8","shape":[${data.length}],"data_offsets":[0,${data.length}]}}`,
      data,
    );
    expect(verify(file)).toMatchObject({ ok: true });
  });
});

describe("header caps", () => {
  it(`refuses more than ${SAFETENSORS_MAX_TENSORS} tensors, which the reference would accept`, () => {
    const entries = Array.from(
      { length: SAFETENSORS_MAX_TENSORS + 1 },
      (_, i) => `"t${i}":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}`,
    );
    const file = assembleSafetensors(`{${entries.join(",")}}`, new Uint8Array(0));
    expect(verify(file).message).toMatch(/more than 100,000 tensors/);
    expect(verify(assembleSafetensors(`{${entries.slice(1).join(",")}}`, new Uint8Array(0)))).toMatchObject({
      ok: true,
      tensorCount: 100_000,
    });
  });

  it(`refuses more than ${SAFETENSORS_MAX_METADATA_ENTRIES} metadata entries`, () => {
    const entries = Array.from({ length: SAFETENSORS_MAX_METADATA_ENTRIES + 1 }, (_, i) => `"k${i}":""`);
    const file = assembleSafetensors(`{"__metadata__":{${entries.join(",")}}}`, new Uint8Array(0));
    expect(verify(file).message).toMatch(/more than 100,000 entries/);
  });
});
